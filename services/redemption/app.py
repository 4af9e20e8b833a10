"""Redemption service wiring: rewards, redemptions, points payments and coupons over HTTP; the ledger's answers to
its holds, members' tiers and blocks, and refunds from Kafka; outcomes on jifen.redemptions through the outbox.

No `from __future__ import annotations` here: the routes' parameters name dependencies local to `routes`, which
FastAPI can read only from annotations evaluated where they are written."""


import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Body, FastAPI, Query, Response
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry

from services.redemption import api, codes, coupons, payments, redeem
from services.redemption.api import IdempotencyKey, Wait
from services.redemption.handlers import ProjectMembers, ReturnPaidPoints, SettleHolds
from services.redemption.metrics import RedemptionMetrics, watch
from services.redemption.programme import RedemptionProgramme
from services.redemption.settings import RedemptionSettings
from services.redemption.waiting import Waiting
from shared.auth import ApiKey
from shared.contracts.base import ID_MAX_LENGTH, ID_PATTERN
from shared.contracts.ledger_entries import CommandRejected, HoldPlaced, HoldResolved
from shared.contracts.members import MemberBlocked, MemberUnblocked
from shared.contracts.purchases import PurchaseRefunded
from shared.contracts.tiers import TierChanged
from shared.http import ApiError, PathId, ProgramPath, error_responses
from shared.programmes import Catalogue
from shared.service import Runtime, ServiceSpec, build_app, utc_now
from shared.subscription import Subscription

PROGRAM = "/v1/programs/{program_id}"


@dataclass
class Desk:
    """What the routes share: the programmes, the metrics and the key that seals coupon codes."""

    catalogue: Catalogue[RedemptionProgramme]
    metrics: RedemptionMetrics
    coupon_key: bytes

    def programme(self, program_id: str, now: datetime) -> RedemptionProgramme:
        found = self.catalogue.at(program_id, now)
        if found is None:
            raise ApiError(404, "unknown_program", f"no programme {program_id!r} is in effect")
        return found


def spec(settings: RedemptionSettings | None = None, clock: Callable[[], datetime] = utc_now) -> ServiceSpec:
    settings = settings or RedemptionSettings()
    catalogue = Catalogue.load(settings.programmes_dir, RedemptionProgramme)
    registry = CollectorRegistry()
    metrics = RedemptionMetrics(registry)
    desk = Desk(catalogue, metrics, codes.load_key(settings.coupon_key.get_secret_value(), settings.coupon_key_file))
    settle, members = SettleHolds(metrics, clock, desk.coupon_key), ProjectMembers(catalogue)
    return ServiceSpec(
        name="redemption", settings=settings, migrations=Path(__file__).parent / "migrations", registry=registry,
        catalogue=catalogue,
        subscriptions=[
            # The ledger's answers to holds and commands (every service's): ours are picked by key in the handler.
            Subscription({HoldPlaced: settle, HoldResolved: settle, CommandRejected: settle}, others="skip"),
            Subscription({TierChanged: members}, others="skip"),
            Subscription({MemberBlocked: members, MemberUnblocked: members}),
            Subscription({PurchaseRefunded: ReturnPaidPoints(metrics, clock)}),
        ],
        jobs=[watch(metrics, catalogue, settings.watch_interval_s)],
        routes=lambda app, runtime: routes(app, runtime, desk), pool_size=settings.pool_size, clock=clock)


def create_app(settings: RedemptionSettings | None = None) -> FastAPI:
    return build_app(spec(settings))


def routes(app: FastAPI, runtime: Runtime, desk: Desk) -> None:
    read, redeem_scope, admin = runtime.requires("read"), runtime.requires("redeem"), runtime.requires("admin")
    waiting = Waiting(runtime.settings.asyncpg_dsn, runtime.settings.schema_name)
    clock, metrics = runtime.spec.clock, desk.metrics
    errors = error_responses(401, 403, 404, 422, 503)
    # A body that is not even text (bytes that are not UTF-8) is FastAPI's 400, before any model sees it.
    refusals = {**errors, **error_responses(400, 409)}
    member_query = Query(min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN,
                         description="the member whose offers to list, at their price")

    @app.get(f"{PROGRAM}/rewards", response_model=api.RewardsOut, tags=["rewards"], dependencies=[read],
             responses=errors, summary="The rewards that can be redeemed now; for a member, those they may redeem, at "
                                       "their price")
    async def get_rewards(program_id: ProgramPath,
                          member_id: Annotated[str | None, member_query] = None) -> api.RewardsOut:
        now = clock()
        programme = desk.programme(program_id, now)
        member, found = await api.reading(runtime, redeem.offers, programme, member_id, now)
        return api.RewardsOut(program_id=program_id, version=programme.version, member_id=member_id,
                              tier=member.tier, blocked=member.blocked, rewards=[api.reward_out(o) for o in found])

    @app.post(f"{PROGRAM}/rewards/{{reward_id}}/stock", response_model=api.StockOut, tags=["rewards"],
              responses=refusals, summary="Add stock to a reward (admin)")
    async def post_stock(program_id: ProgramPath, reward_id: PathId, body: api.StockIn,
                         caller: Annotated[ApiKey, admin], idempotency_key: api.StockKey = None) -> api.StockOut:
        now = clock()
        programme = desk.programme(program_id, now)
        added, left = await api.transaction(runtime, lambda uow: redeem.add_stock(
            uow, programme, reward_id, body.quantity, idempotency_key, caller.key_id, metrics, now))
        return api.StockOut(program_id=program_id, reward_id=reward_id, added=added, stock_left=left)

    @app.post(f"{PROGRAM}/redemptions", response_model=api.RedemptionOut, status_code=202, tags=["redemptions"],
              dependencies=[redeem_scope], summary="Redeem a reward: 202 pending, 201 completed (with ?wait), 409 "
                                                   "rejected with the reason",
              responses={201: {"model": api.RedemptionOut, "description": "completed"},
                         409: {"model": api.RedemptionRefused, "description": "rejected, with the reason"},
                         **error_responses(400), **errors})
    async def post_redemption(program_id: ProgramPath, body: api.RedeemIn, idempotency_key: IdempotencyKey,
                              response: Response, wait: Wait = 0) -> Any:
        now = clock()
        programme = desk.programme(program_id, now)
        ask = redeem.Ask(program_id, body.member_id, body.reward_id, body.quantity, idempotency_key)
        rid = redeem.new_id()
        # Listening before the commit: the ledger's answer cannot arrive before this request waits for it.
        async with waiting.watching(rid) if wait > 0 else contextlib.nullcontext() as watch:
            made = await api.transaction(runtime, lambda uow: redeem.redeem(uow, programme, ask, rid, metrics, now))
            fresh = made.redemption_id == rid
            # A new redemption is as this request left it: pending, or rejected by a rule, with nothing else yet.
            shown = redeem.Shown(made) if fresh else await api.reading(runtime, redeem.look, program_id,
                                                                        made.redemption_id)
            if watch is not None and fresh:
                shown = await watch.until(looked(program_id, rid), settled, wait, known=shown)
        if wait > 0 and not fresh:  # a replay: the redemption its key made first
            shown = await waiting.until(made.redemption_id, looked(program_id, made.redemption_id), settled, wait)
        shown = await revealed(shown, may_see_code=True)
        r = shown.redemption
        if r.status == "rejected":
            return JSONResponse(api.RedemptionRefused(error=r.reason or "rejected", detail=r.detail or "",
                                                      redemption_id=r.redemption_id, status="rejected").model_dump(),
                                status_code=409)
        response.status_code = 202 if r.status == "pending" else 201
        return api.redemption_out(shown, clock())

    @app.get(f"{PROGRAM}/redemptions/{{redemption_id}}", response_model=api.RedemptionOut, tags=["redemptions"],
             responses=errors, summary="A redemption: its status, the reason of a rejection, its coupon")
    async def get_redemption(program_id: ProgramPath, redemption_id: PathId,
                             caller: Annotated[ApiKey, read]) -> api.RedemptionOut:
        shown = await api.reading(runtime, redeem.look, program_id, redemption_id)
        return api.redemption_out(await revealed(shown, caller.allows("redeem")), clock())

    @app.post(f"{PROGRAM}/redemptions/{{redemption_id}}/cancel", response_model=api.RedemptionOut,
              tags=["redemptions"], dependencies=[redeem_scope], responses=refusals,
              summary="Cancel a completed redemption within its reward's window: the points back, the coupon voided")
    async def post_cancel(program_id: ProgramPath, redemption_id: PathId) -> api.RedemptionOut:
        now = clock()
        await api.transaction(runtime, lambda uow: redeem.cancel(uow, program_id, redemption_id, metrics, now))
        shown = await api.reading(runtime, redeem.look, program_id, redemption_id)
        return api.redemption_out(await revealed(shown, may_see_code=True), now)

    @app.post(f"{PROGRAM}/payments", response_model=api.PaymentOut, status_code=202, tags=["payments"],
              dependencies=[redeem_scope], summary="Authorise paying part of a basket with points (a hold)",
              responses={201: {"model": api.PaymentOut, "description": "authorised (with ?wait)"}, **refusals})
    async def post_payment(program_id: ProgramPath, body: api.PaymentIn, idempotency_key: IdempotencyKey,
                           response: Response, wait: Wait = 0) -> Any:
        now = clock()
        programme = desk.programme(program_id, now)
        ask = payments.PaymentAsk(program_id, body.member_id, body.order_id, body.points, body.basket_total,
                                  body.currency, idempotency_key)
        made = await api.transaction(runtime, lambda uow: payments.authorise(uow, programme, ask, metrics, now))
        return await answer_payment(program_id, made.payment_id, wait, response, {"pending"}, None, 201)

    @app.get(f"{PROGRAM}/payments/{{payment_id}}", response_model=api.PaymentOut, tags=["payments"],
             dependencies=[read], responses=errors, summary="A points payment")
    async def get_payment(program_id: ProgramPath, payment_id: PathId) -> api.PaymentOut:
        return api.payment_out(*await api.reading(runtime, payments.read, program_id, payment_id))

    @app.post(f"{PROGRAM}/payments/{{payment_id}}/capture", response_model=api.PaymentOut, status_code=202,
              tags=["payments"], dependencies=[redeem_scope], summary="Capture at most the authorised points",
              responses={200: {"model": api.PaymentOut, "description": "captured (with ?wait)"}, **refusals})
    async def post_capture(program_id: ProgramPath, payment_id: PathId, response: Response,
                           body: Annotated[api.CaptureIn | None, Body()] = None, wait: Wait = 0) -> Any:
        now = clock()
        points = body.points if body is not None else None
        await api.transaction(runtime, lambda uow: payments.capture(uow, program_id, payment_id, points, metrics, now))
        return await answer_payment(program_id, payment_id, wait, response, {"capturing"}, {"captured"}, 200)

    @app.post(f"{PROGRAM}/payments/{{payment_id}}/void", response_model=api.PaymentOut, status_code=202,
              tags=["payments"], dependencies=[redeem_scope], summary="Release an authorisation",
              responses={200: {"model": api.PaymentOut, "description": "voided (with ?wait)"}, **refusals})
    async def post_void(program_id: ProgramPath, payment_id: PathId, response: Response, wait: Wait = 0) -> Any:
        now = clock()
        await api.transaction(runtime, lambda uow: payments.void(uow, program_id, payment_id, metrics, now))
        return await answer_payment(program_id, payment_id, wait, response, {"voiding"}, {"voided", "expired"}, 200)

    @app.get(f"{PROGRAM}/coupons/{{code}}", response_model=api.CouponView, tags=["coupons"], dependencies=[read],
             responses=errors, summary="A coupon by its code: valid, used, void or expired; its value and expiry")
    async def get_coupon(program_id: ProgramPath, code: api.CouponCode) -> api.CouponView:
        return api.coupon_view(await api.reading(runtime, coupons.find, program_id, code), clock())

    @app.post(f"{PROGRAM}/coupons/{{code}}/use", response_model=api.CouponView, tags=["coupons"],
              dependencies=[redeem_scope], responses=refusals,
              summary="Use a coupon on an order: once; the same order again changes nothing")
    async def post_use(program_id: ProgramPath, code: api.CouponCode,
                       body: api.CouponUseIn) -> api.CouponView:
        now = clock()
        used = await api.transaction(runtime, lambda uow: coupons.use(uow, program_id, code, body.order_id, metrics,
                                                                      now))
        return api.coupon_view(used, now)

    def looked(program_id: str, redemption_id: str) -> Callable[[], Awaitable[redeem.Shown]]:
        return lambda: api.reading(runtime, redeem.look, program_id, redemption_id)

    def settled(shown: redeem.Shown) -> bool:
        return shown.redemption.status != "pending"

    async def revealed(shown: redeem.Shown, may_see_code: bool) -> redeem.Shown:
        if not redeem.reveal_due(shown, may_see_code):
            return shown
        return await api.transaction(runtime, lambda uow: redeem.reveal(uow, shown, desk.coupon_key, clock()))

    async def answer_payment(program_id: str, payment_id: str, wait: float, response: Response, moving: set[str],
                             fine: set[str] | None, code: int) -> Any:
        """202 while `moving`; `code` once settled as hoped (`fine`, None: anything but rejected); else 409."""
        found, returned = await waiting.until(payment_id, lambda: api.reading(runtime, payments.read, program_id,
                                                                              payment_id),
                                              lambda p: p[0].status not in moving, wait)
        if found.status == "rejected" or (fine is not None and found.status not in fine | moving):
            reason = found.reason if found.status == "rejected" and found.reason else f"payment_{found.status}"
            return JSONResponse({"error": reason, "detail": found.detail or f"the payment is {found.status}"},
                                status_code=409)
        response.status_code = 202 if found.status in moving else code
        return api.payment_out(found, returned)
