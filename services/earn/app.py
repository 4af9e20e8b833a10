"""Earn service wiring: consumes member activity and the tiers service's announcements, emits ledger commands."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, ConfigDict

from services.earn.birthdays import birthdays
from services.earn.domain import Programme
from services.earn.handlers import INBOUND, EarnFromEvents, EarnMetrics
from services.earn.settings import EarnSettings
from shared.contracts.tiers import TierChanged
from shared.http import error_responses
from shared.programmes import Catalogue
from shared.service import Runtime, ServiceSpec, build_app, utc_now
from shared.subscription import Subscription


class ProgrammeOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"program_id": "default", "name": "Default customer loyalty", "version": 1,
         "effective_from": "2020-01-01T00:00:00+00:00"}]})

    program_id: str
    name: str
    version: int
    effective_from: str


def spec(settings: EarnSettings | None = None, clock: Callable[[], datetime] = utc_now) -> ServiceSpec:
    settings = settings or EarnSettings()
    catalogue = Catalogue.load(settings.programmes_dir, Programme)
    registry = CollectorRegistry()
    earn = EarnFromEvents(catalogue, EarnMetrics(registry))

    def routes(app: FastAPI, runtime: Runtime) -> None:
        @app.get("/v1/programs", tags=["earn"], response_model=list[ProgrammeOut], summary="Every loaded programme "
                 "version", dependencies=[runtime.requires("read")], responses=error_responses(401, 403, 503))
        async def list_programmes() -> list[ProgrammeOut]:
            """Every version of every programme that earn has loaded from the programme folder, with its name and
            when it takes effect (`effective_from`, ISO 8601). Earn first looks for changed files (at most every two
            seconds); a broken folder leaves the versions in force. Needs the `read` scope."""
            catalogue.refresh()
            return [ProgrammeOut(program_id=p.program_id, name=p.name, version=p.version,
                                 effective_from=p.effective_from.isoformat()) for p in catalogue]

    return ServiceSpec(
        name="earn", settings=settings, migrations=Path(__file__).parent / "migrations", registry=registry,
        catalogue=catalogue,
        # One handler for every type: it loads what a batch needs (orders, tiers, caps) once for the whole batch.
        subscriptions=[Subscription(dict.fromkeys(INBOUND, earn)),
                       Subscription({TierChanged: earn}, others="skip")],
        jobs=[birthdays(catalogue, settings.birthday_interval_s)], routes=routes, clock=clock)


def create_app(settings: EarnSettings | None = None) -> FastAPI:
    return build_app(spec(settings))
