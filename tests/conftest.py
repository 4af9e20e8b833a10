from __future__ import annotations

import argparse
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from cli import ledger as ledger_cli
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
        # `jifen ledger verify`, run in-process on what the test's services wrote.
        code = await ledger_cli.run(argparse.Namespace(program=None, database_url=w.database_url, schema="ledger"))
        assert code == 0, "jifen ledger verify found a broken rule (see its output above)"
        await conn.execute("SET search_path = ledger")
        entry_id = await conn.fetchval("SELECT min(id) FROM entries")
        if entry_id is not None:
            with pytest.raises(asyncpg.PostgresError, match="append-only"):
                await conn.execute("UPDATE entries SET amount = amount + 1 WHERE id = $1", entry_id)
            with pytest.raises(asyncpg.PostgresError, match="append-only"):
                await conn.execute("DELETE FROM entries WHERE id = $1", entry_id)
    finally:
        await conn.close()
