"""Visits: a tiny service that counts the days each member checked in (docs/new-service.md walks through it)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from shared.programmes import Catalogue, ProgrammeVersion
from shared.service import ServiceSpec, build_app
from shared.subscription import Subscription
from tests.example.visits import http
from tests.example.visits.handlers import CountVisits
from tests.example.visits.metrics import VisitsMetrics
from tests.example.visits.settings import VisitsSettings


def spec(settings: VisitsSettings | None = None) -> ServiceSpec:
    settings = settings or VisitsSettings()
    catalogue = Catalogue.load(settings.programmes_dir, ProgrammeVersion)
    registry = CollectorRegistry()
    return ServiceSpec(
        name="visits", settings=settings, migrations=Path(__file__).parent / "migrations", registry=registry,
        catalogue=catalogue,
        subscriptions=[Subscription(CountVisits(catalogue, VisitsMetrics(registry)))],
        routes=partial(http.routes, catalogue=catalogue))


def create_app(settings: VisitsSettings | None = None) -> FastAPI:
    return build_app(spec(settings))
