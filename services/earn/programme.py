"""The programme file's earn sections as earn reads them: the purchase rules (base rate, tier, multipliers, bonuses,
campaigns, rebates, exclusions), pending periods, expiry, and `Programme`, one version with activity, caps and the
budget. Validated when loaded; what the rules give a purchase is in domain.py. Pure: no I/O, no clock.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.earn.activity import Activity, Budget, PointsCap
from shared.contracts.purchases import PurchaseCompleted, PurchaseLine
from shared.programmes import ProgrammeVersion

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Rate = Field(gt=0)


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Match(Rule):
    """Which lines a rule applies to: any of these SKUs or categories (both empty: every line)."""

    skus: frozenset[str] = frozenset()
    categories: frozenset[str] = frozenset()

    def matches(self, line: PurchaseLine) -> bool:
        if not self.skus and not self.categories:
            return True
        return line.sku in self.skus or (line.category is not None and line.category in self.categories)


class BaseRate(Rule):
    rule_id: str = "base"
    points_per_unit: Decimal = Rate  # points per unit of currency
    rounding: Literal["floor"] = "floor"


class Multiplier(Match):
    """Points × `multiplier` on matching lines (the base points count once; this rule adds the rest).
    Where several product or category multipliers match a line, the highest one applies."""

    rule_id: str
    multiplier: Decimal = Field(gt=1)


class Bonus(Match):
    """Fixed points for each matching line, or for each unit bought on it."""

    rule_id: str
    points: int = Field(gt=0)
    per: Literal["line", "unit"] = "unit"


class TierRate(Rule):
    """The member's tier multiplier (from the tiers stream) on the base points of every eligible line; like the
    other multipliers the base points count once and this rule adds the rest. No tier known: multiplier 1."""

    rule_id: str = "tier"


class Campaign(Match):
    """A multiplier for a while: within [starts, ends), on given weekdays, channels, stores and member tiers
    (empty: any; a campaign limited to tiers never runs for a member without one).
    A campaign with neither SKUs nor categories applies only to lines that have a category, so a plain purchase
    (no lines, no category) never gets it."""

    rule_id: str
    multiplier: Decimal = Field(gt=1)
    starts: datetime
    ends: datetime
    weekdays: frozenset[Weekday] = frozenset()
    channels: frozenset[Literal["pos", "online", "app"]] = frozenset()
    stores: frozenset[str] = frozenset()
    tiers: frozenset[str] = frozenset()

    @model_validator(mode="after")
    def _window(self) -> Campaign:
        if self.ends <= self.starts:
            raise ValueError("ends must be after starts")
        return self

    def runs(self, at: datetime, tz: ZoneInfo, purchase: PurchaseCompleted, tier: str | None) -> bool:
        """Whether the campaign runs for this purchase, at its time, for a member at `tier` (None: not known)."""
        local = at.astimezone(tz)
        return (self.starts <= at < self.ends
                and (not self.weekdays or WEEKDAYS[local.weekday()] in self.weekdays)
                and (not self.channels or purchase.channel in self.channels)
                and (not self.stores or purchase.store_id in self.stores)
                and (not self.tiers or (tier is not None and tier in self.tiers)))

    def applies_to(self, line: PurchaseLine) -> bool:
        if not self.skus and not self.categories:
            return line.category is not None
        return self.matches(line)


class Rebate(Rule):
    """Spend at least `min_total` (on eligible lines) and get `percent` of it back as points; chosen products
    or categories earn their own, higher percentage."""

    rule_id: str
    min_total: Decimal = Field(ge=0)
    percent: Decimal = Field(gt=0, le=100)
    higher: list[RebateRate] = Field(default_factory=list)


class RebateRate(Match):
    percent: Decimal = Field(gt=0, le=100)


class PurchaseRules(Rule):
    base: BaseRate
    exclude: Match | None = None  # lines that earn nothing at all (gift cards, tax, shipping)
    multipliers: list[Multiplier] = Field(default_factory=list)
    bonuses: list[Bonus] = Field(default_factory=list)
    campaigns: list[Campaign] = Field(default_factory=list)
    rebates: list[Rebate] = Field(default_factory=list)
    tier: TierRate | None = TierRate()  # None: this programme ignores tier multipliers

    @model_validator(mode="after")
    def _unique_rule_ids(self) -> PurchaseRules:
        groups = (self.multipliers, self.bonuses, self.campaigns, self.rebates)
        ids = [self.base.rule_id, *([self.tier.rule_id] if self.tier else []),
               *(r.rule_id for group in groups for r in group)]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"rule ids must be unique within a programme: {', '.join(repeated)}")
        return self


class Pending(Rule):
    """How long points stay pending (the return window), by channel."""

    days: int = Field(default=0, ge=0, le=365)
    by_channel: dict[Literal["pos", "online", "app"], int] = Field(default_factory=dict)


class Expiry(Rule):
    """`none`; `rolling` N months after the points were earned; or `fixed`: the end (local time) of a calendar
    day, `years_after` years after the year the points were earned (e.g. 31 December of the next year)."""

    policy: Literal["none", "rolling", "fixed"] = "none"
    months: int = Field(default=24, ge=1, le=240)
    month: int = Field(default=12, ge=1, le=12)
    day: int = Field(default=31, ge=1, le=31)
    years_after: int = Field(default=1, ge=0, le=10)


class Programme(ProgrammeVersion):
    """One version of a programme as earn reads it: the header and earn's sections (purchase rules, pending
    periods, expiry, activity, caps and the budget)."""

    purchase: PurchaseRules | None = None  # None: purchases earn nothing in this programme
    pending: Pending = Pending()
    expiry: Expiry = Expiry()
    activity: Activity = Activity()  # check-ins, tasks and behaviours
    caps: list[PointsCap] = Field(default_factory=list)  # points per member per rule per period
    budget: Budget | None = None  # points per period for the whole programme


Rebate.model_rebuild()
