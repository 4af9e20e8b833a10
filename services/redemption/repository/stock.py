"""The running stock of rewards that keep one: taken by redemptions, given back by rejections and cancellations,
added by hand."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import asyncpg

from services.redemption.programme import Reward


async def take_stock(db: asyncpg.Connection, program_id: str, reward: Reward, quantity: int) -> bool:
    """Reserve `quantity` of the reward's stock; False when there is not that much left. The row lock makes
    concurrent requests take it one after the other, so stock never goes below zero."""
    assert reward.stock is not None
    take = """UPDATE stock SET remaining = remaining - $3 WHERE program_id = $1 AND reward_id = $2
              AND remaining >= $3 RETURNING remaining"""
    if await db.fetchval(take, program_id, reward.reward_id, quantity) is not None:
        return True
    if await _start_stock(db, program_id, reward.reward_id, reward.stock):
        return await db.fetchval(take, program_id, reward.reward_id, quantity) is not None
    return False


async def _start_stock(db: asyncpg.Connection, program_id: str, reward_id: str, initial: int) -> bool:
    """Make the reward's running count from the catalogue's initial stock; False when it existed already."""
    made = await db.fetchval(
        """INSERT INTO stock (program_id, reward_id, initial, remaining) VALUES ($1, $2, $3::integer, $3::integer)
           ON CONFLICT DO NOTHING RETURNING true""", program_id, reward_id, initial)
    return bool(made)


async def give_back_stock(db: asyncpg.Connection, taken: Iterable[tuple[str, str, int]]) -> None:
    """(program, reward, quantity) given back by rejected or cancelled redemptions, summed per reward first."""
    summed: dict[tuple[str, str], int] = {}
    for program_id, reward_id, quantity in taken:
        if quantity:
            summed[(program_id, reward_id)] = summed.get((program_id, reward_id), 0) + quantity
    if summed:
        keys = sorted(summed)  # in key order, so two writers cannot lock the same rows in opposite orders
        await db.execute(
            """UPDATE stock s SET remaining = s.remaining + u.q
               FROM unnest($1::text[], $2::text[], $3::bigint[]) AS u(p, r, q)
               WHERE s.program_id = u.p AND s.reward_id = u.r""",
            [k[0] for k in keys], [k[1] for k in keys], [summed[k] for k in keys])


async def add_stock(db: asyncpg.Connection, program_id: str, reward: Reward, quantity: int, key: str, added_by: str,
                    now: datetime) -> tuple[bool, int]:
    """Add stock once per key; returns whether it was added now (False: a replay) and what is left."""
    assert reward.stock is not None
    added = await db.fetchval(
        """INSERT INTO stock_additions (program_id, reward_id, idempotency_key, quantity, added_at, added_by)
           VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING true""",
        program_id, reward.reward_id, key, quantity, now, added_by)
    await _start_stock(db, program_id, reward.reward_id, reward.stock)
    if added:
        left = await db.fetchval("""UPDATE stock SET remaining = remaining + $3 WHERE program_id = $1
                                    AND reward_id = $2 RETURNING remaining""", program_id, reward.reward_id, quantity)
    else:
        left = await db.fetchval("SELECT remaining FROM stock WHERE program_id = $1 AND reward_id = $2",
                                 program_id, reward.reward_id)
    return bool(added), int(left)


async def stock_left(db: asyncpg.Connection, program_id: str) -> dict[str, int]:
    """The running counts of the programme's rewards that have one (a reward never redeemed has its initial)."""
    rows = await db.fetch("SELECT reward_id, remaining FROM stock WHERE program_id = $1", program_id)
    return {r["reward_id"]: int(r["remaining"]) for r in rows}


async def every_stock(db: asyncpg.Connection) -> list[asyncpg.Record]:
    return await db.fetch("SELECT program_id, reward_id, remaining FROM stock")

