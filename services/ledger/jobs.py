"""The ledger's periodic jobs, for the kit's runner: the sweeper (its own timer: due lots and timed-out holds become
ledger commands), the programme totals for Prometheus, and `jifen ledger verify` on a schedule.

The sweeper does not write points itself. It sends `ExpireLot` (key `keys.lot_expiry`) and `ExpireHold` (key
`keys.hold_expiry`) through the outbox onto the commands topic, keyed by member, so the consumer that owns the
member's partition applies them in order with everything else, idempotently. A command whose key the ledger already
has is not sent again; one in flight may be, and is then a harmless replay.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import asyncpg

from services.ledger import totals
from services.ledger.metrics import SweepMetrics, TotalsMetrics
from services.ledger.repository import expiry
from services.ledger.repository.expiry import Cursor
from services.ledger.verify import verify
from shared import keys
from shared.contracts.ledger_commands import Cause, ExpireHold, ExpireLot, LedgerCommand
from shared.jobs import Job, Page
from shared.uow import UnitOfWork

SOURCE = "jifen.ledger.sweeper"


async def due_lots(db: asyncpg.Connection, now: datetime, limit: int, after: Cursor = None) -> list[LedgerCommand]:
    """An `ExpireLot` for each lot past its expiry with unreserved points left, in expiry order."""
    return [ExpireLot(idempotency_key=keys.lot_expiry(r["id"]), program_id=r["program_id"], member_id=r["member_id"],
                      lot_id=r["id"], occurred_at=r["expires_at"],
                      cause=Cause(source_event_id=keys.lot_expiry_cause(SOURCE, r["id"]), reason="expiry"))
            for r in await expiry.due_lots(db, now, limit, after)]


async def due_holds(db: asyncpg.Connection, now: datetime, limit: int, after: Cursor = None) -> list[LedgerCommand]:
    """An `ExpireHold` for each open hold past its TTL."""
    return [ExpireHold(idempotency_key=keys.hold_expiry(r["hold_id"]), program_id=r["program_id"],
                       member_id=r["member_id"], hold_id=r["hold_id"], occurred_at=r["expires_at"],
                       cause=Cause(source_event_id=keys.hold_expiry_cause(SOURCE, r["hold_id"]),
                                   reason="hold timed out"))
            for r in await expiry.due_holds(db, now, limit, after)]


def cursor_of(cmd: LedgerCommand) -> Cursor:
    if isinstance(cmd, ExpireLot):
        return cmd.occurred_at, str(cmd.lot_id)
    assert isinstance(cmd, ExpireHold)
    return cmd.occurred_at, cmd.hold_id


async def due_commands(db: asyncpg.Connection, now: datetime, limit: int = 100_000) -> list[LedgerCommand]:
    """Everything due now (for tests and one-off sweeps): lots first, then holds."""
    return await due_lots(db, now, limit) + await due_holds(db, now, limit)


def sweeper(metrics: SweepMetrics, interval_s: float, batch_size: int = 2000) -> Job:
    """The sweeper as a periodic job: due lots first, then timed-out holds, a page per transaction, walking forward
    by expiry (the cursor is the phase and the last command's place)."""
    phases = ((due_lots, "lot"), (due_holds, "hold"))

    async def page(uow: UnitOfWork, now: datetime, cursor: tuple[int, Cursor] | None) -> Page:
        phase, after = cursor or (0, None)
        find, kind = phases[phase]
        commands = await find(uow.db, now, batch_size, after)
        for cmd in commands:
            uow.emit(cmd, at=now, subject=cmd.idempotency_key, source=SOURCE)
        uow.after_commit.append(lambda: metrics.sent.labels(kind).inc(len(commands)))
        if len(commands) == batch_size:
            return Page(len(commands), (phase, cursor_of(commands[-1])))
        return Page(len(commands), (phase + 1, None) if phase + 1 < len(phases) else None)

    return Job("sweeper", page, interval_s)


def totals_job(metrics: TotalsMetrics, interval_s: float) -> Job:
    """Export each programme's figures (cheap: one small table and a count of accounts)."""

    async def page(uow: UnitOfWork, now: datetime, cursor: object) -> Page:
        found = await totals.programme_figures(uow.db)
        for f in found:
            for measure in totals.MEASURES:
                metrics.points.labels(f.program_id, measure).set(f.get(measure))
            metrics.members.labels(f.program_id).set(await totals.members_of(uow.db, f.program_id))
        return Page(len(found))

    return Job("programme-totals", page, interval_s)


def verify_job(metrics: TotalsMetrics, interval_s: float, first_after_s: float,
               log: Callable[[str], None] = lambda _: None) -> Job:
    """`jifen ledger verify` on a schedule, its result a metric an alert watches. It reads every entry: daily by
    default, and not right at start."""

    async def page(uow: UnitOfWork, now: datetime, cursor: object) -> Page:
        report = await verify(uow.db)
        metrics.verify_ok.labels().set(1 if report.ok else 0)
        metrics.verify_problems.labels().set(len(report.problems))
        for problem in report.problems[:5]:
            log(problem)
        return Page(len(report.checked))

    return Job("ledger-verify", page, interval_s, first_after_s)
