from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from shared.settings import Settings

RUN_DIR = Path(__file__).resolve().parents[2] / ".run"


class RedemptionSettings(Settings):
    http_port: int = 8103
    schema_name: str = "redemption"
    # HTTP requests hold a connection only for their statements (a `?wait` waits without one), but fifty clients at
    # once kept a pool of 10 opening and closing overflow connections: 20, plus the kit's 5 of overflow.
    pool_size: int = 20
    # The key that seals a coupon's code until its redemption's answer shows it (codes themselves are stored only
    # as hashes). Every redemption process must share it; unset, it is read from (or made once in) the key file.
    coupon_key: SecretStr = SecretStr("")
    coupon_key_file: Path = RUN_DIR / "coupon-key"
    # How often the gauges (oldest pending redemption, stock left) are read from the database.
    watch_interval_s: float = 15.0
    # A coupon's code is shown in the first answer that finds it completed; the same request again (the same
    # Idempotency-Key, from a till that lost that answer) shows it again for this long after, then never.
    coupon_reveal_window_s: float = 300.0
    # How often the sealed copies of codes past their reveal window are dropped.
    coupon_forget_interval_s: float = 60.0
    # Rejected redemptions (they took no points) are deleted this long after their rejection, checked hourly.
    redemption_rejected_retention_s: float = 30 * 86400.0
    redemption_prune_interval_s: float = 3600.0
