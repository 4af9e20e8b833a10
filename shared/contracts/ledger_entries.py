"""jifen.ledger.entries: every entry the ledger posted and every command it refused, with the reason. The outcomes
of a service's commands come back here; each reader handles the types it wants and skips the others."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field

from shared.contracts.base import Channel, Contract
from shared.contracts.ledger_commands import Cause


class LotView(Contract):
    lot_id: int | None = None
    amount: int | None = None
    available_at: datetime
    expires_at: datetime | None


class PointsEntryPosted(Contract):
    TYPE: ClassVar[str] = "jifen.ledger.entry.posted.v1"

    entry_id: int
    program_id: str
    member_id: str
    seq: int
    amount: int  # signed, as seen from the member: positive when points come in
    balance_after: int
    kind: str
    idempotency_key: str
    cause: Cause
    occurred_at: datetime
    posted_at: datetime
    lot: LotView | None = None  # the first lot this entry made (kept for earlier readers)
    lots: list[LotView] = Field(default_factory=list)
    corrects_entry_id: int | None = None
    hold_id: str | None = None
    hash: str


class HoldPlaced(Contract):
    TYPE: ClassVar[str] = "jifen.ledger.hold.placed.v1"

    hold_id: str
    program_id: str
    member_id: str
    amount: int
    expires_at: datetime
    idempotency_key: str


class HoldResolved(Contract):
    TYPE: ClassVar[str] = "jifen.ledger.hold.resolved.v1"

    hold_id: str
    program_id: str
    member_id: str
    outcome: Literal["captured", "released", "expired"]
    captured: int
    released: int
    idempotency_key: str


class CommandRejected(Contract):
    TYPE: ClassVar[str] = "jifen.ledger.command.rejected.v1"

    program_id: str
    member_id: str
    idempotency_key: str
    command_type: str
    reason: str
    detail: str


CHANNEL = Channel("jifen.ledger.entries", "out", "Every entry the ledger posted and every command it refused, with "
                  "the reason.", (PointsEntryPosted, HoldPlaced, HoldResolved, CommandRejected))
