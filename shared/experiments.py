"""Experiments (A/B arms) a programme version declares: which arm a member is in, and what that arm changes.

A member's arm is a stable hash of (programme, experiment, member): the same member is always in the same arm, on
every service and every replay, with no table to look up. Each arm's `overrides` is a delta of the version's sections
(shared/deltas.py: `{referral: {referrer_points: 50}}`, `{purchase: {base: {points_per_unit: "2"}}}`,
`{rewards: [{reward_id: tote-bag, points: 600}]}`), applied only to events of the arm's members that happen while
the experiment runs. Pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

# What an arm may change: the sections whose rules earn, referral and redemption apply per member.
OVERRIDABLE = frozenset({"purchase", "activity", "referral", "rewards"})
_SCALE = 2 ** 64


class Arm(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=32)
    share: Decimal = Field(gt=0, le=1)
    overrides: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _sections(self) -> Arm:
        other = sorted(set(self.overrides) - OVERRIDABLE)
        if other:
            raise ValueError(f"arm {self.name!r} overrides {', '.join(other)}: an arm may change only "
                             f"{', '.join(sorted(OVERRIDABLE))}")
        return self


class Experiment(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    experiment_id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=64)
    name: str | None = None
    starts: datetime
    ends: datetime
    arms: list[Arm] = Field(min_length=2)

    @model_validator(mode="after")
    def _consistent(self) -> Experiment:
        if self.ends <= self.starts:
            raise ValueError(f"experiment {self.experiment_id!r} ends no later than it starts")
        names = [arm.name for arm in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"experiment {self.experiment_id!r} names an arm twice")
        total = sum((arm.share for arm in self.arms), Decimal(0))
        if total != 1:
            raise ValueError(f"experiment {self.experiment_id!r}: the arms' shares add up to {total}, not 1")
        return self

    def running(self, at: datetime) -> bool:
        return self.starts <= at < self.ends

    def arm(self, name: str) -> Arm:
        return next(arm for arm in self.arms if arm.name == name)


def bucket(program_id: str, experiment_id: str, member_id: str) -> Decimal:
    """Where a member falls in [0, 1) for one experiment: the first 8 bytes of a SHA-256, so arms are independent
    across experiments and programmes."""
    digest = hashlib.sha256(f"{program_id}\x1f{experiment_id}\x1f{member_id}".encode()).digest()
    return Decimal(int.from_bytes(digest[:8], "big")) / _SCALE


def arm_of(program_id: str, experiment: Experiment, member_id: str) -> Arm:
    """The member's arm: the arms take consecutive slices of [0, 1) in the order the file lists them."""
    point = bucket(program_id, experiment.experiment_id, member_id)
    edge = Decimal(0)
    for arm in experiment.arms:
        edge += arm.share
        if point < edge:
            return arm
    return experiment.arms[-1]


def arms_at(program_id: str, experiments: Iterable[Experiment], member_id: str, at: datetime) -> dict[str, str]:
    """The member's arm in every experiment running at `at`, by experiment id (empty: none is running)."""
    return {e.experiment_id: arm_of(program_id, e, member_id).name for e in experiments if e.running(at)}
