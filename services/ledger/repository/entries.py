"""A member's entries, a page at a time with the lots each made, and open holds: the HTTP side's reads."""

from __future__ import annotations

import asyncpg

from services.ledger.repository import LOT_USED


async def entries_page(db: asyncpg.Connection, program_id: str, member_id: str, before_seq: int | None,
                       limit: int) -> tuple[list[asyncpg.Record], dict[int, list[asyncpg.Record]]]:
    """A page of a member's entries, newest first (by the (account, seq) index), with the lots each one made."""
    account_id = await db.fetchval(
        "SELECT id FROM accounts WHERE program_id = $1 AND kind = 'member' AND member_id = $2", program_id, member_id)
    if account_id is None:
        return [], {}
    # One account at a time, so the planner walks the (account_id, seq) index backwards and stops at `limit`.
    rows = await db.fetch(
        """SELECT e.id, e.seq, e.kind, e.amount, e.to_account_id = e.account_id AS incoming, e.balance_after,
                  e.command_key, e.source_event_id, e.rule_id, e.rule_version, e.reason, e.arms, e.tier, e.details,
                  e.occurred_at, e.posted_at, e.hash, e.corrects_entry_id, e.hold_id
           FROM entries e
           WHERE e.account_id = $1 AND e.seq < $2
           ORDER BY e.seq DESC LIMIT $3""",
        account_id, before_seq if before_seq is not None else 2**62, limit)
    lots: dict[int, list[asyncpg.Record]] = {}
    if rows:
        for r in await db.fetch(
                f"""SELECT l.id, l.entry_id, l.amount, l.available_at, l.expires_at, l.amount - {LOT_USED} AS unspent
                   FROM lots l WHERE l.entry_id = ANY($1::bigint[]) ORDER BY l.id""", [r["id"] for r in rows]):
            lots.setdefault(r["entry_id"], []).append(r)
    return rows, lots


async def open_holds_of(db: asyncpg.Connection, program_id: str, member_id: str) -> list[asyncpg.Record]:
    return await db.fetch(
        """SELECT h.hold_id, h.amount, h.placed_at, h.expires_at
           FROM accounts a JOIN holds h ON h.account_id = a.id
           WHERE a.program_id = $1 AND a.kind = 'member' AND a.member_id = $2
             AND NOT EXISTS (SELECT 1 FROM hold_resolutions s WHERE s.hold_id = h.hold_id)
           ORDER BY h.placed_at""", program_id, member_id)
