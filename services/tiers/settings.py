from __future__ import annotations

from shared.settings import Settings


class TiersSettings(Settings):
    http_port: int = 8104
    schema_name: str = "tiers"
    # The review: daily (and once at start), it applies the reviews due and sends the warnings due.
    review_interval_s: float = 86400.0
