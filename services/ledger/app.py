"""Ledger service wiring: consumes jifen.ledger.commands, serves balances and entries over HTTP."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Query
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, ConfigDict, Field

from services.ledger import admin, repository
from services.ledger.handlers import ApplyCommands, LedgerMetrics
from services.ledger.settings import LedgerSettings
from services.ledger.sweeper import SweepMetrics, sweeper
from services.ledger.totals import TotalsMetrics, totals_job, verify_job
from shared.contracts.ledger_commands import COMMANDS
from shared.http import BIGINT_MAX, PathId, ProgramPath, error_responses
from shared.programmes import Catalogue, ProgrammeVersion
from shared.service import Runtime, ServiceSpec, build_app, utc_now
from shared.subscription import Subscription


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
            "rule_version": 1, "reason": "purchase",
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


def spec(settings: LedgerSettings | None = None, clock: Callable[[], datetime] = utc_now) -> ServiceSpec:
    settings = settings or LedgerSettings()
    registry = CollectorRegistry()
    apply = ApplyCommands(LedgerMetrics(registry), clock)
    totals = TotalsMetrics(registry)
    # The ledger reads only the programme files' headers: which programmes exist, their currency and point value.
    catalogue = Catalogue.load(settings.programmes_dir, ProgrammeVersion)

    def routes(app: FastAPI, runtime: Runtime) -> None:
        _routes(app, runtime, catalogue)
        admin.routes(app, runtime, catalogue)
        admin.summary_routes(app, runtime, catalogue)

    return ServiceSpec(
        name="ledger", settings=settings, migrations=Path(__file__).parent / "migrations", registry=registry,
        subscriptions=[Subscription(dict.fromkeys(COMMANDS, apply))],
        jobs=[sweeper(SweepMetrics(registry), settings.sweep_interval_s, settings.sweep_batch_size),
              totals_job(totals, settings.totals_interval_s),
              verify_job(totals, settings.verify_interval_s, settings.verify_first_after_s, log.error)],
        # Commands are deduplicated by their keys: no inbox.
        routes=routes, catalogue=catalogue, use_inbox=False, pool_size=8, clock=clock)


def create_app(settings: LedgerSettings | None = None) -> FastAPI:
    return build_app(spec(settings))


MEMBER = "/v1/programs/{program_id}/members/{member_id:path}"
log = logging.getLogger(__name__)


def _routes(app: FastAPI, runtime: Runtime, catalogue: Catalogue[ProgrammeVersion]) -> None:
    read = [runtime.requires("read")]
    errors = error_responses(401, 403, 404, 422, 503, reasons={404: {
        "unknown_program": "no programme 'defualt': the programmes are default, retail, staff, starbucks"}})

    @app.get(f"{MEMBER}/balance", response_model=Balance, tags=["ledger"], dependencies=read, responses=errors,
             summary="A member's points: available, pending, held, lifetime earned, next expiry")
    async def get_balance(program_id: ProgramPath, member_id: PathId) -> Balance:
        """The member's points now, from the ledger's own tables: `available` is spendable (less any debt),
        `pending` waits for its return window, `held` is reserved by open holds (a redemption or a points payment),
        `awaiting_expiry` has expired and waits for the sweeper. A member with nothing posted has zeros; a programme
        no file defines and nothing was posted to is 404 `unknown_program`. Needs the `read` scope."""
        now = runtime.spec.clock()
        async with runtime.connection() as db:
            book = await repository.member_book(db, program_id, member_id)
        if book is None:  # a member who never earned has nothing, which is not an error; a typo in the programme is
            admin.known_program(catalogue, program_id, None)
            return Balance(program_id=program_id, member_id=member_id, available=0, pending=0, held=0,
                           lifetime_earned=0, next_expiry=None, balance=0, awaiting_expiry=0, debt=0)
        expiry = book.next_expiry(now)
        return Balance(
            program_id=program_id, member_id=member_id, available=book.available(now), pending=book.pending(now),
            held=book.held(), lifetime_earned=book.account.lifetime_earned,
            next_expiry=NextExpiry(points=expiry[0], date=expiry[1]) if expiry else None,
            balance=book.account.balance, awaiting_expiry=book.awaiting_expiry(now), debt=book.account.debt)

    @app.get(f"{MEMBER}/entries", response_model=EntriesPage, tags=["ledger"], dependencies=read, responses=errors,
             summary="A member's entries, newest first, with the lots each made and the open holds")
    async def get_entries(program_id: ProgramPath, member_id: PathId,
                          limit: Annotated[int, Query(ge=1, le=500)] = 50,
                          before_seq: Annotated[int | None, Query(ge=1, le=BIGINT_MAX)] = None) -> EntriesPage:
        """The member's entries, newest first, `limit` at a time (at most 500): pass `next_before_seq` as
        `before_seq` for the next page. Each entry shows its signed amount, the balance after it, its cause and the
        lots it made with what is left of each; `open_holds` lists the holds reserving points now. A correction is a
        new entry naming the one it corrects (`corrects_entry_id`). An unknown programme with nothing posted is 404
        `unknown_program`. Needs the `read` scope."""
        async with runtime.connection() as db:
            rows, lots = await repository.entries_page(db, program_id, member_id, before_seq, limit)
            holds = await repository.open_holds_of(db, program_id, member_id)
        if not rows:
            admin.known_program(catalogue, program_id, None)
        views = [EntryView(
            entry_id=r["id"], seq=r["seq"], kind=r["kind"], amount=r["amount"] if r["incoming"] else -r["amount"],
            balance_after=r["balance_after"], idempotency_key=r["command_key"], source_event_id=r["source_event_id"],
            rule_id=r["rule_id"], rule_version=r["rule_version"], reason=r["reason"],
            details=r["details"], occurred_at=r["occurred_at"], posted_at=r["posted_at"],
            corrects_entry_id=r["corrects_entry_id"], hold_id=r["hold_id"],
            lots=[LotOut(lot_id=lot["id"], amount=lot["amount"], unspent=lot["unspent"],
                         available_at=lot["available_at"], expires_at=lot["expires_at"])
                  for lot in lots.get(r["id"], [])],
            hash=bytes(r["hash"]).hex()) for r in rows]
        more = len(rows) == limit and rows[-1]["seq"] > 1
        return EntriesPage(entries=views, next_before_seq=rows[-1]["seq"] if more else None,
                           open_holds=[HoldOut(**dict(h)) for h in holds])
