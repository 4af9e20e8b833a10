"""The sweeper's queries: lots past their expiry and holds past their TTL, with no expiry command yet."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from services.ledger.repository import LOT_RESERVED, LOT_USED
from shared import keys

Cursor = tuple[datetime, str] | None  # the (expires_at, id) of the last command of the page before


async def due_lots(db: asyncpg.Connection, now: datetime, limit: int, after: Cursor = None) -> list[asyncpg.Record]:
    """Lots past their expiry with unreserved points left and no expiry command yet, in expiry order. The key of
    that command is built as `keys.lot_expiry` builds it, from the same prefix."""
    return await db.fetch(
        f"""SELECT l.id, l.expires_at, a.program_id, a.member_id
           FROM lots l JOIN accounts a ON a.id = l.account_id
           WHERE l.expires_at <= $1
             AND ($3::timestamptz IS NULL OR (l.expires_at, l.id) > ($3, $4::bigint))
             AND NOT EXISTS (SELECT 1 FROM lot_closures c WHERE c.lot_id = l.id)
             AND NOT EXISTS (SELECT 1 FROM commands c WHERE c.idempotency_key = $5::text || l.id)
             AND l.amount > {LOT_USED} + {LOT_RESERVED}
           ORDER BY l.expires_at, l.id LIMIT $2""",
        now, limit, after[0] if after else None, int(after[1]) if after else 0, keys.LOT_EXPIRY)


async def due_holds(db: asyncpg.Connection, now: datetime, limit: int, after: Cursor = None) -> list[asyncpg.Record]:
    """Open holds past their TTL with no expiry command yet (its key as `keys.hold_expiry` builds it)."""
    return await db.fetch(
        """SELECT h.hold_id, h.expires_at, a.program_id, a.member_id
           FROM holds h JOIN accounts a ON a.id = h.account_id
           WHERE h.expires_at <= $1
             AND ($3::timestamptz IS NULL OR (h.expires_at, h.hold_id) > ($3, $4::text))
             AND NOT EXISTS (SELECT 1 FROM hold_resolutions s WHERE s.hold_id = h.hold_id)
             AND NOT EXISTS (SELECT 1 FROM commands c WHERE c.idempotency_key = $5::text || h.hold_id)
           ORDER BY h.expires_at, h.hold_id LIMIT $2""",
        now, limit, after[0] if after else None, after[1] if after else "", keys.HOLD_EXPIRY)
