"""The commands the ledger has seen, each with its outcome, and the admin calls' commands sent through the outbox."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg


async def known_commands(db: asyncpg.Connection, keys: Sequence[str]) -> dict[str, bytes]:
    rows = await db.fetch("SELECT idempotency_key, payload_hash FROM commands WHERE idempotency_key = ANY($1::text[])",
                          list(keys))
    return {r["idempotency_key"]: bytes(r["payload_hash"]) for r in rows}


async def claim_commands(db: asyncpg.Connection, rows: Sequence[tuple[str, bytes, str, str, str, str, str | None]],
                         received_at: datetime) -> int:
    """Record commands as seen; returns how many were new (fewer means a concurrent writer claimed some)."""
    if not rows:
        return 0
    cols = list(zip(*rows, strict=True))
    claimed = await db.fetch(
        """INSERT INTO commands (idempotency_key, payload_hash, command_type, program_id, member_id, outcome,
                                 reason, received_at)
           SELECT k, h, t, p, m, o, r, $8 FROM unnest($1::text[], $2::bytea[], $3::text[], $4::text[], $5::text[],
                                                       $6::text[], $7::text[]) AS u(k, h, t, p, m, o, r)
           ON CONFLICT DO NOTHING RETURNING 1""",
        *[list(c) for c in cols], received_at)
    return len(claimed)


async def record_admin_command(db: asyncpg.Connection, key: str, program_id: str, sent_at: datetime) -> bool:
    """Note an admin call's command as sent, in the transaction that puts it in the outbox; False when that key
    was sent before (a retry: the same command, not to be sent again)."""
    return await db.fetchval(
        """INSERT INTO admin_commands (idempotency_key, program_id, sent_at) VALUES ($1, $2, $3)
           ON CONFLICT DO NOTHING RETURNING true""", key, program_id, sent_at) is not None


async def command_outcome(db: asyncpg.Connection, key: str) -> tuple[asyncpg.Record | None, list[asyncpg.Record]]:
    """A command's stored outcome (posted or rejected, and why) and the entries it posted; None while the ledger
    has not applied it."""
    found = await db.fetchrow("SELECT outcome, reason FROM commands WHERE idempotency_key = $1", key)
    if found is None:
        return None, []
    rows = await db.fetch(
        """SELECT e.id, a.member_id, e.seq, e.kind, e.balance_after,
                  CASE WHEN e.to_account_id = e.account_id THEN e.amount ELSE -e.amount END AS amount
           FROM entries e JOIN accounts a ON a.id = e.account_id
           WHERE e.command_key = $1 ORDER BY e.id""", key)
    return found, rows


async def admin_command_sent(db: asyncpg.Connection, key: str) -> bool:
    return bool(await db.fetchval("SELECT EXISTS (SELECT 1 FROM admin_commands WHERE idempotency_key = $1)", key))
