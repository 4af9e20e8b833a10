"""The `tiers` section of a programme file, as the tiers service reads it: the metric, its window, the levels, how a
review lowers a tier and who may set one by hand."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.programmes import Catalogue, ProgrammeVersion
from shared.refusal import Refusal

Metric = Literal["points_earned", "spend", "purchases"]


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Level(Rule):
    tier: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    threshold: Decimal = Field(ge=0)
    earn_multiplier: Decimal = Field(default=Decimal(1), ge=1, le=100)
    benefits: list[str] = Field(default_factory=list)
    grace_days: int = Field(default=0, ge=0, le=365)  # after a failed review, before the drop


class Window(Rule):
    kind: Literal["rolling", "calendar_year", "anniversary"]
    months: int = Field(default=12, ge=1, le=60)  # rolling only


class Manual(Rule):
    """Who may set a tier by hand (`jifen.tier.assigned.v1`): exact CloudEvents sources."""

    sources: frozenset[str] = Field(min_length=1)


class TierRules(Rule):
    metric: Metric
    window: Window
    downgrade: Literal["to_qualifying", "one_step"] = "to_qualifying"
    warn_days: int = Field(default=30, ge=0, le=365)
    levels: list[Level] = Field(min_length=1)
    manual: Manual | None = None

    @model_validator(mode="after")
    def _ordered(self) -> TierRules:
        if self.levels[0].threshold != 0:
            raise ValueError("the first level is where every member starts: its threshold must be 0")
        names = [level.tier for level in self.levels]
        if len(set(names)) != len(names):
            raise ValueError("tier names must be unique")
        for lower, higher in zip(self.levels, self.levels[1:], strict=False):
            if higher.threshold <= lower.threshold:
                raise ValueError(f"thresholds must rise: {higher.tier} ({higher.threshold}) is not above "
                                 f"{lower.tier} ({lower.threshold})")
        return self

    @property
    def base(self) -> Level:
        return self.levels[0]

    def index(self, tier: str) -> int:
        """A level's rank; a tier the version in force no longer has ranks as the lowest."""
        return next((i for i, level in enumerate(self.levels) if level.tier == tier), 0)

    def level(self, tier: str) -> Level:
        return self.levels[self.index(tier)]

    def supported(self, value: Decimal) -> Level:
        """The highest level whose threshold the metric reaches."""
        return [level for level in self.levels if level.threshold <= value][-1]


class TiersProgramme(ProgrammeVersion):
    """One version of a programme as the tiers service reads it: the header and the `tiers` section."""

    tiers: TierRules | None = None


class NoTiers(Refusal):
    """The programme in force has no `tiers` section: nothing of the service applies to it (404 at the HTTP edge)."""

    def __init__(self, program_id: str) -> None:
        super().__init__("no_tiers", f"programme {program_id!r} has no tiers")


def in_force(catalogue: Catalogue[TiersProgramme], program_id: str, at: datetime) -> tuple[TiersProgramme, TierRules]:
    """The version in effect at `at` and its tier rules; `UnknownProgram` without one, `NoTiers` without tiers."""
    programme = catalogue.in_force(program_id, at)
    if programme.tiers is None:
        raise NoTiers(program_id)
    return programme, programme.tiers
