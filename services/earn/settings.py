from __future__ import annotations

from shared.settings import Settings


class EarnSettings(Settings):
    http_port: int = 8101
    schema_name: str = "earn"
    # How often earn looks for birthdays due (it also looks once at start).
    birthday_interval_s: float = 3600.0
