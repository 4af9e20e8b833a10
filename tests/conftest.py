from __future__ import annotations

import argparse
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from cli import ledger as ledger_cli
from services.earn.app import spec as earn_spec
from services.ledger.app import spec as ledger_spec
from shared.testing import Pipeline, ServiceHarness
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
    await check_ledger_invariants(w.database_url)


@pytest.fixture
async def earn_ledger(infra: Infra) -> AsyncIterator[Pipeline]:
    """Earn and the ledger on one fresh database, chained without Kafka (shared/testing.py); after the test the
    ledger's invariants must hold, as after an end-to-end test."""
    dsn = await infra.new_database("p_")
    async with Pipeline(ServiceHarness(earn_spec(), dsn), ServiceHarness(ledger_spec(), dsn)) as pipeline:
        yield pipeline
    await check_ledger_invariants(dsn)


async def check_ledger_invariants(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        if not await conn.fetchval("SELECT to_regclass('ledger.entries') IS NOT NULL"):
            return  # the test ran no ledger
        # `jifen ledger verify`, run in-process on what the test's services wrote.
        code = await ledger_cli.run(argparse.Namespace(program=None, database_url=database_url, schema="ledger"))
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
