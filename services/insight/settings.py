from __future__ import annotations

from shared.settings import Settings


class InsightSettings(Settings):
    http_port: int = 8106
    schema_name: str = "insight"
    # The gauges' round: the KPIs of the last `gauge_days` days, computed and exported for Prometheus's alerts.
    gauge_interval_s: float = 300.0
    gauge_days: int = 30
    # The abuse watch's round: members far outside the programme's norm, announced for the risk desk.
    abuse_watch_interval_s: float = 3600.0
    # The archive of inbound events (archive.py): chunks whose last event is older than this are pruned, hourly.
    archive_retention_days: int = 400
    archive_prune_interval_s: float = 3600.0
