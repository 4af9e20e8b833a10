"""Insight service wiring: a projection of the public topics into per-programme, per-day sums; serves the health
indicators with verdicts, the liability roll-forward, cohorts, leaderboards, segments and the abuse watch."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.insight import archive, http
from services.insight.handlers import ANNOUNCED, INBOUND, ProjectInsight
from services.insight.jobs import abuse_watch, gauges
from services.insight.metrics import InsightMetrics
from services.insight.programme import InsightProgramme
from services.insight.settings import InsightSettings
from shared.programmes import Catalogue
from shared.service import ServiceSpec, build_app, utc_now
from shared.subscription import Subscription


def spec(settings: InsightSettings | None = None, clock: Callable[[], datetime] = utc_now) -> ServiceSpec:
    settings = settings or InsightSettings()
    catalogue = Catalogue.load(settings.programmes_dir, InsightProgramme)
    registry = CollectorRegistry()
    metrics = InsightMetrics(registry)
    project = ProjectInsight(catalogue, metrics)
    return ServiceSpec(
        name="insight", settings=settings, migrations=Path(__file__).parent / "migrations", registry=registry,
        catalogue=catalogue,
        subscriptions=[
            # What Jifen's own services announce: insight takes its part of each topic and skips the rest.
            Subscription(project, types=ANNOUNCED, others="skip"),
            # What systems outside Jifen send: earn, tiers and referral answer a bad record; insight skips it.
            Subscription(project, types=INBOUND, others="skip"),
            archive.subscription(metrics, settings.topic_prefix),  # every inbound event, kept: its own group
        ],
        jobs=[gauges(catalogue, metrics, settings.gauge_interval_s, settings.gauge_days),
              abuse_watch(catalogue, metrics, settings.abuse_watch_interval_s),
              archive.prune(settings.archive_retention_days, settings.archive_prune_interval_s)],
        routes=archive.routes(http.routes(catalogue), catalogue, settings.archive_retention_days),
        refusal_status={"no_rewards": 404}, clock=clock)


def create_app(settings: InsightSettings | None = None) -> FastAPI:
    return build_app(spec(settings))
