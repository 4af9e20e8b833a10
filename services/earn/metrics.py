"""Earn's Prometheus families: the points it asks the ledger for, and what earned nothing by a rule."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from shared.metrics import counter


class EarnMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.points = counter(registry, "earn", "jifen_earn_points", "Points requested from the ledger",
                              ["program_id", "rule"])
        self.skipped = counter(registry, "earn", "jifen_earn_skipped", "Events that earned nothing by a rule (a cap, "
                               "a second check-in the same day)", ["program_id", "reason"])
