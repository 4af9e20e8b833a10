"""Earn service wiring: consumes member activity, publishes ledger commands."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from fastapi import FastAPI

from services.earn.birthdays import BirthdayBonus
from services.earn.handlers import HANDLED, EarnFromEvents, EarnMetrics
from services.earn.programmes import Catalogue
from services.earn.settings import EarnSettings
from shared import topics
from shared.contracts import INBOUND_TYPES, TIER_CHANGED, TierChanged
from shared.service import Runtime, ServiceSpec, build_app

# Earn owns these topics (and reads the tiers service's announcements); types it does not handle go to the DLQ
# as `unsupported_type`, where they wait to be replayed when their rules land.
EARN_TOPICS = [topics.PURCHASES, topics.TASKS, topics.CHECKINS, topics.MEMBERS, topics.TIERS]


def utc_now() -> datetime:
    return datetime.now(UTC)


async def _birthdays(runtime: Runtime, settings: EarnSettings, catalogue: Catalogue, commands_topic: str) -> None:
    assert runtime.engine is not None
    await BirthdayBonus(runtime.engine, settings.schema_name, catalogue, commands_topic, utc_now,
                        interval_s=settings.birthday_interval_s).run()


def create_app(settings: EarnSettings | None = None) -> FastAPI:
    settings = settings or EarnSettings()
    catalogue = Catalogue.load(settings.programmes_dir)
    commands_topic = settings.topic(topics.LEDGER_COMMANDS)
    spec = ServiceSpec(
        name="earn", schema=settings.schema_name, migrations=Path(__file__).parent / "migrations",
        topics=EARN_TOPICS, types={**INBOUND_TYPES, TIER_CHANGED: TierChanged}, handled_types=HANDLED,
        make_handler=lambda registry: EarnFromEvents(catalogue, commands_topic, EarnMetrics(registry)),
        background=[lambda runtime: _birthdays(runtime, settings, catalogue, commands_topic)])
    app, _runtime = build_app(spec, settings, "Jifen earn")

    @app.get("/v1/programs", tags=["earn"])
    async def list_programmes() -> list[dict[str, object]]:
        catalogue.refresh()
        return [{"program_id": p.program_id, "name": p.name, "version": p.version,
                 "effective_from": p.effective_from} for p in catalogue]

    return app
