"""The referral service's own Prometheus families, beside the kit's (events, DLQ, jobs, outbox)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry

from shared.metrics import Family, counter, gauge


class ReferralMetrics:
    """Referrals by status, verdicts, points credited and taken back, the ledger's refusals, events ignored."""

    def __init__(self, registry: CollectorRegistry) -> None:
        def family(kind: Callable[..., Family], name: str, documentation: str, *labels: str) -> Family:
            return kind(registry, "referral", name, documentation, ["program_id", *labels])

        self.referrals = family(gauge, "jifen_referrals", "Referrals by status and reason (recounted by every round of "
                                "the expiry job, moved by every verdict)", "status", "reason")
        self.review_queue = family(gauge, "jifen_referrals_in_review", "Referrals held for review (velocity)")
        self.verdicts = family(counter, "jifen_referral_verdicts", "Verdicts reached (a referral's status or reason "
                               "changed)", "status", "reason")
        self.points = family(counter, "jifen_referral_points", "Points credited for referrals, by side", "role")
        self.reversed = family(counter, "jifen_referral_points_reversed", "Points of referral credits taken back "
                               "(refunds, late refusals, moved bonuses), by side", "role")
        self.ledger_refusals = family(counter, "jifen_referral_ledger_refusals", "Referral credits or reversals the "
                                      "ledger refused, by its reason", "reason")
        self.ignored = family(counter, "jifen_referral_events_ignored", "Events the referral service keeps nothing of "
                              "(a programme without referrals)", "reason")

    def recount(self, counts: dict[tuple[str, str, str], int]) -> None:
        self.referrals.clear()
        self.review_queue.clear()
        for (program_id, status, reason), n in counts.items():
            self.referrals.labels(program_id, status, reason).set(n)
            if status == "review":
                self.review_queue.labels(program_id).inc(n)
