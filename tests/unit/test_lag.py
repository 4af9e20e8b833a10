"""The group lag one process exports (shared/lag.py): every process reports the whole group, and the rules take the
max per partition across processes, so a process that can no longer read the figures must not keep old ones."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from shared.lag import KEPT_ROUNDS, Figures
from shared.metrics import Metrics


def exported(metrics: Metrics) -> dict[tuple[str, str], float]:
    return {(s.labels["topic"], s.labels["partition"]): s.value for family in metrics.registry.collect()
            if family.name == "jifen_consumer_group_lag_records" for s in family.samples
            if s.labels["service"] == "earn" and s.labels["group"] == "jifen-earn"}


def test_each_round_replaces_the_figures_and_a_partition_no_longer_read_is_withdrawn() -> None:
    metrics = Metrics("earn", CollectorRegistry())
    figures = Figures(metrics.group_lag, "earn", "jifen-earn")
    figures.read({("jifen.purchases", 0): 120, ("jifen.purchases", 1): -3, ("jifen.checkins", 0): 7})
    assert exported(metrics) == {("jifen.purchases", "0"): 120, ("jifen.purchases", "1"): 0,  # never below 0
                                 ("jifen.checkins", "0"): 7}
    figures.read({("jifen.purchases", 0): 80, ("jifen.purchases", 1): 5})
    assert exported(metrics) == {("jifen.purchases", "0"): 80, ("jifen.purchases", "1"): 5}


def test_rounds_the_broker_does_not_answer_keep_the_figures_a_while_then_withdraw_them() -> None:
    metrics = Metrics("earn", CollectorRegistry())
    figures = Figures(metrics.group_lag, "earn", "jifen-earn")
    figures.read({("jifen.purchases", 0): 5000})
    for _ in range(KEPT_ROUNDS - 1):
        figures.missed()
    assert exported(metrics) == {("jifen.purchases", "0"): 5000}  # a blip: the last figures stay
    figures.missed()
    assert exported(metrics) == {}  # cut off from Kafka: this process's old 5000 no longer wins the max
    figures.missed()
    assert exported(metrics) == {}
    figures.read({("jifen.purchases", 0): 10})  # the broker back: figures again, and the count of misses anew
    figures.missed()
    assert exported(metrics) == {("jifen.purchases", "0"): 10}
