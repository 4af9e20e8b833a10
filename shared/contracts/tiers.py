"""jifen.tiers: tier changes and warnings, announced by the tiers service."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import ClassVar, Literal

from pydantic import Field

from shared.contracts.base import Channel, Contract, Id, ProgramId, Text


class TierChanged(Contract):
    """A member's tier changed, as of the event's `time`. `earn_multiplier` multiplies the base points of the
    member's purchases from then on (1: the tier earns nothing extra); earn keeps the history, so a purchase is
    judged by the tier the member held when it happened."""

    TYPE: ClassVar[str] = "jifen.tier.changed.v1"

    program_id: ProgramId = "default"
    member_id: Id
    tier: Id
    previous_tier: Id | None = None
    earn_multiplier: Decimal = Field(default=Decimal(1), ge=1, le=100)
    reason: Literal["upgrade", "downgrade", "manual", "expired_manual"] | None = None
    detail: Text | None = None  # e.g. `reversed`: a refund or reversal undid the upgrade
    valid_until: datetime | None = None  # when the tier is next reviewed (None: never)
    qualifying_value: Decimal | None = None  # the member's metric when the change was made


class TierExpiring(Contract):
    """A warning, `warn_days` before a review that will lower the member's tier unless `needed` more is reached."""

    TYPE: ClassVar[str] = "jifen.tier.expiring.v1"

    program_id: ProgramId = "default"
    member_id: Id
    tier: Id
    drops_to: Id
    on: datetime
    needed: Decimal = Field(ge=0)


CHANNEL = Channel("jifen.tiers", "out", "Tier changes, effective from the event's time (earn applies "
                  "`earn_multiplier`), and warnings before a downgrade.", (TierChanged, TierExpiring))
