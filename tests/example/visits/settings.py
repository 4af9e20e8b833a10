from __future__ import annotations

from shared.settings import Settings


class VisitsSettings(Settings):
    http_port: int = 8199
    schema_name: str = "visits"
