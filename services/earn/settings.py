from __future__ import annotations

from pathlib import Path

from shared.settings import Settings


class EarnSettings(Settings):
    http_port: int = 8101
    schema_name: str = "earn"
    programmes_dir: Path = Path(__file__).parent / "programmes"
