"""A periodic job across processes of one service, over real PostgreSQL: the process that takes the job's lock runs
the round, the other is standby, and each says which it is in `jifen_job_leader` (the alert rules read it with the
last success: deploy/prometheus/tests/jifen_test.yml has the same two processes)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shared.jobs import Job, Page
from shared.service import ServiceSpec
from shared.settings import Settings
from shared.testing import ServiceHarness
from shared.uow import UnitOfWork
from tests.support import Infra

MIGRATIONS = Path(__file__).parent / "kit_migrations"
NOW = datetime.now(UTC).replace(microsecond=0)


class Gate:
    """A job's page that waits until it is let through, so one process is mid-round while the other tries; it
    fails while `broken`."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.open = asyncio.Event()
        self.broken = False

    async def page(self, uow: UnitOfWork, now: datetime, cursor: Any) -> Page:
        self.entered.set()
        await asyncio.wait_for(self.open.wait(), 30)
        if self.broken:
            raise ConnectionError("the database went away mid-round")
        return Page(1)

    def close(self) -> None:
        self.entered.clear()
        self.open.clear()


def process(gate: Gate) -> ServiceSpec:
    """One process of the service: its own spec, registry and engine, as a second replica would have."""
    return ServiceSpec(name="kit", settings=Settings(schema_name="kit"), migrations=MIGRATIONS,
                       jobs=[Job("slow", gate.page, interval_s=60)])


def sample(harness: ServiceHarness, metric: str) -> float | None:
    return harness.runtime.metrics.registry.get_sample_value(metric, {"service": "kit", "job": "slow"})


def leaders(*processes: ServiceHarness) -> tuple[float | None, ...]:
    return tuple(sample(p, "jifen_job_leader") for p in processes)


async def test_two_processes_of_a_job_on_one_database_report_one_leader_and_one_standby(infra: Infra) -> None:
    gate = Gate()
    url = await infra.new_database("jobs_")
    async with ServiceHarness(process(gate), url) as one, ServiceHarness(process(gate), url) as two:
        first, second = one.runtime.jobs["slow"], two.runtime.jobs["slow"]
        assert leaders(one, two) == (0, 0)  # no round yet: neither runs the job

        running = asyncio.create_task(first.run_once(NOW))
        await asyncio.wait_for(gate.entered.wait(), 10)
        assert await second.run_once(NOW) is None  # the lock is taken: standby
        assert leaders(one, two) == (1, 0)
        gate.open.set()
        assert await running == 1
        assert leaders(one, two) == (1, 0)  # the leader of the latest round until it tries the next one
        assert sample(one, "jifen_job_last_success_timestamp_seconds") is not None
        assert sample(two, "jifen_job_last_success_timestamp_seconds") is None  # standby: no round of its own
        assert one.runtime.metrics.registry.get_sample_value(
            "jifen_job_runs_total", {"service": "kit", "job": "slow", "outcome": "ok"}) == 1
        assert two.runtime.metrics.registry.get_sample_value(
            "jifen_job_runs_total", {"service": "kit", "job": "slow", "outcome": "standby"}) == 1

        # The next round the other process takes the lock first: leadership moves, and both gauges say so.
        gate.close()
        running = asyncio.create_task(second.run_once(NOW))
        await asyncio.wait_for(gate.entered.wait(), 10)
        assert await first.run_once(NOW) is None
        assert leaders(one, two) == (0, 1)
        gate.open.set()
        assert await running == 1

        # A round that fails runs nothing: its process is no leader, whichever took the lock.
        gate.close()
        gate.broken = True
        gate.open.set()
        with pytest.raises(ConnectionError):
            await second.run_once(NOW)
        assert leaders(one, two) == (0, 0)
