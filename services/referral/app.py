"""Referral service wiring: reads referrals, members and purchases, and the ledger's answers to its commands;
credits both sides through the ledger and announces outcomes on jifen.referral.outcomes; serves codes, members'
referrals, the review queue and its decisions, and the programme's referral statistics."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.referral import http
from services.referral.handlers import TakeEvents, TakeLedgerAnswers
from services.referral.jobs import expiry, purchase_prune
from services.referral.judging import Judging
from services.referral.metrics import ReferralMetrics
from services.referral.programme import ReferralProgramme
from services.referral.settings import ReferralSettings
from shared.programmes import Catalogue
from shared.service import ServiceSpec, build_app, utc_now
from shared.subscription import Subscription


def spec(settings: ReferralSettings | None = None, clock: Callable[[], datetime] = utc_now) -> ServiceSpec:
    settings = settings or ReferralSettings()
    schema = settings.schema_name
    registry = CollectorRegistry()
    judging = Judging(Catalogue.load(settings.programmes_dir, ReferralProgramme), ReferralMetrics(registry))
    return ServiceSpec(
        name="referral", settings=settings, migrations=Path(__file__).parent / "migrations", registry=registry,
        catalogue=judging.catalogue,
        subscriptions=[
            # Members and purchases belong to several services: referral keeps its part of each.
            Subscription(TakeEvents(judging, schema, clock)),
            # Of the ledger's entries, the answers to referral's own commands: the rest is skipped and counted.
            Subscription(TakeLedgerAnswers(judging, schema), others="skip"),
        ],
        jobs=[expiry(judging, schema, settings.expiry_interval_s),
              purchase_prune(judging, schema, settings.purchase_retention_days, settings.purchase_prune_interval_s)],
        routes=http.routes(judging, schema), refusal_status=http.REFUSAL_STATUS, clock=clock)


def create_app(settings: ReferralSettings | None = None) -> FastAPI:
    return build_app(spec(settings))
