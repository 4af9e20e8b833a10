"""The what-if's history from the topics on a real Kafka (no service): partitions merged by event time whatever order
they are read in, the programme's events of [start, end) each once, an event met after the merge passed its time
counted as late; and a clear refusal when neither the topics nor the archive can serve the period."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import timedelta

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete

import cli.whatif.history
from cli.whatif.history import HistoryError, history
from deploy.local.infra import create_topics
from shared.contracts import topics
from shared.envelope import parse
from shared.kafka import client_options
from tests.integration.test_insight_archive import START, Sent, expected, mixed_feed
from tests.support import Infra, send

NOWHERE = "http://127.0.0.1:9"  # nothing answers there


async def produce(infra: Infra, prefix: str, sent: list[Sent]) -> None:
    """Each topic's records in the order given."""
    by_topic: dict[str, list[Sent]] = {}
    for s in sent:
        by_topic.setdefault(s.topic, []).append(s)
    for topic, items in by_topic.items():
        await send(infra.bootstrap, prefix + topic, [(s.key, s.value, s.headers) for s in items])


async def test_the_topics_give_the_programme_s_period_in_time_order_each_event_once(
        infra: Infra, monkeypatch: pytest.MonkeyPatch) -> None:
    prefix = f"h{uuid.uuid4().hex[:8]}."
    await create_topics(infra.bootstrap, topics.all_topics(prefix), 3)
    sent = mixed_feed(400, run="h", seed=5)
    await produce(infra, prefix, [*sent, *sent[50:70]])  # and some a relay published twice
    start, end = START + timedelta(hours=1), START + timedelta(hours=6)
    found = await history("retail", start, end, source="topics", kafka=infra.bootstrap, insight_url=NOWHERE,
                          api_key=None, prefix=prefix)
    events = [e async for e in found]
    assert found.source == "topics" and found.late == 0
    assert events == [parse(line, ()) for line in expected(sent, "retail", start, end)]

    # A backfill: an event of two hours in, sent after events hours later on its partition, beyond the window.
    backfill = replace(mixed_feed(1, run="late", seed=1, start=START + timedelta(hours=2), span=timedelta(hours=1))[0],
                       archived=True)
    await produce(infra, prefix, [backfill] * 2)
    monkeypatch.setattr(cli.whatif.history, "FETCH", 5)  # a few records a fetch, as a long history is read
    found = await history(backfill.program_id, None, START + timedelta(days=1), source="auto",
                          kafka=infra.bootstrap, insight_url=NOWHERE, api_key=None, prefix=prefix)
    events = [e async for e in found]
    assert found.source == "topics" and found.late == 1 and found.count == len(events)
    assert sorted(events, key=lambda e: (e.time, e.event_id)) == [
        parse(line, ()) for line in expected([*sent, backfill], backfill.program_id)]
    assert events != sorted(events, key=lambda e: (e.time, e.event_id))  # handed on when met, and said

    # The records deleted (retention passed) and no archive reachable: said, with both reasons.
    admin = AIOKafkaAdminClient(**client_options(infra.bootstrap))
    consumer = AIOKafkaConsumer(**client_options(infra.bootstrap), group_id=None)
    await admin.start()
    await consumer.start()
    try:
        described = await admin.describe_topics([prefix + topics.PURCHASES])
        partitions = [TopicPartition(prefix + topics.PURCHASES, p["partition"]) for p in described[0]["partitions"]]
        ends = await consumer.end_offsets(partitions)
        await admin.delete_records({tp: RecordsToDelete(end) for tp, end in ends.items() if end > 0})
    finally:
        await consumer.stop()
        await admin.close()
    with pytest.raises(HistoryError, match=r"no API key .* the topics cannot serve the period"):
        await history("default", None, START + timedelta(days=1), kafka=infra.bootstrap, insight_url=NOWHERE,
                      api_key=None, prefix=prefix)
    with pytest.raises(HistoryError, match=r"the topics cannot serve the period .*did not answer"):
        await history("default", START, START + timedelta(days=1), kafka=infra.bootstrap, insight_url=NOWHERE,
                      api_key="k", prefix=prefix)
    with pytest.raises(HistoryError, match="no longer hold the period's start"):
        await history("default", START, START + timedelta(days=1), source="topics", kafka=infra.bootstrap,
                      insight_url=NOWHERE, api_key=None, prefix=prefix)
    with pytest.raises(HistoryError, match="is not before"):
        await history("default", START, START, kafka=infra.bootstrap, insight_url=NOWHERE, api_key=None)
