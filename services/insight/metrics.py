"""The insight service's Prometheus families."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from shared.metrics import counter, gauge


class InsightMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.kpi = gauge(registry, "insight", "jifen_insight_kpi", "A programme health indicator over the last "
                         "days (insight's gauge round; docs/insight.md defines each)", ["program_id", "kpi"])
        self.verdict = gauge(registry, "insight", "jifen_insight_kpi_verdict", "The indicator's verdict against the "
                             "source documents' healthy range: 0 ok, 1 watch, 2 act", ["program_id", "kpi"])
        self.entries = counter(registry, "insight", "jifen_insight_entries", "Ledger entries projected",
                               ["program_id"])
        self.abuse = gauge(registry, "insight", "jifen_insight_abuse_members", "Members on the abuse watch, by "
                           "reason", ["program_id", "reason"])
        self.ignored = counter(registry, "insight", "jifen_insight_events_ignored", "Events of a programme insight "
                               "has no file for (counted, never guessed at)", ["program_id", "reason"])
        self.archived = counter(registry, "insight", "jifen_insight_archived_events", "Inbound events kept in the "
                                "archive", ["program_id", "topic"])
        self.archive_bytes = counter(registry, "insight", "jifen_insight_archive_bytes", "Bytes written to the "
                                     "archive (zlib-compressed NDJSON)", ["program_id", "topic"])
