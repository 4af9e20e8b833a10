from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from services.ledger.verify import verify
from tests.support import Infra, World, make_world, start_infra


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    started = start_infra()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
async def world(infra: Infra) -> AsyncIterator[World]:
    """An isolated database and topic prefix; after the test the ledger's invariants must hold and its
    entries must refuse UPDATE and DELETE."""
    w = await make_world(infra)
    try:
        yield w
    finally:
        for proc in w.processes:
            proc.stop()
    await check_ledger_invariants(w)


async def check_ledger_invariants(w: World) -> None:
    conn = await w.db()
    try:
        if not await conn.fetchval("SELECT to_regclass('ledger.entries') IS NOT NULL"):
            return  # the test ran no ledger
        await conn.execute("SET search_path = ledger")
        report = await verify(conn)
        assert report.ok, "ledger invariants broken:\n" + "\n".join(report.problems)
        entry_id = await conn.fetchval("SELECT min(id) FROM entries")
        if entry_id is not None:
            with pytest.raises(asyncpg.PostgresError, match="append-only"):
                await conn.execute("UPDATE entries SET amount = amount + 1 WHERE id = $1", entry_id)
            with pytest.raises(asyncpg.PostgresError, match="append-only"):
                await conn.execute("DELETE FROM entries WHERE id = $1", entry_id)
    finally:
        await conn.close()
