"""Referral rules: which referral qualifies, which is refused and why, which waits for a person's review, and what
each side is paid. Pure: no I/O, no clock (time is passed in).

A referral's verdict is a function of the facts known about it, each judged by its own event time: the two
members' fingerprints, the referee's purchases and refunds, the referee's other referrals, the referrer's other
referrals, referees seen on the same device, and a reviewer's decision. Facts are a set, so the verdict does not
depend on the order they arrived in; the service re-judges every referral a new fact can touch (all of the
referrer's, for the cap and the bonus) and moves points by the difference between the verdict and what it paid
before (`plan`).

The checks, in order (the first that fails decides):
1. `self_referral`: one member on both sides, or the two share a fingerprint (device, payment, email, phone,
   address).
2. `already_referred`: the referee accepted an earlier referral (by time, then id); the earliest one is the referral.
3. `existing_customer`: the referee bought something before accepting.
4. qualifying purchase: the referee's first purchase (or, with `purchase: any`, any purchase) of at least
   `min_total`, at or after accepting and within `within_days`; none yet is `pending`, none in time is `expired`.
Referrals that qualify take places, in the order of their qualifying purchases:
5. `velocity` rejected by a reviewer: no place.
6. `referrer_cap`: the referrer's places in the cap's period (in the programme's time zone) are taken.
7. the qualifying order refunded below `min_total` within the return window: `revoked` (it keeps its place).
8. too many referrals by the referrer, or referees on one device, within `velocity.days`: `review` until approved
   (it keeps its place, so an approval displaces no one).
9. otherwise `rewarded`: both sides' points, and the referrer's bonus on every `bonus.every`-th place.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Literal
from zoneinfo import ZoneInfo

from services.referral.programme import ReferralProgramme, ReferralRules

Status = Literal["pending", "review", "rewarded", "rejected", "revoked"]
Role = Literal["referrer", "referee", "bonus"]
ROLES: tuple[Role, ...] = ("referrer", "referee", "bonus")
STATUSES: tuple[Status, ...] = ("pending", "review", "rewarded", "rejected", "revoked")
REASONS = ("self_referral", "already_referred", "existing_customer", "referrer_cap", "velocity", "expired")
FINGERPRINTS = ("device", "payment", "email", "phone", "address")
Decision = Literal["approved", "rejected"]


def referral_id(program_id: str, referrer: str, referee: str) -> str:
    """One referral per programme, referrer and referee, however often it is announced (an accepted event, an
    enrolment with the referrer's code, a resend): the id is derived from the three, so a replay finds it again."""
    digest = hashlib.sha256("\x1f".join((program_id, referrer, referee)).encode()).hexdigest()
    return f"ref-{digest[:20]}"


# --- facts --------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Refund:
    refund_id: str
    event_id: str
    occurred_at: datetime
    total: Decimal


@dataclass(frozen=True, slots=True)
class Purchase:
    order_id: str
    event_id: str
    occurred_at: datetime
    currency: str
    total: Decimal
    refunds: tuple[Refund, ...] = ()  # in time order


@dataclass(frozen=True, slots=True)
class Member:
    fingerprints: frozenset[tuple[str, str]] = frozenset()  # (kind, opaque hash)
    first_purchase_at: datetime | None = None  # of every purchase ever seen, whatever its currency or size
    purchases: tuple[Purchase, ...] = ()  # those that may qualify a referral, in (time, order id) order


NOBODY = Member()


@dataclass(frozen=True, slots=True)
class Referral:
    referral_id: str
    referrer: str
    referee: str
    accepted_at: datetime
    programme: ReferralProgramme  # the version in effect when the referee accepted: its terms judge the referral
    decision: Decision | None = None  # a reviewer's, on a referral held for velocity
    decided_at: datetime | None = None
    # The referrer's arms then (experiment id -> arm): `programme` is already that arm's terms, so these only record it.
    arms: Mapping[str, str] = field(default_factory=dict)

    @property
    def rules(self) -> ReferralRules:
        assert self.programme.referral is not None
        return self.programme.referral

    @property
    def order_key(self) -> tuple[datetime, str]:
        return self.accepted_at, self.referral_id

    @property
    def deadline(self) -> datetime:
        return self.accepted_at + timedelta(days=self.rules.qualifying.within_days)


@dataclass(frozen=True, slots=True)
class Peer:
    """A referral whose referee uses a given device."""

    accepted_at: datetime
    referral_id: str
    referee: str


@dataclass(frozen=True)
class Group:
    """Everything that judges one referrer's referrals."""

    referrals: Sequence[Referral]
    members: Mapping[str, Member]  # the referrer and the referees
    first_referral: Mapping[str, tuple[datetime, str]]  # each referee's earliest referral, by anyone
    device_peers: Mapping[str, Sequence[Peer]] = field(default_factory=dict)  # by device hash


@dataclass(frozen=True, slots=True)
class Verdict:
    status: Status
    at: datetime  # when the verdict took effect, by event time
    reason: str | None = None  # the refusal of a rejection; `refund` for a revocation
    detail: str = ""
    order: Purchase | None = None  # the qualifying purchase
    position: int | None = None  # the referral's place among the referrer's qualified referrals
    bonus: int = 0
    refund: Refund | None = None  # the refund that revoked it

    def awards(self, rules: ReferralRules) -> dict[Role, int]:
        """The points each side is paid while this verdict stands (none unless rewarded)."""
        if self.status != "rewarded":
            return {}
        paid: dict[Role, int] = {"referrer": rules.referrer_points, "referee": rules.referee_points,
                                 "bonus": self.bonus}
        return {role: points for role, points in paid.items() if points > 0}


# --- judging ------------------------------------------------------------------------------------------------

def judge(group: Group, now: datetime) -> dict[str, Verdict]:
    """Every referral of the group, judged by the facts' own times (and `now` for expiry only)."""
    verdicts: dict[str, Verdict] = {}
    qualified: list[tuple[Referral, Purchase]] = []
    for referral in group.referrals:
        found = _checked(referral, group, now)
        if isinstance(found, Verdict):
            verdicts[referral.referral_id] = found
        else:
            qualified.append((referral, found))
    taken: Counter[tuple[str, str]] = Counter()
    position = 0
    for referral, order in sorted(qualified, key=lambda q: (q[1].occurred_at, q[0].referral_id)):
        rules, zone = referral.rules, referral.programme.zone
        if referral.decision == "rejected":
            verdicts[referral.referral_id] = Verdict(
                "rejected", referral.decided_at or order.occurred_at, "velocity", "refused on review", order)
            continue
        period = (rules.cap.per, period_of(rules.cap.per, order.occurred_at, zone)) if rules.cap else None
        if rules.cap is not None and period is not None and taken[period] >= rules.cap.count:
            verdicts[referral.referral_id] = Verdict(
                "rejected", order.occurred_at, "referrer_cap",
                f"the referrer's {rules.cap.count} rewarded referrals per {rules.cap.per} are taken", order)
            continue
        if period is not None:
            taken[period] += 1
        position += 1
        refund = revoking_refund(order, rules)
        held = velocity(referral, group)
        if refund is not None:
            verdicts[referral.referral_id] = Verdict(
                "revoked", refund.occurred_at, "refund", f"order {order.order_id} refunded within the return "
                f"window", order, position, refund=refund)
        elif held is not None and referral.decision != "approved":
            verdicts[referral.referral_id] = Verdict("review", order.occurred_at, "velocity", held, order, position)
        else:
            bonus = rules.bonus.points if rules.bonus is not None and position % rules.bonus.every == 0 else 0
            verdicts[referral.referral_id] = Verdict("rewarded", order.occurred_at, None, "", order, position, bonus)
    return verdicts


def _checked(referral: Referral, group: Group, now: datetime) -> Verdict | Purchase:
    """The checks of the referral alone: a refusal, `pending`, or the qualifying purchase."""
    referee = group.members.get(referral.referee, NOBODY)
    referrer = group.members.get(referral.referrer, NOBODY)
    at = referral.accepted_at
    if referral.referrer == referral.referee:
        return Verdict("rejected", at, "self_referral", "a member cannot refer themselves")
    shared = sorted({kind for kind, _ in referee.fingerprints & referrer.fingerprints})
    if shared:
        return Verdict("rejected", at, "self_referral", f"the referee shares the referrer's {', '.join(shared)}")
    first = group.first_referral.get(referral.referee, referral.order_key)
    if first < referral.order_key:
        return Verdict("rejected", at, "already_referred",
                       f"the referee accepted referral {first[1]} earlier, at {first[0].isoformat()}")
    if referee.first_purchase_at is not None and referee.first_purchase_at < at:
        return Verdict("rejected", at, "existing_customer",
                       f"the referee bought before accepting, first at {referee.first_purchase_at.isoformat()}")
    order = qualifying_purchase(referral, referee.purchases)
    if order is not None:
        return order
    if now > referral.deadline:
        return Verdict("rejected", referral.deadline, "expired",
                       f"no qualifying purchase within {referral.rules.qualifying.within_days} days of accepting")
    return Verdict("pending", at)


def qualifying_purchase(referral: Referral, purchases: Sequence[Purchase]) -> Purchase | None:
    """The referee's purchase that qualifies the referral, if any: the first one after accepting (`first`) or the
    first of those that meet the terms (`any`)."""
    terms = referral.rules.qualifying
    currency = referral.programme.currency
    for purchase in purchases:
        if purchase.occurred_at < referral.accepted_at:
            continue
        meets = (purchase.occurred_at <= referral.deadline and purchase.total >= terms.min_total
                 and (currency is None or purchase.currency == currency))
        if meets:
            return purchase
        if terms.purchase == "first":
            return None
    return None


def revoking_refund(order: Purchase, rules: ReferralRules) -> Refund | None:
    """The refund, within the return window, that took the order below the minimum (or refunded it all)."""
    refunded = Decimal(0)
    ends = order.occurred_at + rules.return_window
    for refund in order.refunds:
        if refund.occurred_at > ends:
            break
        refunded += refund.total
        kept = order.total - refunded
        if kept <= 0 or kept < rules.qualifying.min_total:
            return refund
    return None


def velocity(referral: Referral, group: Group) -> str | None:
    """Why the referral is held for review (too many referrals by the referrer, or referees on one device, within
    the window up to and including this one), or None."""
    limits = referral.rules.velocity
    if limits is None:
        return None
    since = referral.accepted_at - timedelta(days=limits.days)
    if limits.per_referrer is not None:
        count = sum(1 for other in group.referrals if since < other.accepted_at
                    and other.order_key <= referral.order_key)
        if count > limits.per_referrer:
            return f"{count} referrals by the referrer within {limits.days} days (limit {limits.per_referrer})"
    if limits.per_device is not None:
        referee = group.members.get(referral.referee, NOBODY)
        for device in sorted(h for kind, h in referee.fingerprints if kind == "device"):
            referees = {peer.referee for peer in group.device_peers.get(device, ())
                        if since < peer.accepted_at and (peer.accepted_at, peer.referral_id) <= referral.order_key}
            referees.add(referral.referee)
            if len(referees) > limits.per_device:
                return (f"{len(referees)} referees on one device within {limits.days} days "
                        f"(limit {limits.per_device})")
    return None


def period_of(per: str, at: datetime, zone: ZoneInfo) -> str:
    """The cap's calendar period holding `at`, in the programme's time zone."""
    local = at.astimezone(zone)
    if per == "year":
        return f"{local.year:04d}"
    if per == "month":
        return f"{local.year:04d}-{local.month:02d}"
    return "ever"


# --- moving points ------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Held:
    """What the service last decided of a referral: its status and the points credited and not taken back."""

    status: Status | None  # None: never judged
    reason: str | None = None
    live: Mapping[Role, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Step:
    """What a new verdict changes: the sides whose points in force are reversed, the sides credited anew (a new
    grant), and the outcome to announce."""

    reverse: frozenset[Role] = frozenset()
    credit: Mapping[Role, int] = field(default_factory=dict)
    announce: Literal["rewarded", "rejected", "revoked"] | None = None


def plan(held: Held, verdict: Verdict, rules: ReferralRules) -> Step:
    """The difference, side by side, between what was paid and what the verdict pays: a side whose points in force
    the verdict does not pay as they are is reversed, and the verdict's points for it credited as a new grant (a
    bonus that moved to or from the referral touches the bonus alone). An outcome is announced when the status or
    the reason changes, or a rewarded referral's points do."""
    want = verdict.awards(rules)
    changed = {role for role in ROLES if held.live.get(role) != want.get(role)}
    same = (held.status, held.reason) == (verdict.status, verdict.reason)
    announce: Literal["rewarded", "rejected", "revoked"] | None = None
    if verdict.status == "rewarded" and (changed or not same):
        announce = "rewarded"
    elif verdict.status == "rejected" and not same:
        announce = "rejected"
    elif verdict.status == "revoked" and not same:
        announce = "revoked"
    return Step(reverse=frozenset(role for role in changed if role in held.live),
                credit={role: want[role] for role in ROLES if role in changed and role in want}, announce=announce)
