"""The tiers service's Prometheus families."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from shared.metrics import counter, gauge


class TiersMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.members = gauge(registry, "tiers", "jifen_tiers_members", "Members known to the tiers service, by tier "
                             "(counted by each review round, moved by every change)", ["program_id", "tier"])
        self.changes = counter(registry, "tiers", "jifen_tier_changes", "Tier changes announced, by reason",
                               ["program_id", "reason"])
        self.warnings = counter(registry, "tiers", "jifen_tier_warnings", "Warnings sent before a review lowers a "
                                "tier", ["program_id"])
        self.ignored = counter(registry, "tiers", "jifen_tiers_events_ignored", "Events that move no tier metric (a "
                               "programme without tiers or with another metric, a correction of something not "
                               "counted)", ["program_id", "reason"])
