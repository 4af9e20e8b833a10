"""Consumer lag as Kafka sees it: for the service's consumer group, each partition's end offset less the offset the
group committed. The consumer's own `jifen_consumer_lag_records` is measured after each batch, so it freezes when
the consumer stops; this one keeps counting, which is what an alert on growing lag needs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import Gauge

from shared.kafka import Cluster, client_options
from shared.metrics import Metrics

log = logging.getLogger(__name__)


async def watch(bootstrap: Cluster | str, group: str, topics: Sequence[str], metrics: Metrics,
                interval_s: float = 15.0) -> None:
    """Export `jifen_consumer_group_lag_records{service,group,topic,partition}` every `interval_s` until cancelled; a
    round the broker does not answer leaves the last figures and is tried again."""
    gauge: Gauge = metrics.group_lag
    admin = AIOKafkaAdminClient(**client_options(bootstrap), request_timeout_ms=10_000)
    offsets = AIOKafkaConsumer(**client_options(bootstrap), group_id=None, enable_auto_commit=False)
    try:
        await admin.start()
        await offsets.start()
        while True:
            try:
                described = await admin.describe_topics(list(topics))
                partitions = [TopicPartition(t["topic"], p["partition"]) for t in described for p in t["partitions"]]
                committed = await admin.list_consumer_group_offsets(group)
                ends = await offsets.end_offsets(partitions)
                for tp in partitions:
                    done = committed[tp].offset if tp in committed and committed[tp].offset >= 0 else 0
                    gauge.labels(metrics.service, group, tp.topic, str(tp.partition)).set(max(0, ends[tp] - done))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker away: readiness and the outage line say so; try again
                log.debug("group lag not read", extra={"error": repr(exc)})
            await asyncio.sleep(interval_s)
    finally:
        with contextlib.suppress(Exception):
            await offsets.stop()
        with contextlib.suppress(Exception):
            await admin.close()
