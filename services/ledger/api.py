"""The ledger's HTTP models: what its routes take and answer, with the OpenAPI examples of each (and the example
dicts of their error answers)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import Header, Query
from pydantic import BaseModel, ConfigDict, Field

from shared.contracts.base import Id, NonBlank
from shared.http import error_responses

# Module-level: the routes' annotations are strings (`from __future__ import annotations`), resolved in the
# routes' module, which imports these by name.
Wait = Annotated[float, Query(ge=0, le=10, description="seconds to wait for the ledger's answer")]
IdemKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200, pattern=r"^[\x21-\x7e]+$",
                                       description="the same key again is the same command")]


# --- a member's points ------------------------------------------------------------------------------------------

class NextExpiry(BaseModel):
    points: int
    date: datetime


class Balance(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"program_id": "default", "member_id": "m-00001", "available": 1180, "pending": 0, "held": 100,
         "lifetime_earned": 1530, "next_expiry": {"points": 250, "date": "2027-03-14T09:30:00Z"}, "balance": 1280,
         "awaiting_expiry": 0, "debt": 0}]})

    program_id: str
    member_id: str
    available: int = Field(description="spendable now; negative while the member owes points")
    pending: int = Field(description="earned but not yet matured (return window still open)")
    held: int = Field(description="reserved by open holds")
    lifetime_earned: int
    next_expiry: NextExpiry | None
    balance: int = Field(description="all points on the account: available + pending + held + awaiting_expiry")
    awaiting_expiry: int = Field(description="past their expiry, about to be swept")
    debt: int = Field(description="points owed after a reversal of spent points; repaid first by new credits")


class LotOut(BaseModel):
    lot_id: int
    amount: int
    unspent: int
    available_at: datetime
    expires_at: datetime | None


class EntryView(BaseModel):
    entry_id: int
    seq: int
    kind: str
    amount: int
    balance_after: int
    idempotency_key: str
    source_event_id: str | None
    rule_id: str | None
    rule_version: int | None
    reason: str | None
    arms: dict[str, str] | None = None  # the member's experiment arms that judged it (experiment id -> arm)
    tier: str | None = None  # the tier earn applied to the purchase
    details: Any
    occurred_at: datetime
    posted_at: datetime
    corrects_entry_id: int | None
    hold_id: str | None
    lots: list[LotOut]
    hash: str


class HoldOut(BaseModel):
    hold_id: str
    amount: int
    placed_at: datetime
    expires_at: datetime


class EntriesPage(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "entries": [{
            "entry_id": 48213, "seq": 12, "kind": "earn", "amount": 250, "balance_after": 1380,
            "idempotency_key": "earn:evt-7f3a9c21:base", "source_event_id": "evt-7f3a9c21", "rule_id": "base",
            "rule_version": 1, "reason": "purchase", "arms": None, "tier": None,
            "details": {"order_id": "o-20261120-0042", "total": "250.00", "currency": "CNY",
                        "rule": {"rule_id": "base", "kind": "base", "points": 250,
                                 "why": "1 per unit of currency, floor"},
                        "lines": [{"sku": "*", "points": "250.00"}]},
            "occurred_at": "2026-11-20T09:30:00Z", "posted_at": "2026-11-20T09:30:01.204000Z",
            "corrects_entry_id": None, "hold_id": None,
            "lots": [{"lot_id": 30117, "amount": 250, "unspent": 250, "available_at": "2026-11-20T09:30:00Z",
                      "expires_at": "2028-11-20T09:30:00Z"}],
            "hash": "9f2c4e1a7b3d5f60a1c2e3d4b5a69788f0e1d2c3b4a5968778695a4b3c2d1e0f"}],
        "next_before_seq": 12,
        "open_holds": [{"hold_id": "redeem:rd_4be0c2a9d17f36e85a10", "amount": 100,
                        "placed_at": "2026-11-24T02:10:00Z", "expires_at": "2026-11-24T02:15:00Z"}]}]})

    entries: list[EntryView]
    next_before_seq: int | None
    open_holds: list[HoldOut]


# --- admin calls ------------------------------------------------------------------------------------------------

class Adjustment(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"direction": "credit", "points": 120, "reason": "the till double-charged order 8812"}]})

    direction: Literal["credit", "debit"]
    points: int = Field(gt=0, le=10_000_000)
    reason: NonBlank = Field(examples=["the till double-charged order 8812"])
    expires_at: datetime | None = None


class Award(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"points": 50, "reason": "goodwill for a late delivery", "expires_at": "2027-12-31T23:59:59Z"}]})

    points: int = Field(gt=0, le=10_000_000)
    reason: NonBlank = Field(examples=["goodwill for a late delivery"])
    expires_at: datetime | None = None


class Reversal(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"points": 100, "reason": "order o-20261120-0042 was refunded at the desk"}]})

    points: int | None = Field(default=None, gt=0, description="how much to take back (default: all not reversed)")
    reason: NonBlank


class Transfer(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"from_member_id": "m-00001", "to_member_id": "m-00002", "points": 300,
         "reason": "household pooling asked for by both members"}]})

    from_member_id: Id
    to_member_id: Id
    points: int = Field(gt=0, le=10_000_000)
    reason: NonBlank


class Blocking(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"reason": "twelve accounts on one device"}]})

    reason: NonBlank = Field(examples=["twelve accounts on one device"])


class PostedEntry(BaseModel):
    entry_id: int
    member_id: str
    seq: int
    kind: str
    amount: int = Field(description="as the member sees it: positive when points come in")
    balance_after: int


class Done(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"status": "posted", "idempotency_key": "admin:3f9c2a7b1e04:adj-2026-0001", "reason": None,
         "entries": [{"entry_id": 48250, "member_id": "m-00001", "seq": 13, "kind": "adjust_credit", "amount": 120,
                      "balance_after": 1400}]}]})

    status: Literal["posted", "rejected", "pending"]
    idempotency_key: str
    reason: str | None = None
    entries: list[PostedEntry] = Field(default_factory=list)


class Sent(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"status": "sent", "event_id": "admin:3f9c2a7b1e04:5b1f0c2e9a7d4e3f8a6b1c0d2e3f4a5b"}]})

    status: Literal["sent"]
    event_id: str


# --- the programme as a whole -----------------------------------------------------------------------------------

class Expiring(BaseModel):
    month: str = Field(examples=["2027-01"], description="in the programme's time zone")
    points: int
    value: Decimal | None = Field(default=None, description="points × point_value, half up to the cent")
    currency: str | None = None


class Reloaded(BaseModel):
    at: datetime
    ok: bool
    detail: str


class Summary(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"program_id": "default", "version": 1, "currency": None, "point_value": "0.01", "issued": 412000,
         "redeemed": 21500, "expired": 4200, "adjusted": 300, "outstanding": 386600, "pending": 0,
         "liability": "3866.00", "entries": 43716, "members": 308,
         "expiring": [{"month": "2027-01", "points": 1250, "value": "12.50", "currency": None},
                      {"month": "2027-02", "points": 2310, "value": "23.10", "currency": None}],
         "without_expiry": 0,
         "last_reload": {"at": "2026-11-24T08:00:02.113000Z", "ok": True, "detail": "loaded at start"}}]})

    program_id: str
    version: int | None = Field(description="the programme version in force now")
    currency: str | None
    point_value: Decimal | None = Field(description="what one point is worth, from the programme file")
    issued: int = Field(description="earned, less reversals and cancels of earning")
    redeemed: int = Field(description="spent, less what cancelled redemptions gave back")
    expired: int
    adjusted: int = Field(description="manual credits less manual debits")
    outstanding: int = Field(description="what members hold: the sum of their balances (debts included)")
    pending: int = Field(description="held by members but not yet available (a return window still open)")
    liability: Decimal | None = Field(description="outstanding × point_value, rounded half up to the cent; none "
                                                  "when the programme gives its points no value")
    entries: int
    members: int
    expiring: list[Expiring] = Field(description="points of open lots expiring per month, every month from now on "
                                               "(only `?month=` when given), with their value")
    without_expiry: int = Field(description="points of open lots that never expire")
    last_reload: Reloaded | None = Field(description="the last time the ledger read the programme folder")


# --- error answers ----------------------------------------------------------------------------------------------

# Catalogue.why_not's wording: the one `unknown_program` refusal.
UNKNOWN_PROGRAM = {"unknown_program": "no programme 'defualt' (the programmes are default, retail, staff, starbucks)"}
UNKNOWN_COMMAND = {"unknown_command": "the ledger has no command 'admin:3f9c2a7b1e04:adj-2026-0009': no admin call "
                                      "sent it and the ledger never received it"}
PENDING: dict[str, Any] = {"status": "pending", "idempotency_key": "admin:3f9c2a7b1e04:adj-2026-0002", "reason": None,
                           "entries": []}
READ_ERRORS = error_responses(401, 403, 404, 422, 503, reasons={404: UNKNOWN_PROGRAM})
COMMAND_ERRORS = error_responses(401, 403, 404, 422, 503, reasons={404: {**UNKNOWN_PROGRAM, **UNKNOWN_COMMAND}})
MEMBER_EVENT_ERRORS = error_responses(400, 401, 403, 404, 422, 503, reasons={404: UNKNOWN_PROGRAM})


def command_answers(*reasons: str, invalid: str | None = None) -> dict[int | str, dict[str, Any]]:
    """What an admin call that sends a ledger command answers besides its 201: 202 while the ledger has not answered,
    409 with each of the ledger's `reasons` (worded as `refused` words them), and the errors, with a 422 of the
    route's own (`invalid`)."""
    key = "admin:3f9c2a7b1e04:adj-2026-0003"
    refused = {reason: refused_detail(reason, key) for reason in reasons}
    pending = {"model": Done, "description": "the ledger has not answered within ?wait: ask GET …/commands/{key}",
               "content": {"application/json": {"example": PENDING}}}
    return {202: pending, **error_responses(400, 401, 403, 404, 409, 422, 503, reasons={
        404: UNKNOWN_PROGRAM, 409: refused, **({422: {"invalid_request": invalid}} if invalid else {})})}


def refused_detail(reason: str | None, key: str) -> str:
    """The detail of a 409: the ledger's reason and the command's key."""
    return f"the ledger refused the command ({reason}); its key is {key}"
