"""Two earn consumers drawing on one programme budget at once (several earn processes, or a rebalance) against
real PostgreSQL: the one that writes second sees the race and retries, so the budget is never overshot."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from services.earn.repository import CapRaced, Usage
from tests.support import Infra

MIGRATIONS = Path(__file__).resolve().parents[2] / "services" / "earn" / "migrations"
BUDGET = ("shop", "2026-11-23")
CAP = ("shop", "ann", "base", "2026-11-23")


async def connect(dsn: str) -> asyncpg.Connection:
    return await asyncpg.connect(dsn, server_settings={"search_path": "earn"})


@pytest.mark.parametrize("limit", ["budget", "cap"])
async def test_the_second_writer_of_a_fresh_limit_retries_and_gets_only_what_is_left(infra: Infra,
                                                                                     limit: str) -> None:
    dsn = await infra.new_database("earn_usage_", "earn", MIGRATIONS)
    first, second = await connect(dsn), await connect(dsn)

    async def take(usage: Usage, wanted: int) -> int:
        if limit == "budget":
            return await usage.take_budget(BUDGET, wanted, 100)
        return await usage.take_cap(CAP, wanted, 100)

    try:
        one, two = Usage(first), Usage(second)
        async with first.transaction():
            # Both read the limit before either writes: no row yet, so nothing to lock, both see 0 used.
            assert await take(one, 80) == 80
            second_tx = second.transaction()
            await second_tx.start()
            assert await take(two, 80) == 80
            await one.flush()
        # The first has committed 80. The second's write-back finds 160 where it expected 80: a race.
        with pytest.raises(CapRaced):
            await two.flush()
        await second_tx.rollback()
        # Retried, it reads the committed 80 (locked now) and gets the 20 that are left.
        retry = Usage(second)
        async with second.transaction():
            assert await take(retry, 80) == 20
            await retry.flush()
        table, key = ("budgets", "program_id = $1 AND period = $2") if limit == "budget" else (
            "points_usage", "program_id = $1 AND member_id = $2 AND rule_id = $3 AND period = $4")
        used = await first.fetchval(f"SELECT points FROM {table} WHERE {key}",
                                    *(BUDGET if limit == "budget" else CAP))
        assert used == 100
    finally:
        await asyncio.gather(first.close(), second.close())
