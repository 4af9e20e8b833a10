"""Rebuild a programme's insight projection from the topics it is made of: clear its rows, then replay every topic
the insight service reads from the first offset to the end as it stands when the rebuild starts, through the live
handler, each event once.

The projection's sums are additive, so the replay dedupes by CloudEvent id itself (the outbox relays publish at
least once: a topic may hold a record twice), and records what it applied in the live service's inbox, in the same
transaction: when the live consumer resumes, what the rebuild applied is a duplicate to it, and what came after the
rebuild's end is new. While it runs it holds the projection's lock: the live batches and abuse-watch rounds wait
(they retry). The rebuild announces nothing and sends nothing to a DLQ: records the live service skipped or
refused are skipped here too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from pydantic import ValidationError

from services.insight import app, repository
from services.insight.handlers import ProjectInsight
from services.insight.settings import InsightSettings
from shared import db, keys
from shared.envelope import BadMessage, parse
from shared.service import Runtime
from shared.subscription import Route, Subscription
from shared.uow import UnitOfWork

LOCK_WAIT_S = 30  # the live service's batches are short; a lock held longer than this is held by something else


@dataclass
class Topic:
    """What the replay did with one topic's records."""

    read: int = 0
    applied: int = 0  # the programme's events, each once
    duplicates: int = 0  # another copy of an event already applied


@dataclass(frozen=True)
class Rebuilt:
    topics: dict[str, Topic]
    members: int
    seconds: float

    @property
    def read(self) -> int:
        return sum(t.read for t in self.topics.values())

    @property
    def applied(self) -> int:
        return sum(t.applied for t in self.topics.values())

    @property
    def duplicates(self) -> int:
        return sum(t.duplicates for t in self.topics.values())


class RebuildError(RuntimeError):
    pass


class Replayed(UnitOfWork):
    """The rebuild's unit of work: the events it hands over are new to the projection (the rebuild deduped them);
    each id goes into the live inbox, unless the live service claimed it already."""

    async def claim(self, event_ids: Sequence[str], replays: Any = None) -> set[str]:
        if event_ids:
            await self.db.execute("INSERT INTO inbox (event_id) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
                                  list(event_ids))
        return set(event_ids)


@dataclass
class Selection:
    """Which records of the topics are the programme's events, each once: what the live consumer applied."""

    program_id: str
    routes: dict[str, Route]
    prefix: str
    tolerance: timedelta
    seen: set[str] = field(default_factory=set)
    topics: dict[str, Topic] = field(default_factory=dict)

    def pick(self, records: list[ConsumerRecord[Any, Any]]) -> list[ConsumerRecord[Any, Any]]:
        picked = []
        for record in records:
            counts = self.topics.setdefault(record.topic.removeprefix(self.prefix), Topic())
            counts.read += 1
            event_id = self._event_of_programme(record)
            if event_id is None:
                continue
            if event_id in self.seen:
                counts.duplicates += 1
                continue
            self.seen.add(event_id)
            counts.applied += 1
            picked.append(record)
        return picked

    def _event_of_programme(self, record: ConsumerRecord[Any, Any]) -> str | None:
        """The record's event id if it is an event of the programme the live consumer applied, else None: another
        programme's, a type insight leaves to others, or a record the live consumer sent to the DLQ."""
        try:
            event = parse(record.value, record.headers or ())
            route = self.routes[record.topic.removeprefix(self.prefix)]
            found = route.contract_and_handler(event.type)
            if found is None or not isinstance(event.data, dict):
                return None
            data = found[0].model_validate(event.data)
        except (BadMessage, ValidationError):
            return None
        if getattr(data, "program_id", None) != self.program_id:
            return None
        sent = datetime.fromtimestamp(record.timestamp / 1000, UTC)
        if route.channel.external and event.time > sent + self.tolerance:
            return None  # refused as `future_event` by the live consumer, whose clock read about when it was sent
        return event.event_id


async def rebuild(settings: InsightSettings, program_id: str, progress: Callable[[str], None] = lambda _: None,
                  batch_size: int = 2000) -> Rebuilt:
    started = time.monotonic()
    base = app.spec(settings)
    project = base.subscriptions[0].handler
    assert isinstance(project, ProjectInsight)
    if program_id not in project.catalogue.versions:
        known = ", ".join(sorted(project.catalogue.versions))
        raise RebuildError(f"no programme {program_id!r} in {settings.programmes_dir} (the programmes are {known})")
    # The live handler, outside the lock it would wait for, subscribed to the same types with the same others.
    replaying = replace(project, rebuilding=True)
    spec = replace(base, subscriptions=[Subscription(replaying, types=s.types, others=s.others)
                                        for s in base.subscriptions if not s.group])  # not the archive's
    lock = await db.connect(settings.asyncpg_dsn, settings.schema_name)  # first: a database away is said at once
    try:
        runtime = Runtime.of(spec)
        await runtime.open_storage()
        assert runtime.engine is not None
        engine = runtime.engine
        try:
            await _take_projection(lock, settings.schema_name)
            consumer = runtime.consumer()
            consumer.unit_of_work = lambda: Replayed(engine, spec.schema, spec.source, settings.topic_prefix)
            selection = Selection(program_id, consumer.routes, settings.topic_prefix,
                                  timedelta(seconds=settings.future_tolerance_s))

            async def apply(records: list[ConsumerRecord[Any, Any]]) -> None:
                picked = selection.pick(records)
                if picked:
                    await consumer.process(picked)

            # The topics are reached before anything is cleared: a broker away leaves the projection as it was.
            async with _partitions(settings, consumer.topics) as (reader, partitions):
                async with lock.transaction():
                    await repository.clear(lock, program_id)
                progress(f"cleared programme {program_id}'s insight projection")
                await _replay(reader, partitions, apply, batch_size,
                              lambda left: progress(f"{_counts(selection.topics)}; {left} partitions to go"))
            members = await lock.fetchval("SELECT count(*) FROM members WHERE program_id = $1", program_id)
        finally:
            await engine.dispose()
    finally:
        await lock.close()  # releases the locks
    every = {topic: selection.topics.get(topic, Topic()) for topic in consumer.routes}
    return Rebuilt(every, int(members), time.monotonic() - started)


async def _take_projection(lock: asyncpg.Connection, schema: str) -> None:
    """The rebuild's own lock at once, then the projection's, once the live batches under way have committed."""
    if not await lock.fetchval("SELECT pg_try_advisory_lock($1)", db.advisory_key(keys.insight_rebuild_lock(schema))):
        raise RebuildError("another `jifen insight rebuild` is running on this database")
    deadline = time.monotonic() + LOCK_WAIT_S
    while not await lock.fetchval("SELECT pg_try_advisory_lock($1)", repository.lock_key(schema)):
        if time.monotonic() > deadline:
            raise RebuildError(f"the insight projection's lock stayed taken for {LOCK_WAIT_S}s")
        await asyncio.sleep(0.05)


def _counts(topics: dict[str, Topic]) -> str:
    return ", ".join(f"{topic} {t.read:,} read / {t.applied:,} applied" for topic, t in sorted(topics.items()))


@asynccontextmanager
async def _partitions(settings: InsightSettings, topics: list[str]
                      ) -> AsyncIterator[tuple[AIOKafkaConsumer, list[TopicPartition]]]:
    """A consumer of every partition of the topics (without a group: it commits nothing), once it has them."""
    consumer = AIOKafkaConsumer(*topics, **settings.kafka.options(), group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    try:
        await consumer.start()
        deadline = time.monotonic() + 30
        while not consumer.assignment():
            if time.monotonic() > deadline:
                raise RebuildError(f"none of {topics} exists on {settings.kafka_bootstrap}")
            await asyncio.sleep(0.1)
        yield consumer, sorted(consumer.assignment())
    finally:
        await consumer.stop()


async def _replay(consumer: AIOKafkaConsumer, partitions: list[TopicPartition],
                  apply: Callable[[list[ConsumerRecord[Any, Any]]], Any], batch_size: int,
                  progress: Callable[[int], None]) -> None:
    """Every record of the partitions, from the first offset to the end as it is now, applied batch by batch."""
    await consumer.seek_to_beginning(*partitions)
    ends = await consumer.end_offsets(partitions)
    left = {tp for tp in partitions if ends[tp] > 0}
    reported = time.monotonic()
    while left:
        fetched = await consumer.getmany(*left, timeout_ms=1000, max_records=batch_size)
        for tp, records in fetched.items():
            mine = [r for r in records if r.offset < ends[tp]]
            if mine:
                await apply(mine)
        for tp in list(left):
            if await consumer.position(tp) >= ends[tp]:
                left.discard(tp)
        if time.monotonic() - reported > 5:
            reported = time.monotonic()
            progress(len(left))
