"""Members' referral codes: one per member and programme, unique in the programme."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

import asyncpg

from services.referral.codes import new_code
from services.referral.repository import columns

CODE_ATTEMPTS = 5  # a new code that collides with an issued one is drawn again


async def issue(db: asyncpg.Connection, program_id: str, member_id: str, at: datetime,
                draw: Callable[[], str] = new_code, attempts: int = CODE_ATTEMPTS) -> asyncpg.Record | None:
    """The member's code: the one issued before, or a new one drawn (again when it is another member's already).
    None when every draw collided."""
    for _ in range(attempts):
        try:
            async with db.transaction():
                await db.execute("INSERT INTO codes (program_id, member_id, code, created_at) VALUES ($1, $2, $3, $4) "
                                 "ON CONFLICT (program_id, member_id) DO NOTHING", program_id, member_id, draw(), at)
        except asyncpg.UniqueViolationError:
            continue  # a collision: draw another
        return await db.fetchrow("SELECT code, created_at FROM codes WHERE program_id = $1 AND member_id = $2",
                                 program_id, member_id)
    return None


async def owners(db: asyncpg.Connection, codes: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """The members whose codes these are, by (programme, code)."""
    wanted = sorted(set(codes))
    if not wanted:
        return {}
    rows = await db.fetch(
        """SELECT c.program_id, c.code, c.member_id FROM codes c
           JOIN unnest($1::text[], $2::text[]) AS u(p, code) ON c.program_id = u.p AND c.code = u.code""",
        *columns(wanted, 2))
    return {(r["program_id"], r["code"]): r["member_id"] for r in rows}

