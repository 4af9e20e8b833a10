"""The programme sections the redemption service owns: `rewards` (the catalogue) and `redemption` (hold times, risk
limits, who may block members, points as payment). Validated when loaded, with errors naming file, line and field."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from shared.contracts.base import Currency, Money
from shared.contracts.redemptions import RewardKind
from shared.programmes import ProgrammeVersion

Period = Literal["day", "week", "month", "year", "ever"]
RewardId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
TierName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Limit(Rule):
    """At most `count` units of a reward per member per period (a calendar period of the programme's time zone)."""

    count: int = Field(ge=1)
    per: Period


class Window(Rule):
    """When a reward can be redeemed: from `starts` (included) to `ends` (excluded); either may be left open."""

    starts: datetime | None = None
    ends: datetime | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Window:
        if self.starts is not None and self.ends is not None and self.ends <= self.starts:
            raise ValueError("a window must end after it starts")
        return self

    def holds(self, at: datetime) -> bool:
        return (self.starts is None or self.starts <= at) and (self.ends is None or at < self.ends)


class CouponTerms(Rule):
    value: Money
    currency: Currency
    valid_days: int = Field(ge=1, le=3650)  # to the end of the Nth day after issue, in the programme's time zone


class CashbackTerms(Rule):
    value: Money
    currency: Currency


class Reward(Rule):
    reward_id: RewardId
    name: str = Field(min_length=1, max_length=200)
    kind: RewardKind
    points: int = Field(ge=1, le=10**9)  # the price of one unit
    points_by_tier: dict[TierName, Annotated[int, Field(ge=1, le=10**9)]] = Field(default_factory=dict)
    tiers: list[TierName] | None = None  # only members at these tiers may redeem it
    available: Window | None = None
    stock: int | None = Field(default=None, ge=0)  # the initial stock; the running count is the database's
    limit: Limit | None = None
    coupon: CouponTerms | None = None
    cashback: CashbackTerms | None = None
    cancel_hours: int | None = Field(default=None, ge=0, le=24 * 366)  # None: a redemption cannot be cancelled

    @model_validator(mode="after")
    def _terms_of_its_kind(self) -> Reward:
        if (self.kind == "coupon") != (self.coupon is not None):
            raise ValueError("a coupon reward needs `coupon` terms (value, currency, valid_days), and only it")
        if (self.kind == "cashback") != (self.cashback is not None):
            raise ValueError("a cashback reward needs `cashback` terms (value, currency), and only it")
        if self.coupon is not None and self.coupon.value <= 0:
            raise ValueError("a coupon must be worth something")
        return self

    def price(self, tier: str | None) -> int:
        """Points for one unit for a member at `tier` (None: no tier announced yet)."""
        return self.points_by_tier.get(tier, self.points) if tier is not None else self.points


class DailyLimit(Rule):
    redemptions: int | None = Field(default=None, ge=1)
    points: int | None = Field(default=None, ge=1)


class Velocity(Rule):
    """At most `count` redemptions in any `minutes` minutes."""

    count: int = Field(ge=1)
    minutes: int = Field(ge=1, le=24 * 60)


class Limits(Rule):
    per_day: DailyLimit | None = None
    velocity: Velocity | None = None


class PointsPayment(Rule):
    """Points as payment (抵扣): `points_per_unit` points pay one unit of `currency`; an authorisation needs at least
    `min_points` and may pay at most `max_share` of the basket."""

    points_per_unit: Decimal = Field(gt=0)
    currency: Currency
    min_points: int = Field(default=1, ge=1)
    max_share: Decimal = Field(default=Decimal(1), gt=0, le=1)
    decimals: int = Field(default=2, ge=0, le=4)  # the currency's minor unit: what points pay is rounded down to it
    authorisation_ttl_seconds: int = Field(default=900, ge=1, le=30 * 86400)


class RedemptionRules(Rule):
    hold_ttl_seconds: int = Field(default=300, ge=1, le=86400)  # a redemption's hold, placed then captured at once
    limits: Limits = Field(default_factory=Limits)
    # Exact CloudEvents sources whose jifen.member.blocked.v1 / unblocked.v1 are honoured (a risk desk, a CRM).
    block_sources: frozenset[str] = frozenset()
    points_payment: PointsPayment | None = None


class RedemptionProgramme(ProgrammeVersion):
    """One version of a programme as the redemption service reads it: the header, `rewards` and `redemption`."""

    rewards: list[Reward] | None = None
    redemption: RedemptionRules | None = None

    @model_validator(mode="after")
    def _unique_rewards(self) -> RedemptionProgramme:
        ids = [r.reward_id for r in self.rewards or ()]
        doubled = sorted({i for i in ids if ids.count(i) > 1})
        if doubled:
            raise ValueError(f"reward ids must be unique: {', '.join(doubled)}")
        return self

    @property
    def rules(self) -> RedemptionRules:
        return self.redemption or RedemptionRules()

    def reward(self, reward_id: str) -> Reward | None:
        return next((r for r in self.rewards or () if r.reward_id == reward_id), None)
