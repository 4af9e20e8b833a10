"""The ledger's own timer: due lots and timed-out holds become ledger commands.

The sweeper does not write points itself. It sends `ExpireLot` (key `expire:{lot_id}`) and `ExpireHold`
(key `hold-expire:{hold_id}`) through the outbox onto the commands topic, keyed by member, so the consumer
that owns the member's partition applies them in order with everything else, idempotently. A command whose
key the ledger already has is not sent again; one in flight may be, and is then a harmless replay.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg
from prometheus_client import CollectorRegistry

from services.ledger.repository import LOT_RESERVED, LOT_USED
from shared.contracts.ledger_commands import Cause, ExpireHold, ExpireLot, LedgerCommand
from shared.jobs import Job, Page
from shared.metrics import counter
from shared.uow import UnitOfWork

SOURCE = "jifen.ledger.sweeper"


class SweepMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.sent = counter(registry, "ledger", "jifen_ledger_sweep_commands", "Expiry commands sent by the sweeper",
                            ["kind"])


Cursor = tuple[datetime, str] | None


async def due_lots(db: asyncpg.Connection, now: datetime, limit: int, after: Cursor = None) -> list[LedgerCommand]:
    """Lots past their expiry with unreserved points left and no expiry command yet, in expiry order."""
    rows = await db.fetch(
        f"""SELECT l.id, l.expires_at, a.program_id, a.member_id
           FROM lots l JOIN accounts a ON a.id = l.account_id
           WHERE l.expires_at <= $1
             AND ($3::timestamptz IS NULL OR (l.expires_at, l.id) > ($3, $4::bigint))
             AND NOT EXISTS (SELECT 1 FROM lot_closures c WHERE c.lot_id = l.id)
             AND NOT EXISTS (SELECT 1 FROM commands c WHERE c.idempotency_key = 'expire:' || l.id)
             AND l.amount > {LOT_USED} + {LOT_RESERVED}
           ORDER BY l.expires_at, l.id LIMIT $2""",
        now, limit, after[0] if after else None, int(after[1]) if after else 0)
    return [ExpireLot(idempotency_key=f"expire:{r['id']}", program_id=r["program_id"], member_id=r["member_id"],
                      lot_id=r["id"], occurred_at=r["expires_at"],
                      cause=Cause(source_event_id=f"{SOURCE}|lot:{r['id']}", reason="expiry"))
            for r in rows]


async def due_holds(db: asyncpg.Connection, now: datetime, limit: int, after: Cursor = None) -> list[LedgerCommand]:
    """Open holds past their TTL with no expiry command yet."""
    rows = await db.fetch(
        """SELECT h.hold_id, h.expires_at, a.program_id, a.member_id
           FROM holds h JOIN accounts a ON a.id = h.account_id
           WHERE h.expires_at <= $1
             AND ($3::timestamptz IS NULL OR (h.expires_at, h.hold_id) > ($3, $4::text))
             AND NOT EXISTS (SELECT 1 FROM hold_resolutions s WHERE s.hold_id = h.hold_id)
             AND NOT EXISTS (SELECT 1 FROM commands c WHERE c.idempotency_key = 'hold-expire:' || h.hold_id)
           ORDER BY h.expires_at, h.hold_id LIMIT $2""",
        now, limit, after[0] if after else None, after[1] if after else "")
    return [ExpireHold(idempotency_key=f"hold-expire:{r['hold_id']}", program_id=r["program_id"],
                       member_id=r["member_id"], hold_id=r["hold_id"], occurred_at=r["expires_at"],
                       cause=Cause(source_event_id=f"{SOURCE}|hold:{r['hold_id']}", reason="hold timed out"))
            for r in rows]


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
