"""What the service keeps, as values: facts as the handlers store them, a referral as stored with its last verdict,
the credits and reversals asked of the ledger, and the spans of facts judging loads. Pure: the repository reads and
writes them, the handlers and judging build them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from services.referral.domain import Decision, Role, Status

MemberKey = tuple[str, str]  # (program_id, member_id)


# --- facts in -----------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class NewMember:
    program_id: str
    member_id: str
    enrolled_at: datetime
    fingerprints: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class NewPurchase:
    program_id: str
    order_id: str
    member_id: str
    event_id: str
    occurred_at: datetime
    currency: str
    total: Decimal


@dataclass(frozen=True, slots=True)
class NewRefund:
    program_id: str
    refund_id: str
    order_id: str
    member_id: str
    event_id: str
    occurred_at: datetime
    total: Decimal


@dataclass(frozen=True, slots=True)
class NewReferral:
    referral_id: str
    program_id: str
    referrer: str
    referee: str
    accepted_at: datetime
    via: str
    event_id: str


@dataclass(frozen=True, slots=True)
class Span:
    """A member's (or a device's) events worth loading: from `since` to `until`, both included."""

    program_id: str
    key: str
    since: datetime
    until: datetime


# --- referrals and their verdicts -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Judged:
    """A referral's verdict as stored."""

    referral_id: str
    status: Status
    reason: str | None
    detail: str
    verdict_at: datetime
    order_id: str | None
    qualified_at: datetime | None
    position: int | None
    rule_version: int
    available_at: datetime | None
    grants: dict[Role, int]
    live: dict[Role, int]
    announced: int
    due_at: datetime | None


@dataclass(frozen=True, slots=True)
class Stored:
    """A referral as stored: its facts and what was decided of it last (`status` None: never judged)."""

    referral_id: str
    program_id: str
    referrer: str
    referee: str
    accepted_at: datetime
    event_id: str
    status: Status | None
    reason: str | None
    grants: dict[Role, int]  # each side's grants so far
    live: dict[Role, int]
    decision: Decision | None
    decided_at: datetime | None
    judged: Judged | None  # as it would be written again, to see whether a new verdict changes anything

    @property
    def announced(self) -> int:
        return self.judged.announced if self.judged is not None else 0


# --- credits ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class NewCredit:
    key: str
    program_id: str
    referral_id: str
    grant_no: int
    role: Role
    member_id: str
    amount: int
    occurred_at: datetime
    arms: dict[str, str] | None = None  # the referrer's arms that set its terms, named again by its reversal


@dataclass(frozen=True, slots=True)
class Reversal:
    """Take back one side's grant of a referral: when (None: at the credit's own time), why, and the event that
    caused it."""

    referral_id: str
    role: Role
    grant_no: int
    at: datetime | None
    reason: str
    source: str
