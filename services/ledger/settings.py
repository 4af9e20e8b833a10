from __future__ import annotations

from shared.settings import Settings


class LedgerSettings(Settings):
    http_port: int = 8102
    schema_name: str = "ledger"
