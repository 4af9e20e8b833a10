"""Ledger service wiring: consumes jifen.ledger.commands, serves balances and entries over HTTP."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query
from pydantic import BaseModel

from services.ledger import repository
from services.ledger.handlers import ApplyCommands, LedgerMetrics
from services.ledger.settings import LedgerSettings
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
    available: int
    pending: int
    held: int
    lifetime_earned: int
    next_expiry: NextExpiry | None


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
    lot: dict[str, datetime | None] | None
    hash: str


class EntriesPage(BaseModel):
    entries: list[EntryView]
    next_before_seq: int | None


def create_app(settings: LedgerSettings | None = None) -> FastAPI:
    settings = settings or LedgerSettings()
    spec = ServiceSpec(
        name="ledger", schema=settings.schema_name, migrations=Path(__file__).parent / "migrations",
        topics=[topics.LEDGER_COMMANDS], types=dict(LEDGER_COMMAND_TYPES),
        handled_types=set(LEDGER_COMMAND_TYPES), use_inbox=False, pool_size=8,
        make_handler=lambda registry: ApplyCommands(settings.topic(topics.LEDGER_ENTRIES), LedgerMetrics(registry),
                                                    utc_now))
    app, runtime = build_app(spec, settings, "Jifen ledger")
    _routes(app, runtime)
    return app


def _routes(app: FastAPI, runtime: Runtime) -> None:
    async def db() -> Any:
        if runtime.engine is None:
            raise HTTPException(503, "ledger is starting")
        return runtime.engine

    @app.get("/v1/programs/{program_id}/members/{member_id}/balance", response_model=Balance, tags=["ledger"])
    async def get_balance(program_id: str, member_id: str) -> Balance:
        engine = await db()
        async with engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            found = await repository.balance(raw, program_id, member_id, utc_now())
        if found is None:  # a member who never earned has nothing, which is not an error
            return Balance(program_id=program_id, member_id=member_id, available=0, pending=0, held=0,
                           lifetime_earned=0, next_expiry=None)
        expiry = found["next_expiry"]
        return Balance(
            program_id=program_id, member_id=member_id, available=found["balance"] - found["pending"],
            pending=found["pending"], held=0, lifetime_earned=found["lifetime_earned"],
            next_expiry=NextExpiry(points=expiry["points"], date=expiry["expires_at"]) if expiry else None)

    @app.get("/v1/programs/{program_id}/members/{member_id}/entries", response_model=EntriesPage, tags=["ledger"])
    async def get_entries(program_id: str, member_id: str,
                          limit: Annotated[int, Query(ge=1, le=500)] = 50,
                          before_seq: Annotated[int | None, Query(ge=1)] = None) -> EntriesPage:
        engine = await db()
        async with engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            rows = await repository.entries_page(raw, program_id, member_id, before_seq, limit)
        views = [EntryView(
            entry_id=r["id"], seq=r["seq"], kind=r["kind"], amount=r["amount"] if r["incoming"] else -r["amount"],
            balance_after=r["balance_after"], idempotency_key=r["command_key"], source_event_id=r["source_event_id"],
            rule_id=r["rule_id"], rule_version=r["rule_version"], reason=r["reason"],
            details=r["details"], occurred_at=r["occurred_at"], posted_at=r["posted_at"],
            lot={"available_at": r["available_at"], "expires_at": r["expires_at"]} if r["available_at"] else None,
            hash=bytes(r["hash"]).hex()) for r in rows]
        more = len(rows) == limit and rows[-1]["seq"] > 1
        return EntriesPage(entries=views, next_before_seq=rows[-1]["seq"] if more else None)

