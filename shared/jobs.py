"""Periodic jobs (the ledger's expiry sweeper, earn's birthdays, the inbox prune, ...), declared in a service's spec.

A job is a page function: given a unit of work, the round's time and where the last page stopped, it does one
page of work and says how many items it handled and where the next page starts (None: the round is done). The
runner does the rest for every job alike: one leader per job across processes (a PostgreSQL advisory lock held
for the round; a process that cannot take it skips the round), one transaction per page, the interval from
settings, progress in the log for long rounds, metrics (runs by outcome, seconds, items, last success, and
`jifen_job_leader`: whether this process took the lock for its latest round), and a clean stop: at shutdown the
page in hand is finished and committed, then the job stops.

Every process of a service exports its own view of a job, so a question about the job as a whole aggregates over
processes: it last ran at the max of `jifen_job_last_success_timestamp_seconds` (a standby's own last success may be
old while the leader runs the job on time), and `jifen_job_leader` says which process runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from shared import keys
from shared.db import advisory_key
from shared.metrics import Metrics
from shared.uow import UnitOfWork

log = logging.getLogger(__name__)
PROGRESS_EVERY_S = 10.0


@dataclass(frozen=True, slots=True)
class Page:
    items: int
    next: Any = None  # where the next page starts; None: the round is done


PageFn = Callable[[UnitOfWork, datetime, Any], Awaitable[Page]]


@dataclass(frozen=True)
class Job:
    """`page(uow, now, cursor)` does one page; the first page of a round gets cursor None."""

    name: str
    page: PageFn
    interval_s: float
    first_after_s: float = 0.0  # the first round's delay after start (a heavy job need not run at every start)


class JobRunner:
    def __init__(self, job: Job, *, service: str, schema: str, engine: AsyncEngine,
                 unit_of_work: Callable[[], UnitOfWork], metrics: Metrics, clock: Callable[[], datetime]) -> None:
        self.job = job
        self.service = service
        self.engine = engine
        self.unit_of_work = unit_of_work
        self.metrics = metrics
        self.clock = clock
        self.lock_key = advisory_key(keys.job_lock(schema, job.name))
        self.stopping = asyncio.Event()
        metrics.job_interval.labels(service, job.name).set(job.interval_s)
        self.leader = metrics.job_leader.labels(service, job.name)
        self.leader.set(0)  # no round yet: this process runs nothing

    async def run_once(self, now: datetime | None = None) -> int | None:
        """One round at `now` (default: the clock); returns the items handled, or None when another process is
        running this job (it holds the lock)."""
        now = now or self.clock()
        started = time.monotonic()
        try:
            total = await self._locked_round(now, started)
        except BaseException:
            self.leader.set(0)  # this round ran nothing to the end; whether another process can, its gauge says
            raise
        if total is None:
            return None
        elapsed = time.monotonic() - started
        self.metrics.job_runs.labels(self.service, self.job.name, "ok").inc()
        self.metrics.job_seconds.labels(self.service, self.job.name).observe(elapsed)
        self.metrics.job_last_success.labels(self.service, self.job.name).set(time.time())
        if total:
            log.info(f"{self.job.name} done", extra={"job": self.job.name, "items": total,
                                                     "elapsed_s": round(elapsed, 2)})
        return total

    async def _locked_round(self, now: datetime, started: float) -> int | None:
        async with self.engine.connect() as lock_conn:
            raw = (await lock_conn.get_raw_connection()).driver_connection
            assert raw is not None
            if not await raw.fetchval("SELECT pg_try_advisory_lock($1)", self.lock_key):
                self.leader.set(0)
                self.metrics.job_runs.labels(self.service, self.job.name, "standby").inc()
                return None
            self.leader.set(1)
            try:
                return await self._pages(now, started)
            finally:
                with contextlib.suppress(Exception):  # a dropped connection has released the lock already
                    await raw.execute("SELECT pg_advisory_unlock($1)", self.lock_key)

    async def _pages(self, now: datetime, started: float) -> int:
        total, cursor, reported = 0, None, time.monotonic()
        while True:
            async with self.unit_of_work() as uow:
                page = await self.job.page(uow, now, cursor)
                await uow.commit()
            total += page.items
            self.metrics.job_items.labels(self.service, self.job.name).inc(page.items)
            if page.next is None or self.stopping.is_set():
                return total
            cursor = page.next
            if time.monotonic() - reported > PROGRESS_EVERY_S:
                reported = time.monotonic()
                log.info(f"{self.job.name} progress", extra={"job": self.job.name, "items": total,
                                                             "elapsed_s": round(reported - started, 2)})

    async def run(self) -> None:
        """Rounds every `interval_s` until `stopping` is set; a failed round (the database down) is logged and the
        next one tries again."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), self.job.first_after_s)
        while not self.stopping.is_set():
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.metrics.job_runs.labels(self.service, self.job.name, "failed").inc()
                log.warning(f"{self.job.name} failed; retrying next round",
                            extra={"job": self.job.name, "error": repr(exc), "retry_in_s": self.job.interval_s})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.job.interval_s)

    async def stop(self, task: asyncio.Task[None], timeout_s: float = 10.0) -> None:
        """Let the page in hand finish, then stop; cancel it if it takes longer than `timeout_s`."""
        self.stopping.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout_s)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def inbox_prune(retention_s: float, interval_s: float, page_size: int = 5000) -> Job:
    """Forget inbox ids older than `retention_s`, a page at a time (oldest first), so the inbox stops growing.

    The inbox is the first line of dedupe, not the only one: every effect a service has is keyed by its cause
    (ledger commands by `earn:{event}:{rule}`, orders by order id, check-ins by day), so an event replayed after its
    id was pruned changes nothing. A redelivery by Kafka cannot be older than the topic's retention (7 days in the
    stack), which is the default here."""

    async def page(uow: UnitOfWork, now: datetime, cursor: Any) -> Page:
        deleted = await uow.db.fetchval(
            """WITH old AS (SELECT event_id FROM inbox WHERE received_at < $1 ORDER BY received_at LIMIT $2),
                    gone AS (DELETE FROM inbox i USING old WHERE i.event_id = old.event_id RETURNING 1)
               SELECT count(*) FROM gone""",
            now - timedelta(seconds=retention_s), page_size)
        return Page(deleted, True if deleted == page_size else None)

    return Job("inbox-prune", page, interval_s)
