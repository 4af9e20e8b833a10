"""The abuse watch (防羊毛), pure: who is far outside the programme's norm, and why. A finding is a reason to look,
never a verdict: blocking stays a person's decision."""

from __future__ import annotations

from dataclasses import dataclass
from statistics import median

# Far outside the norm: at least this many times the median member, and past an absolute floor, so a quiet
# programme's few members are not all "outliers".
TIMES_MEDIAN = 10
FLOOR_POINTS = 1000
MIN_MEMBERS = 20  # below this there is no norm to be outside of
SOON_REDEMPTIONS = 3  # redemptions within an hour of earning, in the window
SHARED_BY = 5  # members sharing one fingerprint


@dataclass(frozen=True)
class Activity:
    member_id: str
    earned: int
    redeemed: int
    received: int
    redeemed_soon: int


@dataclass(frozen=True)
class Finding:
    member_id: str
    reason: str
    detail: str


def _outliers(values: dict[str, int], what: str, reason: str) -> list[Finding]:
    positive = [v for v in values.values() if v > 0]
    if len(positive) < MIN_MEMBERS:
        return []
    typical = median(positive)
    limit = max(FLOOR_POINTS, TIMES_MEDIAN * typical)
    return [Finding(m, reason, f"{what} {v} points, {v / typical:.0f}× the median member's {typical:g}")
            for m, v in sorted(values.items()) if v > limit]


def findings(activity: list[Activity], shared: dict[tuple[str, str], list[str]]) -> list[Finding]:
    """`activity`: each member's sums over the window; `shared`: (fingerprint kind, hash) -> members sharing it."""
    found = _outliers({a.member_id: a.earned for a in activity}, "earned", "earning_outlier")
    found += _outliers({a.member_id: a.redeemed for a in activity}, "redeemed", "redemption_outlier")
    earned = [a.earned for a in activity if a.earned > 0]
    typical = median(earned) if earned else 0
    for a in activity:
        if a.redeemed_soon >= SOON_REDEMPTIONS:
            found.append(Finding(a.member_id, "redeemed_soon_after_earning",
                                 f"{a.redeemed_soon} redemptions within an hour of earning"))
        if a.received > max(FLOOR_POINTS, TIMES_MEDIAN * typical):
            found.append(Finding(a.member_id, "points_received",
                                 f"received {a.received} points by transfer (the median member earned {typical:g})"))
    seen: set[tuple[str, str]] = set()
    for (kind, _hash), members in sorted(shared.items()):
        if len(members) >= SHARED_BY:
            for m in sorted(members):
                if (m, kind) not in seen:
                    seen.add((m, kind))
                    found.append(Finding(m, "shared_fingerprint", f"{kind} fingerprint shared by {len(members)} "
                                                                  "members"))
    return found
