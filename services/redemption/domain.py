"""Redemption rules: prices, eligibility and risk limits, cancellation windows, coupon states, and how redemptions
move on the ledger's outcomes. Pure: no I/O, no clock. Points as payment and what a refund gives back are in
paying.py.

Points leave a balance only through the ledger's holds. A redemption reserves its stock and asks for a hold in one
transaction; the hold placed, its coupon is issued and the hold captured; the capture makes it `completed`. A hold
the ledger refuses (or that times out) makes it `rejected` with the ledger's reason, and its stock comes back.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from decimal import Decimal
from typing import Literal
from zoneinfo import ZoneInfo

from services.redemption.programme import Period, RedemptionRules, Reward
from shared import keys
from shared.refusal import Refusal

Status = Literal["pending", "completed", "rejected", "cancelled"]
CouponState = Literal["active", "used", "void"]  # as stored; `expired` is derived from the time
Outcome = Literal["placed", "captured", "released", "expired", "refused"]  # what the ledger said about a hold
Command = keys.Command  # which of our commands an outcome answers


class Refused(Refusal):
    """A request refused by a rule; the reason is the same string in the HTTP answer, the outcome event and the
    refusals metric."""


# --- members, prices, limits --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class MemberView:
    """What redemption knows of a member, projected from jifen.tiers and jifen.members."""

    tier: str | None = None
    blocked: bool = False


@dataclass(frozen=True, slots=True)
class Past:
    """A redemption of the member that counts towards limits (pending or completed)."""

    reward_id: str
    quantity: int
    points: int
    at: datetime


@dataclass(frozen=True, slots=True)
class Usage:
    today: int = 0  # redemptions since the start of the local day
    today_points: int = 0
    recent: int = 0  # redemptions inside the velocity window
    of_reward: int = 0  # units of the reward inside its limit's period


def period_start(per: Period, now: datetime, zone: ZoneInfo) -> datetime | None:
    """The start of the calendar period holding `now`, in the programme's time zone (None: `ever`)."""
    local = now.astimezone(zone)
    day = local.date()
    match per:
        case "day":
            pass
        case "week":
            day -= timedelta(days=day.weekday())  # weeks start on Monday
        case "month":
            day = day.replace(day=1)
        case "year":
            day = day.replace(month=1, day=1)
        case "ever":
            return None
    return datetime.combine(day, time(0), tzinfo=zone)


def history_since(reward: Reward | None, rules: RedemptionRules, now: datetime, zone: ZoneInfo) -> datetime | None:
    """How far back the member's redemptions can matter to the limits (None: all of them)."""
    starts: list[datetime | None] = [period_start("day", now, zone)]
    if rules.limits.velocity is not None:
        starts.append(now - timedelta(minutes=rules.limits.velocity.minutes))
    if reward is not None and reward.limit is not None:
        starts.append(period_start(reward.limit.per, now, zone))
    return None if any(s is None for s in starts) else min(s for s in starts if s is not None)


def usage(history: Iterable[Past], reward: Reward | None, rules: RedemptionRules, now: datetime,
          zone: ZoneInfo) -> Usage:
    day = period_start("day", now, zone)
    assert day is not None
    velocity = rules.limits.velocity
    recent_since = now - timedelta(minutes=velocity.minutes) if velocity is not None else now
    limit_since = period_start(reward.limit.per, now, zone) if reward is not None and reward.limit else None
    today = today_points = recent = of_reward = 0
    for past in history:
        if past.at >= day:
            today += 1
            today_points += past.points
        if past.at > recent_since:
            recent += 1
        if reward is not None and past.reward_id == reward.reward_id and (limit_since is None
                                                                         or past.at >= limit_since):
            of_reward += past.quantity
    return Usage(today, today_points, recent, of_reward)


def refusal(reward: Reward | None, reward_id: str, quantity: int, member: MemberView, used: Usage,
            rules: RedemptionRules, now: datetime) -> Refused | None:
    """Why the member may not redeem `quantity` of the reward now (stock and points are checked after this: stock
    by the database, points by the ledger's hold); None when nothing here stands in the way."""
    if reward is None:
        return Refused("unknown_reward", f"the catalogue has no reward {reward_id!r}")
    if member.blocked:
        return Refused("blocked_member", "the member is blocked from redeeming")
    if reward.available is not None and not reward.available.holds(now):
        return Refused("reward_not_available", f"{reward.reward_id!r} cannot be redeemed at {now.isoformat()}")
    if reward.tiers is not None and member.tier not in reward.tiers:
        return Refused("not_eligible_tier", f"{reward.reward_id!r} is for tiers {', '.join(reward.tiers)}; the "
                                            f"member's tier is {member.tier or 'none yet'}")
    velocity, daily = rules.limits.velocity, rules.limits.per_day
    if velocity is not None and used.recent >= velocity.count:
        return Refused("too_fast", f"{used.recent} redemptions in the last {velocity.minutes} minutes; at most "
                                   f"{velocity.count}")
    points = reward.price(member.tier) * quantity
    if daily is not None and daily.redemptions is not None and used.today >= daily.redemptions:
        return Refused("daily_limit", f"{used.today} redemptions today; at most {daily.redemptions} a day")
    if daily is not None and daily.points is not None and used.today_points + points > daily.points:
        return Refused("daily_limit", f"{used.today_points} points redeemed today and {points} asked; at most "
                                      f"{daily.points} a day")
    if reward.limit is not None and used.of_reward + quantity > reward.limit.count:
        per = "in all" if reward.limit.per == "ever" else f"a {reward.limit.per}"
        return Refused("member_limit", f"{used.of_reward} of {reward.reward_id!r} redeemed already; at most "
                                       f"{reward.limit.count} {per}")
    return None


# --- redemptions ----------------------------------------------------------------------------------------

@dataclass
class Redemption:
    redemption_id: str
    program_id: str
    member_id: str
    reward_id: str
    kind: str
    quantity: int
    points: int
    status: Status
    reward: Reward | None  # the reward as it was redeemed (its terms), None for an unknown reward
    timezone: str
    created_at: datetime
    reason: str | None = None
    detail: str | None = None
    stock_taken: int = 0
    held_at: datetime | None = None
    hold_expires_at: datetime | None = None
    settled_at: datetime | None = None
    cancelled_at: datetime | None = None
    # The member's arm of every experiment running when it was asked for (experiment id -> arm): `reward` and
    # `points` are already that arm's; kept with the terms, so every command and event of the redemption names it.
    arms: dict[str, str] = field(default_factory=dict)

    @property
    def hold_id(self) -> str:
        return keys.hold_of("redeem", self.redemption_id)

    def key(self, command: Command) -> str:
        """The ledger command's idempotency key: derived from the redemption, so a replay is the same command."""
        return keys.redemption_command("redeem", self.redemption_id, command)

    @property
    def cancellable_until(self) -> datetime | None:
        if self.reward is None or self.reward.cancel_hours is None or self.settled_at is None:
            return None
        return self.settled_at + timedelta(hours=self.reward.cancel_hours)


Step = Literal["capture", "complete", "reject"]


def step_of(redemption: Redemption, outcome: Outcome, command: Command) -> Step | None:
    """What a ledger outcome does to a redemption; None: nothing (it is settled already, or a replay)."""
    if redemption.status != "pending":
        return None
    if outcome == "placed":
        return "capture" if redemption.held_at is None else None
    if outcome == "captured":
        return "complete"
    if outcome == "refused" and command not in ("hold", "capture"):
        return None
    return "reject"  # the hold refused, released or timed out, or its capture refused


def cancel_refusal(redemption: Redemption, coupon: Coupon | None, now: datetime) -> Refused | None:
    """Why a redemption cannot be cancelled now (a cancelled one is answered as it is, not refused)."""
    if redemption.status == "pending":
        return Refused("redemption_pending", "the redemption is not completed yet; try again in a moment")
    if redemption.status == "rejected":
        return Refused("redemption_rejected", "a rejected redemption took no points: there is nothing to cancel")
    until = redemption.cancellable_until
    if until is None:
        return Refused("not_cancellable", f"reward {redemption.reward_id!r} cannot be cancelled")
    if now > until:
        return Refused("cancel_window_closed", f"the redemption could be cancelled until {until.isoformat()}")
    if coupon is not None and coupon.state == "used":
        return Refused("coupon_used", f"its coupon was used on order {coupon.used_order_id!r}")
    return None


# --- coupons --------------------------------------------------------------------------------------------

@dataclass
class Coupon:
    coupon_id: str
    redemption_id: str
    program_id: str
    member_id: str
    value: Decimal
    currency: str
    issued_at: datetime
    expires_at: datetime
    state: CouponState = "active"
    used_order_id: str | None = None
    used_at: datetime | None = None

    def status(self, now: datetime) -> Literal["valid", "used", "void", "expired"]:
        if self.state != "active":
            return self.state
        return "expired" if now >= self.expires_at else "valid"


def coupon_expiry(issued_at: datetime, valid_days: int, zone: ZoneInfo) -> datetime:
    """The end of the `valid_days`th day after issue, local time: issued on the 3rd for 30 days, good all of the 3rd
    of next month."""
    last_day = issued_at.astimezone(zone).date() + timedelta(days=valid_days + 1)
    return datetime.combine(last_day, time(0), tzinfo=zone)


def use_refusal(coupon: Coupon, order_id: str, now: datetime) -> Refused | None:
    """Why the coupon cannot pay `order_id`; None also when it already paid that very order (a replay)."""
    status = coupon.status(now)
    if status == "void":
        return Refused("coupon_void", "the coupon was voided (its redemption was cancelled or rejected)")
    if status == "used":
        if coupon.used_order_id == order_id:
            return None
        return Refused("coupon_used", "the coupon was used on another order")
    if status == "expired":
        return Refused("coupon_expired", f"the coupon expired at {coupon.expires_at.isoformat()}")
    return None
