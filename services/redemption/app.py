"""Redemption service wiring: rewards, redemptions, points payments and coupons over HTTP (http.py); the ledger's
answers to its holds, members' tiers and blocks, and refunds from Kafka (handlers.py); outcomes on jifen.redemptions
through the outbox."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.redemption import codes, http, jobs
from services.redemption.handlers import ProjectMembers, ReturnPaidPoints, SettleHolds
from services.redemption.metrics import RedemptionMetrics
from services.redemption.programme import RedemptionProgramme
from services.redemption.settings import RedemptionSettings
from shared.contracts.ledger_entries import CommandRejected, HoldPlaced, HoldResolved
from shared.contracts.members import MemberBlocked, MemberUnblocked
from shared.contracts.tiers import TierChanged
from shared.programmes import Catalogue
from shared.service import ServiceSpec, build_app, utc_now
from shared.subscription import Subscription

# The status of each refusal a use case raises (any other is 409, refused by a rule; `unknown_program` 404).
REFUSAL_STATUS = {"idempotency_conflict": 422, "unknown_redemption": 404, "unknown_payment": 404,
                  "unknown_coupon": 404, "unknown_reward": 404, "coupon_key_mismatch": 503}


def spec(settings: RedemptionSettings | None = None, clock: Callable[[], datetime] = utc_now) -> ServiceSpec:
    settings = settings or RedemptionSettings()
    catalogue = Catalogue.load(settings.programmes_dir, RedemptionProgramme)
    registry = CollectorRegistry()
    metrics = RedemptionMetrics(registry)
    desk = http.Desk(catalogue, metrics, codes.load_key(settings.coupon_key.get_secret_value(),
                                                        settings.coupon_key_file), settings.coupon_reveal_window_s)
    members = ProjectMembers(catalogue, clock)
    return ServiceSpec(
        name="redemption", settings=settings, migrations=Path(__file__).parent / "migrations", registry=registry,
        catalogue=catalogue, refusal_status=REFUSAL_STATUS,
        subscriptions=[
            # The ledger's answers to holds and commands (every service's): ours are picked by key in the handler.
            Subscription(SettleHolds(metrics, clock, desk.coupon_key), types=[HoldPlaced, HoldResolved,
                                                                              CommandRejected], others="skip"),
            Subscription(members, types=[TierChanged], others="skip"),
            Subscription(members, types=[MemberBlocked, MemberUnblocked]),
            Subscription(ReturnPaidPoints(metrics, clock)),
        ],
        jobs=[jobs.watch(metrics, catalogue, settings.watch_interval_s),
              jobs.prune_rejected(settings.redemption_rejected_retention_s, settings.redemption_prune_interval_s),
              jobs.forget_codes(settings.coupon_reveal_window_s, settings.coupon_forget_interval_s)],
        routes=lambda app, runtime: http.routes(app, runtime, desk), pool_size=settings.pool_size, clock=clock)


def create_app(settings: RedemptionSettings | None = None) -> FastAPI:
    return build_app(spec(settings))
