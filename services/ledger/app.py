"""Ledger service wiring: consumes jifen.ledger.commands, serves balances and entries over HTTP."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query
from pydantic import BaseModel, Field

from services.ledger import repository
from services.ledger.handlers import ApplyCommands, LedgerMetrics
from services.ledger.settings import LedgerSettings
from services.ledger.sweeper import Sweeper, SweepMetrics
from shared import topics
from shared.contracts import LEDGER_COMMAND_TYPES
from shared.service import Runtime, ServiceSpec, build_app


def utc_now() -> datetime:
    return datetime.now(UTC)


class NextExpiry(BaseModel):
    points: int
    date: datetime


class Balance(BaseModel):
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
    entries: list[EntryView]
    next_before_seq: int | None
    open_holds: list[HoldOut]


def create_app(settings: LedgerSettings | None = None) -> FastAPI:
    settings = settings or LedgerSettings()
    spec = ServiceSpec(
        name="ledger", schema=settings.schema_name, migrations=Path(__file__).parent / "migrations",
        topics=[topics.LEDGER_COMMANDS], types=dict(LEDGER_COMMAND_TYPES),
        handled_types=set(LEDGER_COMMAND_TYPES), use_inbox=False, pool_size=8,
        make_handler=lambda registry: ApplyCommands(settings.topic(topics.LEDGER_ENTRIES), LedgerMetrics(registry),
                                                    utc_now),
        background=[lambda runtime: _sweep(runtime, settings)])
    app, runtime = build_app(spec, settings, "Jifen ledger")
    _routes(app, runtime)
    return app


async def _sweep(runtime: Runtime, settings: LedgerSettings) -> None:
    assert runtime.engine is not None
    await Sweeper(runtime.engine, settings.schema_name, settings.topic(topics.LEDGER_COMMANDS),
                  SweepMetrics(runtime.metrics.registry), utc_now, interval_s=settings.sweep_interval_s,
                  batch_size=settings.sweep_batch_size).run()


def _routes(app: FastAPI, runtime: Runtime) -> None:
    async def db() -> Any:
        if runtime.engine is None:
            raise HTTPException(503, "ledger is starting")
        return runtime.engine

    @app.get("/v1/programs/{program_id}/members/{member_id}/balance", response_model=Balance, tags=["ledger"])
    async def get_balance(program_id: str, member_id: str) -> Balance:
        engine = await db()
        now = utc_now()
        async with engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            book = await repository.member_book(raw, program_id, member_id)
        if book is None:  # a member who never earned has nothing, which is not an error
            return Balance(program_id=program_id, member_id=member_id, available=0, pending=0, held=0,
                           lifetime_earned=0, next_expiry=None, balance=0, awaiting_expiry=0, debt=0)
        expiry = book.next_expiry(now)
        return Balance(
            program_id=program_id, member_id=member_id, available=book.available(now), pending=book.pending(now),
            held=book.held(), lifetime_earned=book.account.lifetime_earned,
            next_expiry=NextExpiry(points=expiry[0], date=expiry[1]) if expiry else None,
            balance=book.account.balance, awaiting_expiry=book.awaiting_expiry(now), debt=book.account.debt)

    @app.get("/v1/programs/{program_id}/members/{member_id}/entries", response_model=EntriesPage, tags=["ledger"])
    async def get_entries(program_id: str, member_id: str,
                          limit: Annotated[int, Query(ge=1, le=500)] = 50,
                          before_seq: Annotated[int | None, Query(ge=1)] = None) -> EntriesPage:
        engine = await db()
        async with engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            rows, lots = await repository.entries_page(raw, program_id, member_id, before_seq, limit)
            holds = await repository.open_holds_of(raw, program_id, member_id)
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
