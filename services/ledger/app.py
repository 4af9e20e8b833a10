"""Ledger service wiring: consumes jifen.ledger.commands, serves balances, entries, the programme summary and the
admin calls over HTTP."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.ledger.handlers import ApplyCommands
from services.ledger.http import routes
from services.ledger.jobs import sweeper, totals_job, verify_job
from services.ledger.metrics import LedgerMetrics, SweepMetrics, TotalsMetrics
from services.ledger.settings import LedgerSettings
from shared.contracts.ledger_commands import COMMANDS
from shared.programmes import Catalogue, ProgrammeVersion
from shared.service import ServiceSpec, build_app, utc_now
from shared.subscription import Subscription

log = logging.getLogger(__name__)


def spec(settings: LedgerSettings | None = None, clock: Callable[[], datetime] = utc_now) -> ServiceSpec:
    settings = settings or LedgerSettings()
    registry = CollectorRegistry()
    totals = TotalsMetrics(registry)
    # The ledger reads only the programme files' headers: which programmes exist, their currency and point value.
    catalogue = Catalogue.load(settings.programmes_dir, ProgrammeVersion)
    return ServiceSpec(
        name="ledger", settings=settings, migrations=Path(__file__).parent / "migrations", registry=registry,
        subscriptions=[Subscription(ApplyCommands(LedgerMetrics(registry), clock), types=COMMANDS)],
        jobs=[sweeper(SweepMetrics(registry), settings.sweep_interval_s, settings.sweep_batch_size),
              totals_job(totals, settings.totals_interval_s),
              verify_job(totals, settings.verify_interval_s, settings.verify_first_after_s, log.error)],
        # Commands are deduplicated by their keys: no inbox.
        routes=routes(catalogue), catalogue=catalogue, use_inbox=False, pool_size=8, clock=clock,
        refusal_status={"unknown_command": 404})


def create_app(settings: LedgerSettings | None = None) -> FastAPI:
    return build_app(spec(settings))
