"""Tiers service wiring: reads earn credits from the ledger's entries, purchases and member events; announces tier
changes on jifen.tiers; serves members' tiers and the programme's levels."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, Query
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, ConfigDict, Field

from services.tiers import domain, repository
from services.tiers.domain import Member
from services.tiers.handlers import ProjectTiers, TiersMetrics, reach, review
from services.tiers.programme import TierRules, TiersProgramme
from services.tiers.settings import TiersSettings
from shared.contracts.ledger_entries import PointsEntryPosted
from shared.contracts.members import MemberEnrolled, TierAssigned
from shared.contracts.purchases import PurchaseCompleted, PurchaseRefunded
from shared.http import ApiError, PathId, ProgramPath, error_responses
from shared.programmes import Catalogue
from shared.service import Runtime, ServiceSpec, build_app, utc_now
from shared.subscription import Subscription


class Qualifying(BaseModel):
    metric: str = Field(description="points_earned, spend or purchases")
    value: Decimal
    window_start: datetime
    window_end: datetime


class NextTier(BaseModel):
    tier: str
    needed: Decimal = Field(description="how much more of the metric, in the current window, reaches it")


class Keep(BaseModel):
    needed: Decimal = Field(description="how much more of the metric, in the window the review judges, keeps the tier")
    by: datetime = Field(description="the end of the tier period, when the review judges it")


class TierOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"program_id": "default", "member_id": "vip-0", "tier": "gold", "since": "2026-06-02T11:20:00Z",
         "valid_until": "2027-06-02T11:20:00Z", "manual": False,
         "qualifying": {"metric": "points_earned", "value": "6420", "window_start": "2025-11-24T08:00:00Z",
                        "window_end": "2026-11-24T08:00:00Z"},
         "next": {"tier": "diamond", "needed": "13580"}, "keep": {"needed": "1900", "by": "2027-06-02T11:20:00Z"},
         "benefits": ["×1.5 points", "priority service", "event invitations"], "earn_multiplier": "1.5"}]})

    program_id: str
    member_id: str
    tier: str
    since: datetime | None = Field(description="when the member reached the tier (none: never changed)")
    valid_until: datetime | None = Field(description="the end of the tier period (none: never reviewed)")
    manual: bool = Field(description="set by hand (jifen.tier.assigned.v1) until valid_until")
    qualifying: Qualifying
    next: NextTier | None
    keep: Keep | None
    benefits: list[str]
    earn_multiplier: Decimal


class ChangeOut(BaseModel):
    seq: int
    at: datetime
    tier: str
    previous_tier: str
    reason: str
    detail: str | None
    valid_until: datetime | None
    qualifying_value: Decimal


class HistoryOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"changes": [
        {"seq": 2, "at": "2026-06-02T11:20:00Z", "tier": "gold", "previous_tier": "silver", "reason": "upgrade",
         "detail": None, "valid_until": "2027-06-02T11:20:00Z", "qualifying_value": "5030"},
        {"seq": 1, "at": "2026-02-10T09:05:00Z", "tier": "silver", "previous_tier": "normal", "reason": "upgrade",
         "detail": None, "valid_until": "2027-02-10T09:05:00Z", "qualifying_value": "1010"}],
        "next_before_seq": None}]})

    changes: list[ChangeOut]
    next_before_seq: int | None


class LevelOut(BaseModel):
    tier: str
    threshold: Decimal
    earn_multiplier: Decimal
    benefits: list[str]
    grace_days: int
    members: int = Field(description="members the tiers service knows at this tier")


class LevelsOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"program_id": "default", "version": 1, "metric": "points_earned", "window": "rolling 12 months",
         "downgrade": "to_qualifying", "warn_days": 30, "levels": [
             {"tier": "normal", "threshold": "0", "earn_multiplier": "1", "grace_days": 0, "members": 6175,
              "benefits": ["1 point per yuan", "birthday bonus"]},
             {"tier": "silver", "threshold": "1000", "earn_multiplier": "1.25", "grace_days": 0, "members": 207,
              "benefits": ["×1.25 points", "member prices"]},
             {"tier": "gold", "threshold": "5000", "earn_multiplier": "1.5", "grace_days": 30, "members": 76,
              "benefits": ["×1.5 points", "priority service", "event invitations"]},
             {"tier": "diamond", "threshold": "20000", "earn_multiplier": "2", "grace_days": 30, "members": 8,
              "benefits": ["×2 points", "priority service", "event invitations", "a personal shopper"]}]}]})

    program_id: str
    version: int
    metric: str
    window: str
    downgrade: str
    warn_days: int
    levels: list[LevelOut]


def spec(settings: TiersSettings | None = None, clock: Callable[[], datetime] = utc_now) -> ServiceSpec:
    settings = settings or TiersSettings()
    catalogue = Catalogue.load(settings.programmes_dir, TiersProgramme)
    registry = CollectorRegistry()
    metrics = TiersMetrics(registry)
    project = ProjectTiers(catalogue, metrics, settings.schema_name)

    def rules_of(program_id: str, now: datetime) -> tuple[TiersProgramme, TierRules]:
        programme = catalogue.at(program_id, now)
        if programme is None:
            raise ApiError(404, "unknown_program", f"no programme {program_id!r} is in effect")
        if programme.tiers is None:
            raise ApiError(404, "no_tiers", f"programme {program_id!r} has no tiers")
        return programme, programme.tiers

    def routes(app: FastAPI, runtime: Runtime) -> None:
        read = [runtime.requires("read")]
        errors = error_responses(401, 403, 404, 422, 503, reasons={404: {
            "unknown_program": "no programme 'defualt' is in effect", "no_tiers": "programme 'staff' has no tiers"}})

        @app.get("/v1/programs/{program_id}/members/{member_id:path}/tier", response_model=TierOut, tags=["tiers"],
                 dependencies=read, responses=errors, summary="A member's tier, what qualifies it, what the next tier "
                 "and keeping this one need")
        async def get_tier(program_id: ProgramPath, member_id: PathId) -> TierOut:
            """Where the member stands now, any review due by now applied: the tier, since when and until when
            (`valid_until`, when the next review judges it), whether it was set by hand, the metric's value in the
            current window, what the next level needs in that window (`next`) and what keeping this tier needs in the
            window the review judges (`keep`). A member the service never saw is at the first level. 404
            `unknown_program`, or `no_tiers` for a programme without tiers. Needs the `read` scope."""
            now = runtime.spec.clock()
            programme, rules = rules_of(program_id, now)
            async with runtime.connection() as db:
                found = await repository.members(db, {(program_id, member_id): (now, reach(rules))})
            member = found.get((program_id, member_id)) or Member.new(rules)
            seen = domain.standing(member, rules, programme.zone, now)
            level = rules.level(seen.tier)
            return TierOut(
                program_id=program_id, member_id=member_id, tier=seen.tier, since=seen.since,
                valid_until=seen.valid_until, manual=seen.manual,
                qualifying=Qualifying(metric=seen.metric, value=seen.value, window_start=seen.window.start,
                                      window_end=seen.window.end),
                next=NextTier(tier=seen.next_tier, needed=seen.next_needed)
                if seen.next_tier is not None and seen.next_needed is not None else None,
                keep=Keep(needed=seen.keep_needed, by=seen.keep_by)
                if seen.keep_needed is not None and seen.keep_by is not None else None,
                benefits=level.benefits, earn_multiplier=level.earn_multiplier)

        @app.get("/v1/programs/{program_id}/members/{member_id:path}/tier/history", response_model=HistoryOut,
                 tags=["tiers"], dependencies=read, responses=errors, summary="Every tier change of a member, newest "
                 "first, as announced on jifen.tiers")
        async def get_history(program_id: ProgramPath, member_id: PathId,
                              limit: Annotated[int, Query(ge=1, le=500)] = 50,
                              before_seq: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None) -> HistoryOut:
            """The member's tier changes as announced on jifen.tiers (`jifen.tier.changed.v1`), newest first,
            `limit` at a time (at most 500; pass `next_before_seq` as `before_seq` for the next page): the tier and
            the one before, the reason (upgrade, downgrade, manual, expired_manual) and its detail, the end of the
            period and the metric's value that decided it. 404 `unknown_program` or `no_tiers`. Needs the `read`
            scope."""
            rules_of(program_id, runtime.spec.clock())
            async with runtime.connection() as db:
                rows = await repository.history(db, program_id, member_id, limit, before_seq)
            more = len(rows) == limit and rows[-1]["seq"] > 1
            return HistoryOut(changes=[ChangeOut(**dict(r)) for r in rows],
                              next_before_seq=rows[-1]["seq"] if more else None)

        @app.get("/v1/programs/{program_id}/tiers", response_model=LevelsOut, tags=["tiers"], dependencies=read,
                 responses=errors, summary="The programme's levels in force, with the members at each")
        async def get_levels(program_id: ProgramPath) -> LevelsOut:
            """The levels of the programme version in force, lowest first: threshold, earn multiplier, benefits and
            grace days, with how many members the service holds at each now; and the metric, its window and how a
            review lowers a tier (`downgrade`). 404 `unknown_program` or `no_tiers`. Needs the `read` scope."""
            programme, rules = rules_of(program_id, runtime.spec.clock())
            async with runtime.connection() as db:
                counts = await repository.counts(db)
            window = rules.window.kind + (f" {rules.window.months} months" if rules.window.kind == "rolling" else "")
            return LevelsOut(
                program_id=program_id, version=programme.version, metric=rules.metric, window=window,
                downgrade=rules.downgrade, warn_days=rules.warn_days,
                levels=[LevelOut(tier=lv.tier, threshold=lv.threshold, earn_multiplier=lv.earn_multiplier,
                                 benefits=lv.benefits, grace_days=lv.grace_days,
                                 members=counts.get((program_id, lv.tier), 0)) for lv in rules.levels])

    return ServiceSpec(
        name="tiers", settings=settings, migrations=Path(__file__).parent / "migrations", registry=registry,
        catalogue=catalogue,
        use_inbox=False,  # contributions and assignments are stored by key: a replay changes nothing by itself
        subscriptions=[
            # Of the ledger's entries, earn credits and their reversals: the rest is skipped and counted.
            Subscription({PointsEntryPosted: project}, others="skip"),
            # Purchases, refunds and member events belong to several services: tiers takes its part of each.
            Subscription({PurchaseCompleted: project, PurchaseRefunded: project, TierAssigned: project,
                          MemberEnrolled: project}),
        ],
        jobs=[review(catalogue, metrics, settings.schema_name, settings.review_interval_s)], routes=routes,
        clock=clock)


def create_app(settings: TiersSettings | None = None) -> FastAPI:
    return build_app(spec(settings))
