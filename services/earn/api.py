"""Earn's HTTP answers, with their OpenAPI examples."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ProgrammeOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"program_id": "default", "name": "Default customer loyalty", "version": 1,
         "effective_from": "2020-01-01T00:00:00+00:00"}]})

    program_id: str
    name: str
    version: int
    effective_from: str
