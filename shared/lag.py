"""Consumer lag as Kafka sees it: for the service's consumer group, each partition's end offset less the offset the
group committed. The consumer's own `jifen_consumer_lag_records` is measured after each batch, so it freezes when
the consumer stops; this one keeps counting, which is what an alert on growing lag needs.

Every process of a service reads the same figures from Kafka and exports them all, not a share: any process that
reaches the broker can tell the group's lag, whichever holds a lock or a partition (a figure exported only by a
leader would vanish with its database lock, while the lag grows). Across processes the figures are therefore
copies, and the recording rule takes their max per partition before summing (deploy/prometheus/rules). For that max
to be right, a process that cannot read them any more withdraws its figures after a few rounds instead of keeping
old ones."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import Gauge

from shared.kafka import Cluster, client_options
from shared.metrics import Metrics

log = logging.getLogger(__name__)
KEPT_ROUNDS = 3  # rounds the broker does not answer before this process withdraws its figures


class Figures:
    """The group's figures this process exports: each round's read replaces them (a partition no longer read is
    withdrawn), and `KEPT_ROUNDS` missed rounds in a row withdraw them all, so the max across processes never
    comes from one that lost the broker."""

    def __init__(self, gauge: Gauge, service: str, group: str) -> None:
        self.gauge, self.service, self.group = gauge, service, group
        self.exported: set[tuple[str, int]] = set()
        self.missed_rounds = 0

    def read(self, lags: Mapping[tuple[str, int], int]) -> None:
        self._withdraw(self.exported - set(lags))
        for (topic, partition), lag in lags.items():
            self.gauge.labels(self.service, self.group, topic, str(partition)).set(max(0, lag))
        self.exported, self.missed_rounds = set(lags), 0

    def missed(self) -> None:
        self.missed_rounds += 1
        if self.missed_rounds >= KEPT_ROUNDS:
            self._withdraw(self.exported)
            self.exported = set()

    def _withdraw(self, partitions: set[tuple[str, int]]) -> None:
        for topic, partition in partitions:
            self.gauge.remove(self.service, self.group, topic, str(partition))


async def watch(bootstrap: Cluster | str, group: str, topics: Sequence[str], metrics: Metrics,
                interval_s: float = 15.0) -> None:
    """Export `jifen_consumer_group_lag_records{service,group,topic,partition}` every `interval_s` until cancelled; a
    round the broker does not answer leaves the last figures (for `KEPT_ROUNDS` rounds) and is tried again."""
    figures = Figures(metrics.group_lag, metrics.service, group)
    while True:  # a broker away at start (or a client that fails) is tried again, never given up on
        admin = AIOKafkaAdminClient(**client_options(bootstrap), request_timeout_ms=10_000)
        offsets = AIOKafkaConsumer(**client_options(bootstrap), group_id=None, enable_auto_commit=False)
        try:
            await admin.start()
            await offsets.start()
            while True:
                await _read_round(admin, offsets, group, topics, figures)
                await asyncio.sleep(interval_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the broker away: readiness and the outage line say so; try again
            figures.missed()
            log.debug("group lag clients not started", extra={"error": repr(exc)})
        finally:
            with contextlib.suppress(Exception):
                await offsets.stop()
            with contextlib.suppress(Exception):
                await admin.close()
        await asyncio.sleep(interval_s)


async def _read_round(admin: AIOKafkaAdminClient, offsets: AIOKafkaConsumer, group: str, topics: Sequence[str],
                      figures: Figures) -> None:
    try:
        described = await admin.describe_topics(list(topics))
        partitions = [TopicPartition(t["topic"], p["partition"]) for t in described for p in t["partitions"]]
        committed = await admin.list_consumer_group_offsets(group)
        ends = await offsets.end_offsets(partitions)
        done = {tp: c.offset for tp, c in committed.items() if c.offset >= 0}  # -1: nothing committed yet
        figures.read({(tp.topic, tp.partition): ends[tp] - done.get(tp, 0) for tp in partitions})
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # one round the broker did not answer: the last figures stay a while
        figures.missed()
        log.debug("group lag not read", extra={"error": repr(exc)})
