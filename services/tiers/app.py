"""Tiers service wiring: reads earn credits from the ledger's entries, purchases and member events; announces tier
changes on jifen.tiers; serves members' tiers and the programme's levels."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.tiers import http
from services.tiers.handlers import ProjectTiers
from services.tiers.jobs import review
from services.tiers.metrics import TiersMetrics
from services.tiers.programme import TiersProgramme
from services.tiers.settings import TiersSettings
from shared.contracts.ledger_entries import PointsEntryPosted
from shared.contracts.members import MemberEnrolled, TierAssigned
from shared.contracts.purchases import PurchaseCompleted, PurchaseRefunded
from shared.programmes import Catalogue
from shared.service import ServiceSpec, build_app, utc_now
from shared.subscription import Subscription


def spec(settings: TiersSettings | None = None, clock: Callable[[], datetime] = utc_now) -> ServiceSpec:
    settings = settings or TiersSettings()
    catalogue = Catalogue.load(settings.programmes_dir, TiersProgramme)
    registry = CollectorRegistry()
    metrics = TiersMetrics(registry)
    project = ProjectTiers(catalogue, metrics, settings.schema_name)
    return ServiceSpec(
        name="tiers", settings=settings, migrations=Path(__file__).parent / "migrations", registry=registry,
        catalogue=catalogue,
        use_inbox=False,  # contributions and assignments are stored by key: a replay changes nothing by itself
        subscriptions=[
            # Of the ledger's entries, earn credits and their reversals: the rest is skipped and counted.
            Subscription(project, types=[PointsEntryPosted], others="skip"),
            # Purchases, refunds and member events belong to several services: tiers takes its part of each.
            Subscription(project, types=[PurchaseCompleted, PurchaseRefunded, TierAssigned, MemberEnrolled]),
        ],
        jobs=[review(catalogue, metrics, settings.schema_name, settings.review_interval_s)],
        routes=http.routes(catalogue), refusal_status={"no_tiers": 404}, clock=clock)


def create_app(settings: TiersSettings | None = None) -> FastAPI:
    return build_app(spec(settings))
