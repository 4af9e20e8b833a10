"""The visits table: one read and one multi-row write per batch."""

from __future__ import annotations

import asyncpg

from tests.example.visits.domain import Visits

Member = tuple[str, str]  # (program_id, member_id)


async def load(db: asyncpg.Connection, members: list[Member]) -> dict[Member, Visits]:
    rows = await db.fetch("SELECT program_id, member_id, days, last_day FROM visits "
                          "WHERE (program_id, member_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
                          [p for p, _ in members], [m for _, m in members])
    return {(r["program_id"], r["member_id"]): Visits(r["days"], r["last_day"]) for r in rows}


async def store(db: asyncpg.Connection, changed: dict[Member, Visits]) -> None:
    await db.execute(
        "INSERT INTO visits SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::date[]) "
        "ON CONFLICT (program_id, member_id) DO UPDATE SET days = excluded.days, last_day = excluded.last_day",
        [p for p, _ in changed], [m for _, m in changed], [v.days for v in changed.values()],
        [v.last_day for v in changed.values()])


async def of_member(db: asyncpg.Connection, program_id: str, member_id: str) -> Visits | None:
    row = await db.fetchrow("SELECT days, last_day FROM visits WHERE program_id = $1 AND member_id = $2",
                            program_id, member_id)
    return Visits(row["days"], row["last_day"]) if row else None


async def forget(db: asyncpg.Connection, program_id: str, member_id: str) -> bool:
    return await db.fetchval("DELETE FROM visits WHERE program_id = $1 AND member_id = $2 RETURNING true",
                             program_id, member_id) is not None
