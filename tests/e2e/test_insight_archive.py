"""Insight's archive through Kafka, with insight as a process: a feed of every archived topic for two programmes is
archived exactly once though insight is killed mid-feed and its archive group is then sent every record again; the
archive's NDJSON of a period equals the topics' history of it; once the topics' records are deleted (their retention
passed), `history(source="auto")` reads the archive and gives the same events, and the what-if gives the same answer
from the archive as it did from the topics."""

from __future__ import annotations

import dataclasses
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from aiokafka.structs import OffsetAndMetadata

from cli.whatif import engine
from cli.whatif.history import HistoryError, Source, history
from cli.whatif.result import Comparison
from services.insight.archive import TOPICS
from shared.envelope import CloudEvent, parse
from shared.kafka import client_options
from shared.settings import Settings
from tests.integration.test_insight_archive import START, Sent, expected, mixed_feed
from tests.support import ServiceProcess, World, send, wait_for

pytestmark = pytest.mark.e2e
END = START + timedelta(days=1)


async def produce(world: World, sent: list[Sent]) -> None:
    by_topic: dict[str, list[Sent]] = {}
    for s in sent:
        by_topic.setdefault(s.topic, []).append(s)
    for topic, items in by_topic.items():
        await send(world.infra.bootstrap, world.topic(topic), [(s.key, s.value, s.headers) for s in items])


async def archived(insight: ServiceProcess) -> int:
    total = 0
    for program_id in ("default", "retail"):
        status, summary = insight.get(f"/v1/programs/{program_id}/archive/summary")
        assert status == 200, summary
        total += summary["events"]
    return total


async def _more(count: Any, than: int) -> bool:
    return bool(await count > than)


async def partitions(world: World) -> list[TopicPartition]:
    admin = AIOKafkaAdminClient(**client_options(world.infra.bootstrap))
    await admin.start()
    try:
        described = await admin.describe_topics([world.topic(t) for t in TOPICS])
    finally:
        await admin.close()
    return [TopicPartition(t["topic"], p["partition"]) for t in described for p in t["partitions"]]


async def rewind(world: World, group: str) -> None:
    """The group's committed offsets back to the first record: every batch delivered to it again."""
    consumer = AIOKafkaConsumer(**client_options(world.infra.bootstrap), group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        found = await partitions(world)
        consumer.assign(found)
        await consumer.commit({tp: OffsetAndMetadata(0, "") for tp in found})
    finally:
        await consumer.stop()


async def caught_up(world: World, group: str) -> bool:
    """The group has committed every record of the archived topics."""
    found = await partitions(world)
    admin = AIOKafkaAdminClient(**client_options(world.infra.bootstrap))
    consumer = AIOKafkaConsumer(**client_options(world.infra.bootstrap), group_id=None)
    await admin.start()
    await consumer.start()
    try:
        ends = await consumer.end_offsets(found)
        committed = await admin.list_consumer_group_offsets(group)
    finally:
        await consumer.stop()
        await admin.close()
    return all(tp in committed and committed[tp].offset >= end for tp, end in ends.items() if end > 0)


async def events_of(world: World, insight: ServiceProcess, source: Source, start: datetime | None = None,
                    end: datetime = END) -> tuple[str, list[CloudEvent]]:
    found = await history("default", start, end, source=source, kafka=world.infra.bootstrap,
                          insight_url=insight.url(""), api_key=world.token, prefix=world.prefix)
    return found.source, [e async for e in found]


async def test_the_archive_keeps_each_event_once_and_serves_the_history_the_topics_no_longer_hold(
        world: World) -> None:
    sent = mixed_feed(900, run="e")
    want = len({s.event_id for s in sent if s.archived})
    insight = await world.service("insight").start().ready()
    await produce(world, sent[:450])
    await wait_for(lambda: _more(archived(insight), 0), timeout=60, what="the archive to be under way")
    insight.kill9()  # mid-feed: what it stored but had not committed the offsets of comes again
    await produce(world, sent[450:] + sent[100:160])  # the rest, and some events a relay published twice
    insight = await world.service("insight").start().ready()
    await wait_for(lambda: _more(archived(insight), want - 1), timeout=90, what="the archive to catch up")
    insight.stop()
    await rewind(world, f"{world.prefix}jifen-insight-archive")  # every batch to the archive's group again
    insight = await world.service("insight").start().ready()
    await wait_for(lambda: caught_up(world, f"{world.prefix}jifen-insight-archive"), timeout=90,
                   what="the archive's group to read every record again")
    assert await archived(insight) == want
    lines = [parse(line, ()) for line in expected(sent, "default", None, END)]

    source, topics_events = await events_of(world, insight, "topics")
    assert source == "topics" and topics_events == lines
    source, archive_events = await events_of(world, insight, "archive")
    assert source == "archive" and archive_events == lines
    period = (START + timedelta(hours=2), START + timedelta(hours=5))
    within = [parse(line, ()) for line in expected(sent, "default", *period)]
    assert (await events_of(world, insight, "auto", *period)) == ("topics", within)
    assert (await events_of(world, insight, "archive", *period))[1] == within

    async def what_if(events: list[CloudEvent], source: str) -> Comparison:
        return await engine.run(events, program_id="default", folder=Settings().programmes_dir, draft=None,
                                start=period[0], end=period[1], source=source)

    from_topics = await what_if((await events_of(world, insight, "topics"))[1], "topics")

    # The topics' retention passes: every record before the end is deleted.
    admin = AIOKafkaAdminClient(**client_options(world.infra.bootstrap))
    consumer = AIOKafkaConsumer(**client_options(world.infra.bootstrap), group_id=None)
    await admin.start()
    await consumer.start()
    try:
        found = await partitions(world)
        ends = await consumer.end_offsets(found)
        await admin.delete_records({tp: RecordsToDelete(end) for tp, end in ends.items() if end > 0})
        assert all(low == ends[tp] for tp, low in (await consumer.beginning_offsets(found)).items())
    finally:
        await consumer.stop()
        await admin.close()

    assert await events_of(world, insight, "auto") == ("archive", lines)
    assert await events_of(world, insight, "auto", *period) == ("archive", within)
    with pytest.raises(HistoryError, match="no longer hold"):
        await events_of(world, insight, "topics")
    source, again = await events_of(world, insight, "auto")
    from_archive = await what_if(again, source)
    assert dataclasses.replace(from_archive, source="topics") == from_topics
    assert sum(Counter(from_topics.live.issued_by_rule).values()) > 0  # the replay earned something to compare
