from __future__ import annotations

from datetime import date

from pydantic import BaseModel, ConfigDict


class VisitsOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"member_id": "vip-0", "days": 12,
                                                               "last_day": "2026-11-30"}]})

    member_id: str
    days: int
    last_day: date | None
