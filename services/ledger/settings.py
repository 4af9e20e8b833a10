from __future__ import annotations

from shared.settings import Settings


class LedgerSettings(Settings):
    http_port: int = 8102
    schema_name: str = "ledger"
    # The expiry sweeper: how often it looks for due lots and timed-out holds, and how many per transaction.
    sweep_interval_s: float = 30.0
    sweep_batch_size: int = 2000
