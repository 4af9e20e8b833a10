from __future__ import annotations

from prometheus_client import CollectorRegistry

from shared.metrics import counter


class VisitsMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.counted = counter(registry, "visits", "jifen_visits_counted", "Check-ins that counted a new day",
                               ["program_id"])
