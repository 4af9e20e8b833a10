"""jifen.ledger.commands (internal): commands to the ledger, the only writer of points. Keyed by member; each carries
an idempotency key derived from its cause, so a re-derived command is recognised as the same one."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from shared.contracts.base import Channel, Contract, Id, NonBlank, ProgramId


class Cause(Contract):
    """Why a command exists: the event that caused it and the rule that turned it into points."""

    source_event_id: str
    rule_id: str | None = None
    rule_version: int | None = None
    reason: str | None = None
    # The member's arm of every experiment running at the event's time (experiment id -> arm name), and the tier earn
    # applied to a purchase. Left out of the dump when unset, so a command without them keeps the payload hash it had
    # before they existed (a replay is still recognised as the same command).
    arms: dict[str, str] | None = Field(default=None, exclude_if=lambda arms: arms is None)
    tier: str | None = Field(default=None, exclude_if=lambda tier: tier is None)


class LedgerCommand(Contract):
    """What every ledger command carries. The key is derived from the command's cause, so a re-derived
    command is recognised as the same one; the member is the Kafka key."""

    idempotency_key: Id
    program_id: ProgramId
    member_id: Id
    cause: Cause
    occurred_at: datetime
    details: dict[str, Any] | None = None


class PostCredit(LedgerCommand):
    """Credit points to a member as a new lot (available from `available_at`, expiring at `expires_at`)."""

    TYPE: ClassVar[str] = "jifen.ledger.credit.v1"

    amount: int = Field(gt=0)
    kind: Literal["earn"] = "earn"
    available_at: datetime | None = None
    expires_at: datetime | None = None


class PostDebit(LedgerCommand):
    """Spend available points (soonest-expiring lots first); refused when short or in debt."""

    TYPE: ClassVar[str] = "jifen.ledger.debit.v1"

    amount: int = Field(gt=0)
    kind: Literal["redeem"] = "redeem"


class PlaceHold(LedgerCommand):
    """Reserve available points for `hold_id` until captured, released, or `ttl_seconds` pass."""

    TYPE: ClassVar[str] = "jifen.ledger.hold.place.v1"

    hold_id: Id
    amount: int = Field(gt=0)
    ttl_seconds: int = Field(default=900, gt=0, le=30 * 86400)


class CaptureHold(LedgerCommand):
    """Spend up to the held amount; whatever is not captured is released."""

    TYPE: ClassVar[str] = "jifen.ledger.hold.capture.v1"

    hold_id: Id
    amount: int = Field(gt=0)


class ReleaseHold(LedgerCommand):
    TYPE: ClassVar[str] = "jifen.ledger.hold.release.v1"

    hold_id: Id


class ExpireHold(LedgerCommand):
    """Sent by the ledger's own sweeper once a hold's TTL has passed (key `hold-expire:{hold_id}`)."""

    TYPE: ClassVar[str] = "jifen.ledger.hold.expire.v1"

    hold_id: Id


class ExpireLot(LedgerCommand):
    """Sent by the ledger's own sweeper for a due lot (key `expire:{lot_id}`): its unreserved remainder expires."""

    TYPE: ClassVar[str] = "jifen.ledger.lot.expire.v1"

    lot_id: int = Field(gt=0)


class ReverseEntry(LedgerCommand):
    """Correct an earlier entry (a refund reverses its earn), named by its id or by the idempotency key of the
    command that posted it (its entry on this member's account). `amount` defaults to all not yet reversed."""

    TYPE: ClassVar[str] = "jifen.ledger.reverse.v1"

    entry_id: int | None = Field(default=None, gt=0)
    # Left out of the dump when unset, so reversals by id keep the payload hash they had before keys existed.
    entry_key: Id | None = Field(default=None, exclude_if=lambda key: key is None)
    amount: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one_entry(self) -> ReverseEntry:
        if (self.entry_id is None) == (self.entry_key is None):
            raise ValueError("a reversal names its entry by exactly one of entry_id and entry_key")
        return self


class AdjustPoints(LedgerCommand):
    """A manual correction by a person: the reason and the actor are mandatory."""

    TYPE: ClassVar[str] = "jifen.ledger.adjust.v1"

    direction: Literal["credit", "debit"]
    amount: int = Field(gt=0)
    reason: NonBlank
    actor: NonBlank
    expires_at: datetime | None = None


class TransferPoints(LedgerCommand):
    """Move available points to another member of the same programme; they keep their expiry."""

    TYPE: ClassVar[str] = "jifen.ledger.transfer.v1"

    to_member_id: Id
    amount: int = Field(gt=0)

    @model_validator(mode="after")
    def _two_members(self) -> TransferPoints:
        if self.to_member_id == self.member_id:
            raise ValueError("a transfer needs two different members")
        return self


COMMANDS: tuple[type[LedgerCommand], ...] = (PostCredit, PostDebit, PlaceHold, CaptureHold, ReleaseHold, ExpireHold,
                                             ExpireLot, ReverseEntry, AdjustPoints, TransferPoints)
CHANNEL = Channel("jifen.ledger.commands", "in", "Internal: commands to the ledger, the only writer of points. Keyed "
                  "by member; each carries an idempotency key derived from its cause.", COMMANDS, internal=True)
