"""Prometheus metrics every service exposes, on a registry of its own.

One label set everywhere: `service` on every Jifen metric, `program_id` wherever a programme is concerned; the unit
in the name (`_seconds`, `_records`, `_points`, `_total` for counters). A service's own metrics are made with
`counter`, `gauge` and `histogram` below, which put the `service` label first and fill it in.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Sequence
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from shared.logs import REPEATS, RepeatsCollector

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class Metrics:
    def __init__(self, service: str, registry: CollectorRegistry | None = None) -> None:
        self.service = service
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.processed = Counter("jifen_events_processed", "Events applied (committed to the database)",
                                 ["service", "topic", "type"], registry=r)
        self.duplicates = Counter("jifen_duplicates_skipped", "Events skipped because their id was seen before",
                                  ["service", "topic"], registry=r)
        self.ignored = Counter("jifen_events_ignored", "Events of types this service leaves to others (counted, "
                               "offset committed, nothing stored)", ["service", "topic", "type"], registry=r)
        self.dlq = Counter("jifen_dlq_messages", "Messages sent to a dead-letter topic, by reason",
                           ["service", "topic", "reason"], registry=r)
        self.batch_size = Histogram("jifen_batch_records", "Records per consumed batch", ["service"],
                                    buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000), registry=r)
        self.event_to_commit = Histogram("jifen_event_to_commit_seconds",
                                         "From the event's own time to the commit of its effects",
                                         ["service"], buckets=LATENCY_BUCKETS, registry=r)
        self.lag = Gauge("jifen_consumer_lag_records", "Records behind the partition's high watermark, as the "
                         "consumer saw it after its last batch", ["service", "topic", "partition"], registry=r)
        self.group_lag = Gauge("jifen_consumer_group_lag_records", "Records the service's consumer group has not "
                               "committed yet, as Kafka sees it (end offset less committed offset); every process "
                               "of the service reports the whole group, so take the max across processes",
                               ["service", "group", "topic", "partition"], registry=r)
        self.transient_failures = Counter("jifen_transient_failures", "Batches retried after a transient failure",
                                          ["service", "error"], registry=r)
        self.outbox_backlog = Gauge("jifen_outbox_backlog_messages", "Outbox rows not yet published", ["service"],
                                    registry=r)
        self.outbox_oldest_age = Gauge("jifen_outbox_oldest_age_seconds", "Age of the oldest unpublished outbox row",
                                       ["service"], registry=r)
        self.outbox_published = Counter("jifen_outbox_published_messages", "Outbox rows published and acknowledged",
                                        ["service"], registry=r)
        self.ready = Gauge("jifen_ready", "1 when the service can do its work", ["service"], registry=r)
        self.job_runs = Counter("jifen_job_runs", "Rounds of a periodic job, by outcome (ok, failed, standby: "
                                "another process held the job's lock)", ["service", "job", "outcome"], registry=r)
        self.job_items = Counter("jifen_job_items", "What a periodic job's rounds did (lots expired, bonuses paid, "
                                 "inbox rows pruned, ...)", ["service", "job"], registry=r)
        self.job_seconds = Histogram("jifen_job_seconds", "Time of one round of a periodic job", ["service", "job"],
                                     buckets=LATENCY_BUCKETS, registry=r)
        self.job_interval = Gauge("jifen_job_interval_seconds", "How often a periodic job is meant to run (an alert "
                                  "compares it with the last success)", ["service", "job"], registry=r)
        self.job_last_success = Gauge("jifen_job_last_success_timestamp_seconds", "When a periodic job last "
                                      "finished a round in this process (the latest of all processes is when the "
                                      "job last ran)", ["service", "job"], registry=r)
        self.job_leader = Gauge("jifen_job_leader", "1 when this process took the periodic job's lock for its "
                                "latest round, 0 when another process held it (standby) or the round failed",
                                ["service", "job"], registry=r)
        r.register(RepeatsCollector(service, REPEATS))
        # The process's own: CPU, memory, file descriptors, start time, Python's version and collections.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.gc_pause = Histogram("jifen_gc_pause_seconds", "Python's collections of the older generations: the "
                                  "whole process stops for each", ["service", "generation"],
                                  buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5), registry=r)


class Family:
    """A metric of one service: `labels(...)` takes every label but `service`, which it fills in."""

    def __init__(self, metric: Any, service: str) -> None:
        self.metric = metric
        self.service = service

    def labels(self, *values: str) -> Any:
        return self.metric.labels(self.service, *values)

    def remove(self, *values: str) -> None:
        """One child gone (a gauge whose measure no longer exists): absent, not stuck at its last value."""
        self.metric.remove(self.service, *values)

    def clear(self) -> None:
        """Every child gone (a recount starts over); the registry is this service's alone."""
        self.metric.clear()


def counter(registry: CollectorRegistry, service: str, name: str, documentation: str,
            labels: Sequence[str] = ()) -> Family:
    return Family(Counter(name, documentation, ["service", *labels], registry=registry), service)


def gauge(registry: CollectorRegistry, service: str, name: str, documentation: str,
          labels: Sequence[str] = ()) -> Family:
    return Family(Gauge(name, documentation, ["service", *labels], registry=registry), service)


def histogram(registry: CollectorRegistry, service: str, name: str, documentation: str,
              labels: Sequence[str] = (), buckets: Sequence[float] = LATENCY_BUCKETS) -> Family:
    return Family(Histogram(name, documentation, ["service", *labels], buckets=buckets, registry=registry), service)


def scrape(port: int, host: str = "127.0.0.1") -> dict[str, float]:
    """The service's Prometheus samples, by full sample line name (labels included)."""
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


class ReloadCollector:
    """`jifen_programme_reload_runs_total{service,outcome}` from a service's programme catalogue: reloads taken (ok) and
    refused (a broken file: the versions in force stay)."""

    def __init__(self, service: str, catalogue: Any) -> None:
        self.service = service
        self.catalogue = catalogue

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily

        family = CounterMetricFamily("jifen_programme_reload_runs", "Programme folder reloads after a change, by "
                                     "outcome (refused: a broken file; the versions in force stay)",
                                     labels=["service", "outcome"])
        family.add_metric([self.service, "ok"], self.catalogue.reloads[True])
        family.add_metric([self.service, "refused"], self.catalogue.reloads[False])
        yield family
