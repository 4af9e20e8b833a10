"""`jifen bench --mode history`: how fast a member's balance and entry pages are read when the member has a
long history (100,000 entries by default), seeded through the ledger's real handler into a scratch database."""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import ConsumerRecord
from prometheus_client import CollectorRegistry

from services.ledger.handlers import ApplyCommands, LedgerMetrics
from services.ledger.repository.books import member_book
from services.ledger.repository.entries import entries_page
from shared import db as shared_db
from shared import keys
from shared.contracts.ledger_commands import Cause, LedgerCommand, PostCredit, PostDebit
from shared.envelope import CloudEvent
from shared.settings import Settings
from shared.subscription import Inbound, Rejections
from shared.uow import UnitOfWork

MIGRATIONS = Path(__file__).resolve().parents[1] / "services" / "ledger" / "migrations"
BATCH = 2000
SAMPLES = 200


@dataclass
class Timing:
    what: str
    p50_ms: float
    p99_ms: float
    max_ms: float


def _item(cmd: LedgerCommand, n: int, at: datetime) -> Inbound:
    event = CloudEvent(id=cmd.idempotency_key, source="bench", type=cmd.TYPE, time=at, data=None)
    return Inbound(ConsumerRecord("bench", 0, n, 0, 0, None, b"", None, 0, 0, []), event, cmd)


def _history(member: str, entries: int, t0: datetime) -> list[LedgerCommand]:
    """Earn 10, spend 10, repeated: lots end closed, the worst case for finding the few open ones. Every tenth
    earn is 11 points that never expire, spent last, so a point of it stays open all through the history."""
    commands: list[LedgerCommand] = []
    for n in range(entries // 2):
        cause = Cause(source_event_id=f"bench|{member}|{n}")
        at = t0 + timedelta(seconds=n)
        commands.append(PostCredit(idempotency_key=keys.earn_credit(member, str(n)), program_id="history",
                                   member_id=member,
                                   amount=11 if n % 10 == 0 else 10, occurred_at=at, available_at=at,
                                   expires_at=None if n % 10 == 0 else at + timedelta(days=3650), cause=cause))
        spend = keys.bench_command("history", f"spend-{member}", n)
        commands.append(PostDebit(idempotency_key=spend, program_id="history", member_id=member,
                                  amount=10, occurred_at=at, cause=cause))
    return commands


async def _timed(what: str, call: Callable[[], Awaitable[Any]]) -> Timing:
    samples = []
    for _ in range(SAMPLES):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return Timing(what, statistics.median(samples), samples[int(len(samples) * 0.99) - 1], samples[-1])


async def run_history(settings: Settings, entries: int, progress: Callable[[str], None],
                      keep: bool = False) -> list[Timing]:
    name = f"jifen_bench_history_{uuid.uuid4().hex[:8]}"
    admin = await shared_db.connect(settings.asyncpg_dsn)
    await admin.execute(f"CREATE DATABASE {name}")
    dsn = f"{settings.asyncpg_dsn.rpartition('/')[0]}/{name}"
    try:
        await shared_db.migrate(dsn, "ledger", MIGRATIONS)
        engine = shared_db.make_engine(Settings(database_url=dsn), "ledger", pool_size=2)
        t0 = datetime.now(UTC) - timedelta(days=365)
        handler = ApplyCommands(LedgerMetrics(CollectorRegistry()), lambda: datetime.now(UTC))
        commands = _history("long-history", entries, t0)
        started = time.monotonic()
        for start in range(0, len(commands), BATCH):
            async with UnitOfWork(engine, "ledger", "jifen.bench") as uow:
                await handler.apply([_item(c, start + i, t0) for i, c in enumerate(commands[start:start + BATCH])], uow,
                              Rejections())
                uow.messages.clear()  # outcomes are not needed here
                await uow.commit()
            if (start // BATCH) % 10 == 0:
                progress(f"seeded {start + BATCH:,} of {len(commands):,} entries "
                         f"({(start + BATCH) / (time.monotonic() - started):,.0f}/s)")
        await engine.dispose()
        conn = await shared_db.connect(dsn, "ledger")
        try:
            await conn.execute("ANALYZE")
            book = await member_book(conn, "history", "long-history")
            assert book is not None and book.account.seq == len(commands), "seeding did not post every entry"
            progress(f"member has {book.account.seq:,} entries, {len(book.lots):,} open lots, "
                     f"balance {book.account.balance:,}")
            middle = book.account.seq // 2
            return [
                await _timed("balance (open lots, holds, debts)",
                             lambda: member_book(conn, "history", "long-history")),
                await _timed("entries, newest page of 50",
                             lambda: entries_page(conn, "history", "long-history", None, 50)),
                await _timed("entries, a page of 50 mid-history",
                             lambda: entries_page(conn, "history", "long-history", middle, 50)),
            ]
        finally:
            await conn.close()
    finally:
        if keep:
            progress(f"kept database {name}")
        else:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()
