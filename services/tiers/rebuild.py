"""Rebuild a programme's tier projection from the topics it is made of: drop its rows, replay every topic the
tiers service reads from the first offset to the end as it stands when the rebuild starts, then apply the reviews
due by now, exactly as the live service would have.

While it runs it holds the projection's lock: the live service's batches and review pages wait (they retry), and
afterwards replay what they had not committed, which changes nothing twice (contributions and assignments are
stored by key). The rebuild announces nothing: the changes it re-derives were announced when they happened.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer

from services.tiers import app
from services.tiers.handlers import ProjectTiers
from services.tiers.jobs import review
from services.tiers.repository import lock_key
from services.tiers.settings import TiersSettings
from shared import db
from shared.service import Runtime
from shared.subscription import Subscription

TABLES = ("contributions", "members", "changes", "assignments")


@dataclass(frozen=True)
class Rebuilt:
    records: int
    members: int
    changes: int
    seconds: float


class RebuildError(RuntimeError):
    pass


async def rebuild(settings: TiersSettings, program_id: str, now: datetime,
                  progress: Callable[[str], None] = lambda _: None, batch_size: int = 2000) -> Rebuilt:
    started = time.monotonic()
    base = app.spec(settings, clock=lambda: now)
    project = base.subscriptions[0].handler
    assert isinstance(project, ProjectTiers)
    if program_id not in project.catalogue.versions:
        raise RebuildError(f"no programme {program_id!r} in {settings.programmes_dir}")
    # The live handler, reading one programme only, under the lock this rebuild holds, announcing nothing again;
    # subscribed to the same types, with the same treatment of the others.
    replaying = replace(project, program=program_id, rebuilding=True)
    spec = replace(base, use_inbox=False, subscriptions=[
        Subscription(replaying, types=s.types, others=s.others) for s in base.subscriptions])
    runtime = Runtime.of(spec)
    await runtime.open_storage()
    assert runtime.engine is not None
    lock = await db.connect(settings.asyncpg_dsn, settings.schema_name)
    try:
        if not await lock.fetchval("SELECT pg_try_advisory_lock($1)", lock_key(settings.schema_name)):
            raise RebuildError("another rebuild holds the tiers projection's lock")
        async with lock.transaction():
            for table in TABLES:
                await lock.execute(f"DELETE FROM {table} WHERE program_id = $1", program_id)
        progress(f"dropped programme {program_id}'s tier projection")
        consumer = runtime.consumer()
        records = await _replay(settings, consumer.topics, consumer.process, batch_size, progress)
        # The reviews due by now, as the live service's job applies them, but under this rebuild's lock (the live
        # job's pages wait for it) and announcing nothing: those changes were announced when they were due.
        job = review(project.catalogue, project.metrics, settings.schema_name, 0.0, rebuilding=True)
        reviewed = 0
        while True:
            async with runtime.unit_of_work() as uow:
                page = await job.page(uow, now, None if reviewed == 0 else True)
                await uow.commit()
            reviewed += page.items
            if page.next is None:
                break
        members = await lock.fetchval("SELECT count(*) FROM members WHERE program_id = $1", program_id)
        changes = await lock.fetchval("SELECT count(*) FROM changes WHERE program_id = $1", program_id)
    finally:
        await lock.close()  # releases the lock
        await runtime.engine.dispose()
    return Rebuilt(records, int(members), int(changes), time.monotonic() - started)


async def _replay(settings: TiersSettings, topics: list[str], apply: Callable[[list[Any]], Any], batch_size: int,
                  progress: Callable[[str], None]) -> int:
    """Every record of the topics, from the first offset to the end as it is now, applied batch by batch."""
    # Without a group the consumer takes every partition of the topics itself, and commits nothing.
    consumer = AIOKafkaConsumer(*topics, **settings.kafka.options(), group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        deadline = time.monotonic() + 30
        while not consumer.assignment():
            if time.monotonic() > deadline:
                raise RebuildError(f"none of {topics} exists on {settings.kafka_bootstrap}")
            await asyncio.sleep(0.1)
        partitions = sorted(consumer.assignment())
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        left = {tp for tp in partitions if ends[tp] > 0}
        total, reported = 0, time.monotonic()
        while left:
            fetched = await consumer.getmany(*left, timeout_ms=1000, max_records=batch_size)
            for tp, records in fetched.items():
                mine = [r for r in records if r.offset < ends[tp]]
                if mine:
                    await apply(mine)
                    total += len(mine)
            for tp in list(left):
                if await consumer.position(tp) >= ends[tp]:
                    left.discard(tp)
            if time.monotonic() - reported > 5:
                reported = time.monotonic()
                progress(f"replayed {total:,} records ({len(left)} partitions to go)")
        return total
    finally:
        await consumer.stop()
