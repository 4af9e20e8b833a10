"""Redemption's projection of members (tiers from jifen.tiers, blocks from jifen.members), and the row lock that
makes one redemption request at a time per member count its limits."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from services.redemption.domain import MemberView

MemberKey = tuple[str, str]  # (program_id, member_id)


async def lock_member(db: asyncpg.Connection, program_id: str, member_id: str) -> MemberView:
    """The member's row, made if new and locked until the transaction ends: one redemption request at a time per
    member counts the limits and records itself."""
    row = await db.fetchrow(
        """INSERT INTO members (program_id, member_id) VALUES ($1, $2)
           ON CONFLICT (program_id, member_id) DO UPDATE SET program_id = excluded.program_id
           RETURNING tier, blocked""", program_id, member_id)
    return MemberView(row["tier"], row["blocked"])


async def member_view(db: asyncpg.Connection, program_id: str, member_id: str) -> MemberView:
    row = await db.fetchrow("SELECT tier, blocked FROM members WHERE program_id = $1 AND member_id = $2",
                            program_id, member_id)
    return MemberView(row["tier"], row["blocked"]) if row is not None else MemberView()


async def store_tiers(db: asyncpg.Connection, rows: Sequence[tuple[str, str, str, datetime]]) -> None:
    """(program, member, tier, at): each member's tier as of the newest event, never an older one over it."""
    if rows:
        await db.execute(
            """INSERT INTO members (program_id, member_id, tier, tier_at)
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[])
               ON CONFLICT (program_id, member_id) DO UPDATE SET tier = excluded.tier, tier_at = excluded.tier_at
               WHERE members.tier_at IS NULL OR members.tier_at <= excluded.tier_at""",
            *map(list, zip(*rows, strict=True)))


async def store_blocks(db: asyncpg.Connection, rows: Sequence[tuple[str, str, bool, str, datetime]]) -> None:
    """(program, member, blocked, reason, at), newest event wins."""
    if rows:
        await db.execute(
            """INSERT INTO members (program_id, member_id, blocked, block_reason, block_at)
               SELECT * FROM unnest($1::text[], $2::text[], $3::boolean[], $4::text[], $5::timestamptz[])
               ON CONFLICT (program_id, member_id) DO UPDATE SET blocked = excluded.blocked,
                   block_reason = excluded.block_reason, block_at = excluded.block_at
               WHERE members.block_at IS NULL OR members.block_at <= excluded.block_at""",
            *map(list, zip(*rows, strict=True)))
