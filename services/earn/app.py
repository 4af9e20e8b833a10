"""Earn service wiring: consumes member activity and the tiers service's announcements, emits ledger commands."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.earn.handlers import INBOUND, EarnFromEvents
from services.earn.http import routes
from services.earn.jobs import birthdays
from services.earn.metrics import EarnMetrics
from services.earn.programme import Programme
from services.earn.settings import EarnSettings
from shared.contracts.tiers import TierChanged
from shared.programmes import Catalogue
from shared.service import ServiceSpec, build_app, utc_now
from shared.subscription import Subscription


def spec(settings: EarnSettings | None = None, clock: Callable[[], datetime] = utc_now) -> ServiceSpec:
    settings = settings or EarnSettings()
    catalogue = Catalogue.load(settings.programmes_dir, Programme)
    registry = CollectorRegistry()
    earn = EarnFromEvents(catalogue, EarnMetrics(registry))
    return ServiceSpec(
        name="earn", settings=settings, migrations=Path(__file__).parent / "migrations", registry=registry,
        catalogue=catalogue,
        # One handler for both: it loads what a batch needs (orders, tiers, caps) once for the whole batch.
        subscriptions=[Subscription(earn, types=INBOUND), Subscription(earn, types=[TierChanged], others="skip")],
        jobs=[birthdays(catalogue, settings.birthday_interval_s)], routes=routes(catalogue), clock=clock)


def create_app(settings: EarnSettings | None = None) -> FastAPI:
    return build_app(spec(settings))
