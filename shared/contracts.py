"""Typed contracts of the public topics and of the ledger's commands and outcomes.

Every inbound type of the design is here, including those whose handlers come later, so a message
of any of them is validated the same way wherever it is consumed.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints


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


INBOUND_TYPES: dict[str, type[Contract]] = {
    "jifen.purchase.completed.v1": PurchaseCompleted,
    "jifen.purchase.refunded.v1": PurchaseRefunded,
    "jifen.task.completed.v1": TaskCompleted,
    "jifen.checkin.recorded.v1": CheckinRecorded,
    "jifen.referral.accepted.v1": ReferralAccepted,
    "jifen.member.enrolled.v1": MemberEnrolled,
}


# --- ledger commands (jifen.ledger.commands) ----------------------------------------------------------

class Cause(Contract):
    """Why a command exists: the event that caused it and the rule that turned it into points."""

    source_event_id: str
    rule_id: str | None = None
    rule_version: int | None = None
    reason: str | None = None


class PostCredit(Contract):
    """Credit points to a member as a new lot (available from `available_at`, expiring at `expires_at`)."""

    idempotency_key: Id
    program_id: ProgramId
    member_id: Id
    amount: int = Field(gt=0)
    kind: Literal["earn"] = "earn"
    cause: Cause
    occurred_at: datetime
    available_at: datetime | None = None
    expires_at: datetime | None = None
    details: dict[str, Any] | None = None


LEDGER_COMMAND_TYPES: dict[str, type[Contract]] = {
    "jifen.ledger.credit.v1": PostCredit,
}
COMMAND_TYPE_OF: dict[type[Contract], str] = {v: k for k, v in LEDGER_COMMAND_TYPES.items()}


# --- ledger outcomes (jifen.ledger.entries) -----------------------------------------------------------

ENTRY_POSTED = "jifen.ledger.entry.posted.v1"
COMMAND_REJECTED = "jifen.ledger.command.rejected.v1"


class LotView(Contract):
    available_at: datetime
    expires_at: datetime | None


class PointsEntryPosted(Contract):
    entry_id: int
    program_id: str
    member_id: str
    seq: int
    amount: int
    balance_after: int
    kind: str
    idempotency_key: str
    cause: Cause
    occurred_at: datetime
    posted_at: datetime
    lot: LotView | None = None
    hash: str


class CommandRejected(Contract):
    program_id: str
    member_id: str
    idempotency_key: str
    command_type: str
    reason: str
    detail: str
