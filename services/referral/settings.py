from __future__ import annotations

from shared.settings import Settings


class ReferralSettings(Settings):
    http_port: int = 8105
    schema_name: str = "referral"
    # The expiry job: how often it closes referrals whose referee made no qualifying purchase in time (and recounts
    # the referrals by status for the metrics).
    expiry_interval_s: float = 300.0
    # Purchases of members who are nobody's referee are kept this long (their first purchase is kept for ever), and
    # pruned daily. A referral arriving later than this after its own time cannot see its referee's purchases.
    purchase_retention_days: float = 400.0
    purchase_prune_interval_s: float = 86400.0
