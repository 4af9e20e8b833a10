"""A programme's `referral` section as the referral service reads it (validated when the files load): both sides'
points, the qualifying purchase, the referrer's bonus and cap, the pending and return windows, velocity limits and
the rewards' expiry."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.contracts.base import Money
from shared.programmes import ProgrammeVersion


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Qualifying(Rule):
    purchase: Literal["first", "any"] = "first"
    min_total: Money  # in the programme's currency (any currency counts 1:1 when the programme names none)
    within_days: int = Field(ge=1, le=3650)


class Bonus(Rule):
    every: int = Field(ge=1, le=100_000)  # the referrer's every Kth place earns the bonus
    points: int = Field(gt=0, le=1_000_000)


class Cap(Rule):
    count: int = Field(ge=1, le=1_000_000)  # rewarded referrals per referrer per period
    per: Literal["month", "year", "ever"]  # calendar periods in the programme's time zone


class Velocity(Rule):
    days: int = Field(default=7, ge=1, le=365)
    per_referrer: int | None = Field(default=None, ge=1)  # referrals by one referrer within `days`
    per_device: int | None = Field(default=None, ge=1)  # referees using one device within `days`

    @model_validator(mode="after")
    def _some_limit(self) -> Velocity:
        if self.per_referrer is None and self.per_device is None:
            raise ValueError("velocity needs per_referrer, per_device or both")
        return self


class ReferralRules(Rule):
    """A programme's `referral` section."""

    referrer_points: int = Field(ge=0, le=1_000_000)
    referee_points: int = Field(ge=0, le=1_000_000)
    qualifying: Qualifying
    bonus: Bonus | None = None
    cap: Cap | None = None
    pending_days: int = Field(default=0, ge=0, le=365)  # rewards wait this long before they can be spent
    return_window_days: int | None = Field(default=None, ge=0, le=365)  # refunds inside it revoke; default pending
    velocity: Velocity | None = None
    expires_after_days: int | None = Field(default=None, ge=1, le=36_500)  # of the rewards; none: never

    @model_validator(mode="after")
    def _spendable_before_expiry(self) -> ReferralRules:
        if self.expires_after_days is not None and self.expires_after_days <= self.pending_days:
            raise ValueError("expires_after_days must be longer than pending_days, or the rewards expire unspendable")
        return self

    @property
    def return_window(self) -> timedelta:
        return timedelta(days=self.pending_days if self.return_window_days is None else self.return_window_days)


class ReferralProgramme(ProgrammeVersion):
    """One version of a programme as the referral service reads it: the header and the `referral` section."""

    referral: ReferralRules | None = None
