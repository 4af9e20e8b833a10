from __future__ import annotations

from shared.settings import Settings


class LedgerSettings(Settings):
    http_port: int = 8102
    schema_name: str = "ledger"
    # Bigger batches than the shared default: per-batch costs (round trips, account reads) are a large share
    # of the ledger's time, and `jifen bench --mode ledger` measured ~15% more credits/s at 5000 than at 2000.
    batch_max_records: int = 5000
    # The expiry sweeper: how often it looks for due lots and timed-out holds, and how many per transaction.
    sweep_interval_s: float = 30.0
    sweep_batch_size: int = 2000
    # Programme figures for Prometheus (jifen_programme_points), from the totals kept per batch.
    totals_interval_s: float = 60.0
    # `jifen ledger verify` on a schedule (jifen_ledger_verify_ok): it reads every entry, so daily, and not at start.
    verify_interval_s: float = 86400.0
    verify_first_after_s: float = 600.0
