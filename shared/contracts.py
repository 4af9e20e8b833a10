"""Typed contracts of the public topics and of the ledger's commands and outcomes.

Every inbound type of the design is here, including those whose handlers come later, so a message
of any of them is validated the same way wherever it is consumed.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)


def _money_input(value: Any) -> Any:
    # Money is a decimal string; a JSON float would already have lost precision.
    if isinstance(value, float):
        raise ValueError("money must be a decimal string such as \"12.50\", not a float")
    return value


def _finite(value: Decimal) -> Decimal:
    if not value.is_finite():
        raise ValueError("money must be a finite decimal")
    return value


Money = Annotated[Decimal, BeforeValidator(_money_input), AfterValidator(_finite), Field(ge=0)]
Id = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
ProgramId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]


class Contract(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class PurchaseLine(Contract):
    sku: Id
    category: Id | None = None
    quantity: Decimal = Field(gt=0)
    unit_price: Money
    total: Money


class PurchaseCompleted(Contract):
    program_id: ProgramId = "default"
    member_id: Id
    order_id: Id
    store_id: Id | None = None
    channel: Literal["pos", "online", "app"]
    currency: Currency
    total: Money
    lines: list[PurchaseLine] = Field(default_factory=list)


class PurchaseRefunded(Contract):
    program_id: ProgramId = "default"
    member_id: Id
    order_id: Id
    refund_id: Id
    currency: Currency
    total: Money
    lines: list[PurchaseLine] | None = None


class TaskCompleted(Contract):
    program_id: ProgramId = "default"
    member_id: Id
    task_id: Id
    task_type: Id


class CheckinRecorded(Contract):
    program_id: ProgramId = "default"
    member_id: Id
    day: date
    channel: str | None = None


class ReferralAccepted(Contract):
    program_id: ProgramId = "default"
    referrer_member_id: Id
    referee_member_id: Id
    referral_code: str | None = None


class MemberEnrolled(Contract):
    program_id: ProgramId = "default"
    member_id: Id
    birthday: Annotated[str, StringConstraints(pattern=r"^(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$")] | None = None
    enrolled_at: datetime | None = None


class PointsAwarded(Contract):
    """A manual award (goodwill from customer service, a manager's bonus). Earn pays it only when the event's
    CloudEvents `source` is one the programme trusts, and at most the programme's limit per award; `award_id`
    is the award's own id, so a resubmitted form with a new event id is not paid twice."""

    program_id: ProgramId = "default"
    member_id: Id
    award_id: Id
    points: int = Field(gt=0)
    reason: Annotated[str, StringConstraints(min_length=1, max_length=500, strip_whitespace=True)]
    awarded_by: Id


INBOUND_TYPES: dict[str, type[Contract]] = {
    "jifen.purchase.completed.v1": PurchaseCompleted,
    "jifen.purchase.refunded.v1": PurchaseRefunded,
    "jifen.task.completed.v1": TaskCompleted,
    "jifen.checkin.recorded.v1": CheckinRecorded,
    "jifen.referral.accepted.v1": ReferralAccepted,
    "jifen.member.enrolled.v1": MemberEnrolled,
    "jifen.points.awarded.v1": PointsAwarded,  # on jifen.tasks
}


# --- ledger commands (jifen.ledger.commands) ----------------------------------------------------------

class Cause(Contract):
    """Why a command exists: the event that caused it and the rule that turned it into points."""

    source_event_id: str
    rule_id: str | None = None
    rule_version: int | None = None
    reason: str | None = None


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

    amount: int = Field(gt=0)
    kind: Literal["earn"] = "earn"
    available_at: datetime | None = None
    expires_at: datetime | None = None


class PostDebit(LedgerCommand):
    """Spend available points (soonest-expiring lots first); refused when short or in debt."""

    amount: int = Field(gt=0)
    kind: Literal["redeem"] = "redeem"


class PlaceHold(LedgerCommand):
    """Reserve available points for `hold_id` until captured, released, or `ttl_seconds` pass."""

    hold_id: Id
    amount: int = Field(gt=0)
    ttl_seconds: int = Field(default=900, gt=0, le=30 * 86400)


class CaptureHold(LedgerCommand):
    """Spend up to the held amount; whatever is not captured is released."""

    hold_id: Id
    amount: int = Field(gt=0)


class ReleaseHold(LedgerCommand):
    hold_id: Id


class ExpireHold(LedgerCommand):
    """Sent by the ledger's own sweeper once a hold's TTL has passed (key `hold-expire:{hold_id}`)."""

    hold_id: Id


class ExpireLot(LedgerCommand):
    """Sent by the ledger's own sweeper for a due lot (key `expire:{lot_id}`): its unreserved remainder expires."""

    lot_id: int = Field(gt=0)


class ReverseEntry(LedgerCommand):
    """Correct an earlier entry (a refund reverses its earn), named by its id or by the idempotency key of the
    command that posted it (its entry on this member's account). `amount` defaults to all not yet reversed."""

    entry_id: int | None = Field(default=None, gt=0)
    # Left out of the dump when unset, so reversals by id keep the payload hash they had before keys existed.
    entry_key: Id | None = Field(default=None, exclude_if=lambda key: key is None)
    amount: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one_entry(self) -> ReverseEntry:
        if (self.entry_id is None) == (self.entry_key is None):
            raise ValueError("a reversal names its entry by exactly one of entry_id and entry_key")
        return self


NonBlank = Annotated[str, StringConstraints(min_length=1, max_length=500, strip_whitespace=True)]


class AdjustPoints(LedgerCommand):
    """A manual correction by a person: the reason and the actor are mandatory."""

    direction: Literal["credit", "debit"]
    amount: int = Field(gt=0)
    reason: NonBlank
    actor: NonBlank
    expires_at: datetime | None = None


class TransferPoints(LedgerCommand):
    """Move available points to another member of the same programme; they keep their expiry."""

    to_member_id: Id
    amount: int = Field(gt=0)

    @model_validator(mode="after")
    def _two_members(self) -> TransferPoints:
        if self.to_member_id == self.member_id:
            raise ValueError("a transfer needs two different members")
        return self


LEDGER_COMMAND_TYPES: dict[str, type[Contract]] = {
    "jifen.ledger.credit.v1": PostCredit,
    "jifen.ledger.debit.v1": PostDebit,
    "jifen.ledger.hold.place.v1": PlaceHold,
    "jifen.ledger.hold.capture.v1": CaptureHold,
    "jifen.ledger.hold.release.v1": ReleaseHold,
    "jifen.ledger.hold.expire.v1": ExpireHold,
    "jifen.ledger.lot.expire.v1": ExpireLot,
    "jifen.ledger.reverse.v1": ReverseEntry,
    "jifen.ledger.adjust.v1": AdjustPoints,
    "jifen.ledger.transfer.v1": TransferPoints,
}
COMMAND_TYPE_OF: dict[type[Contract], str] = {v: k for k, v in LEDGER_COMMAND_TYPES.items()}


# --- ledger outcomes (jifen.ledger.entries) -----------------------------------------------------------

ENTRY_POSTED = "jifen.ledger.entry.posted.v1"
HOLD_PLACED = "jifen.ledger.hold.placed.v1"
HOLD_RESOLVED = "jifen.ledger.hold.resolved.v1"
COMMAND_REJECTED = "jifen.ledger.command.rejected.v1"


class LotView(Contract):
    lot_id: int | None = None
    amount: int | None = None
    available_at: datetime
    expires_at: datetime | None


class PointsEntryPosted(Contract):
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
    hold_id: str
    program_id: str
    member_id: str
    amount: int
    expires_at: datetime
    idempotency_key: str


class HoldResolved(Contract):
    hold_id: str
    program_id: str
    member_id: str
    outcome: Literal["captured", "released", "expired"]
    captured: int
    released: int
    idempotency_key: str


class CommandRejected(Contract):
    program_id: str
    member_id: str
    idempotency_key: str
    command_type: str
    reason: str
    detail: str


# --- tier changes (jifen.tiers) -----------------------------------------------------------------------

TIER_CHANGED = "jifen.tier.changed.v1"


class TierChanged(Contract):
    """A member's tier changed, as of the event's `time`. `earn_multiplier` multiplies the base points of the
    member's purchases from then on (1: the tier earns nothing extra); earn keeps the history, so a purchase is
    judged by the tier the member held when it happened."""

    program_id: ProgramId = "default"
    member_id: Id
    tier: Id
    previous_tier: Id | None = None
    earn_multiplier: Decimal = Field(default=Decimal(1), ge=1, le=100)
