"""The ledger's Prometheus families: what the consumer posts and refuses, what the sweeper sends, and the
programme figures and scheduled verify the jobs export."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from shared.metrics import counter, gauge


class LedgerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.entries = counter(registry, "ledger", "jifen_ledger_entries", "Entries posted",
                               ["program_id", "kind"])
        self.points = counter(registry, "ledger", "jifen_ledger_points", "Points moved by posted entries",
                              ["program_id", "kind"])
        self.rejected = counter(registry, "ledger", "jifen_ledger_commands_rejected", "Commands rejected, by reason",
                                ["reason"])
        self.replays = counter(registry, "ledger", "jifen_ledger_command_replays", "Commands seen before with the "
                               "same payload")


class SweepMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.sent = counter(registry, "ledger", "jifen_ledger_sweep_commands", "Expiry commands sent by the sweeper",
                            ["kind"])


class TotalsMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.points = gauge(registry, "ledger", "jifen_programme_points", "A programme's points as a whole, exact "
                            "(issued, redeemed, expired, adjusted, outstanding)", ["program_id", "measure"])
        self.members = gauge(registry, "ledger", "jifen_programme_members", "Member accounts of a programme",
                             ["program_id"])
        self.verify_ok = gauge(registry, "ledger", "jifen_ledger_verify_ok", "1 when the last scheduled `jifen "
                               "ledger verify` found every rule holding, 0 when it found a problem")
        self.verify_problems = gauge(registry, "ledger", "jifen_ledger_verify_problems", "Problems the last "
                                     "scheduled verify found")
