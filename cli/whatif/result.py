"""What a what-if answers: the same figures for the version in force and for the draft, side by side.

The engine (engine.py) fills one `Side` per programme it replays; the terminal table, the HTML page and the forecast
read only these. Points are integers; money is Decimal, rounded half up to the cent only when shown.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

# The seed's band for points cost: issued × redemption rate × point value, as a share of revenue.
COST_BAND = (Decimal("0.003"), Decimal("0.008"))
ASSUMPTION = ("members behave as they did: the same purchases, refunds, tasks, check-ins, referrals and "
              "redemptions, so this answers what these rules would have cost, not how people would have reacted")


@dataclass
class Side:
    """One programme's replay of the period: what its rules would have issued, and what that leaves."""

    label: str                                   # "in force" or "draft"
    version: int | None                          # the version (the draft's own number)
    point_value: Decimal | None                  # what a point is worth in `currency` (None: no money value)
    currency: str | None
    issued_by_rule: Counter[str] = field(default_factory=Counter)    # points credited in the period, by rule
    taken_back_by_rule: Counter[str] = field(default_factory=Counter)  # reversed by refunds and clawbacks
    by_member: Counter[str] = field(default_factory=Counter)         # net points credited in the period
    revenue: Decimal = Decimal(0)                # purchases less refunds in the period
    redeemed: int = 0                            # points spent in the period (as they were: the assumption)
    expired: int = 0                             # points that expired in the period
    liability: int = 0                           # points held at the period's end
    members_by_tier: Counter[str] = field(default_factory=Counter)  # at the period's end
    referrals_rewarded: int = 0
    referral_points: int = 0
    redemption_rate: Decimal | None = None       # observed (redeemed ÷ issued) or given

    @property
    def issued(self) -> int:
        return sum(self.issued_by_rule.values())

    @property
    def net_issued(self) -> int:
        return self.issued - sum(self.taken_back_by_rule.values())

    def cost(self) -> Decimal | None:
        """Expected money cost of the period's points: net issued × redemption rate × point value."""
        if self.point_value is None or self.redemption_rate is None:
            return None
        return Decimal(self.net_issued) * self.redemption_rate * self.point_value

    def cost_share(self) -> Decimal | None:
        """`cost()` as a share of revenue (None without revenue or a money value)."""
        cost = self.cost()
        if cost is None or self.revenue <= 0:
            return None
        return cost / self.revenue

    def gross_share(self) -> Decimal | None:
        """Every point issued valued at face, as a share of revenue: the cost if every point were redeemed."""
        if self.point_value is None or self.revenue <= 0:
            return None
        return Decimal(self.net_issued) * self.point_value / self.revenue

    def liability_value(self) -> Decimal | None:
        if self.point_value is None:
            return None
        return money(Decimal(self.liability) * self.point_value)


def verdict(share: Decimal | None) -> str | None:
    """Against the seed's 0.3%–0.8% of revenue: below, ok or above (None: nothing to judge)."""
    if share is None:
        return None
    low, high = COST_BAND
    return "below" if share < low else "above" if share > high else "ok"


def money(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


@dataclass
class Comparison:
    """A what-if's answer: the period, where its history came from, and the two sides."""

    program_id: str
    start: datetime
    end: datetime
    source: str                                  # "topics", "archive", "synthetic" or "history of OTHER"
    events: int                                  # inbound events replayed (the warm-up before `start` included)
    live: Side
    draft: Side
    assumption: str = ASSUMPTION
    notes: list[str] = field(default_factory=list)  # how the start state and tiers were taken, what was left out

    def rules_differing(self, limit: int = 10) -> list[tuple[str, int, int]]:
        """(rule, in force, draft) for the rules whose points differ most, largest difference first."""
        rules = set(self.live.issued_by_rule) | set(self.draft.issued_by_rule)
        rows = [(r, self.live.issued_by_rule[r], self.draft.issued_by_rule[r]) for r in rules]
        rows = [row for row in rows if row[1] != row[2]]
        return sorted(rows, key=lambda row: (-abs(row[2] - row[1]), row[0]))[:limit]

    def members_differing(self, limit: int = 10) -> list[tuple[str, int, int]]:
        """(member, in force, draft) for the members whose points differ most, largest difference first."""
        members = set(self.live.by_member) | set(self.draft.by_member)
        rows = [(m, self.live.by_member[m], self.draft.by_member[m]) for m in members]
        rows = [row for row in rows if row[1] != row[2]]
        return sorted(rows, key=lambda row: (-abs(row[2] - row[1]), row[0]))[:limit]
