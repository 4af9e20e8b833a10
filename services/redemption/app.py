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
from shared.waiting import Waiting
from shared.auth import ApiKey
from shared.contracts.base import ID_MAX_LENGTH, ID_PATTERN
from shared.contracts.ledger_entries import CommandRejected, HoldPlaced, HoldResolved
from shared.contracts.members import MemberBlocked, MemberUnblocked
from shared.contracts.purchases import PurchaseRefunded
from shared.contracts.tiers import TierChanged
from shared.http import ApiError, PathId, ProgramPath, error_responses, examples
from shared.programmes import Catalogue
from shared.service import Runtime, ServiceSpec, build_app, utc_now
from shared.subscription import Subscription

PROGRAM = "/v1/programs/{program_id}"
# Examples of what the routes refuse with, for their OpenAPI descriptions: reason → detail, as the code words them.
UNKNOWN_PROGRAM = {"unknown_program": "no programme 'defualt' is in effect"}
UNKNOWN_REDEMPTION = {"unknown_redemption": "programme 'default' has no redemption 'rd_4be0c2a9d17f36e85a11'"}
UNKNOWN_PAYMENT = {"unknown_payment": "programme 'default' has no payment 'pm_1f0e2d3c4b5a69788797'"}
UNKNOWN_COUPON = {"unknown_coupon": "no coupon has this code (20 characters given)"}
KEY_MISMATCH = {"coupon_key_mismatch": "this process's coupon key (JIFEN_COUPON_KEY) is not the one that sealed the "
                                       "code; every process needs the same"}
# A redemption's 409 names the redemption it recorded, rejected.
REDEMPTION_REFUSALS = {reason: {"error": reason, "detail": detail, "redemption_id": "rd_4be0c2a9d17f36e85a10",
                                "status": "rejected"} for reason, detail in {
    "insufficient_points": "100 asked, 40 available",
    "not_eligible_tier": "'wine-tasting' is for tiers gold; the member's tier is silver",
    "daily_limit": "10 redemptions today; at most 10 a day",
    "member_limit": "4 of 'coupon-30' redeemed already; at most 4 a month",
    "out_of_stock": "'tote-bag' has fewer than 1 left",
}.items()}
PAYMENT_REFUSALS = {
    "insufficient_points": "2000 asked, 1180 available",
    "below_minimum_points": "at least 100 points pay; 50 asked",
    "exceeds_basket_share": "4000 points pay 40.00 CNY, more than 50% of the 60.00 basket (30.000)",
    "blocked_member": "the member is blocked from paying with points",
    "order_has_payment": "order 'order-9' has payment pm_1f0e2d3c4b5a69788796 (authorised) already",
}
CANCEL_REFUSALS = {
    "coupon_used": "its coupon was used on order 'order-1'",
    "cancel_window_closed": "the redemption could be cancelled until 2026-11-25T02:10:00.480000+00:00",
    "not_cancellable": "reward 'wine-tasting' cannot be cancelled",
    "redemption_pending": "the redemption is not completed yet; try again in a moment",
    "redemption_rejected": "a rejected redemption took no points: there is nothing to cancel",
}
CAPTURE_REFUSALS = {
    "capture_exceeds_authorisation": "2500 points asked; 2000 were authorised",
    "payment_voided": "payment pm_1f0e2d3c4b5a69788796 is voided",
    "payment_expired": "payment pm_1f0e2d3c4b5a69788796 is expired",
}
VOID_REFUSALS = {
    "payment_captured": "payment pm_1f0e2d3c4b5a69788796 is captured",
    "payment_capturing": "payment pm_1f0e2d3c4b5a69788796 is capturing",
    "payment_expired": "payment pm_1f0e2d3c4b5a69788796 is expired",
}
COUPON_REFUSALS = {
    "coupon_used": "the coupon was used on another order",
    "coupon_void": "the coupon was voided (its redemption was cancelled or rejected)",
    "coupon_expired": "the coupon expired at 2026-12-25T00:00:00+00:00",
}


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
    # A body that is not even text (bytes that are not UTF-8) is FastAPI's 400, before any model sees it: the routes
    # with a body document it.
    member_query = Query(min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN,
                         description="the member whose offers to list, at their price")

    @app.get(f"{PROGRAM}/rewards", response_model=api.RewardsOut, tags=["rewards"], dependencies=[read],
             responses=error_responses(401, 403, 404, 422, 503, reasons={404: UNKNOWN_PROGRAM}),
             summary="The rewards that can be redeemed now; for a member, those they may redeem, at their price")
    async def get_rewards(program_id: ProgramPath,
                          member_id: Annotated[str | None, member_query] = None) -> api.RewardsOut:
        """The rewards of the programme version in effect that can be redeemed now and are in stock, each at its
        price. With `member_id`, only those this member may redeem now (tier-only rewards, a block, the programme's
        and the reward's limits are checked; points are not, the ledger judges them at redemption), at the member's
        tier price, with the member's `tier` and `blocked`. A programme not in effect is 404 `unknown_program`.
        Needs the `read` scope."""
        now = clock()
        programme = desk.programme(program_id, now)
        member, found = await api.reading(runtime, redeem.offers, programme, member_id, now)
        return api.RewardsOut(program_id=program_id, version=programme.version, member_id=member_id,
                              tier=member.tier, blocked=member.blocked, rewards=[api.reward_out(o) for o in found])

    @app.post(f"{PROGRAM}/rewards/{{reward_id}}/stock", response_model=api.StockOut, tags=["rewards"],
              responses=error_responses(400, 401, 403, 404, 409, 422, 503, reasons={
                  404: {**UNKNOWN_PROGRAM, "unknown_reward": "the catalogue has no reward 'tote-bgs'"},
                  409: {"no_stock_kept": "'coupon-5' has no stock in the catalogue: it never runs out"}}),
              summary="Add stock to a reward (admin)")
    async def post_stock(program_id: ProgramPath, reward_id: PathId, body: api.StockIn,
                         caller: Annotated[ApiKey, admin], idempotency_key: api.StockKey = None) -> api.StockOut:
        """Add `quantity` units to the stock of a reward that keeps stock (one with `stock` in the catalogue) and
        answer the stock left after it. With an `Idempotency-Key`, a retry with the same key adds nothing again
        (`added: false`). Refusals: 404 `unknown_reward`, 409 `no_stock_kept` for a reward that never runs out.
        Needs the `admin` scope."""
        now = clock()
        programme = desk.programme(program_id, now)
        added, left = await api.transaction(runtime, lambda uow: redeem.add_stock(
            uow, programme, reward_id, body.quantity, idempotency_key, caller.key_id, metrics, now))
        return api.StockOut(program_id=program_id, reward_id=reward_id, added=added, stock_left=left)

    @app.post(f"{PROGRAM}/redemptions", response_model=api.RedemptionOut, status_code=202, tags=["redemptions"],
              dependencies=[redeem_scope], summary="Redeem a reward: 202 pending, 201 completed (with ?wait), 409 "
                                                   "rejected with the reason",
              responses={201: {"model": api.RedemptionOut, "description": "completed"},
                         409: {"model": api.RedemptionRefused, "description": "rejected, with the reason",
                               "content": {"application/json": examples(REDEMPTION_REFUSALS)}},
                         **error_responses(400, 401, 403, 404, 422, 503, reasons={
                             404: UNKNOWN_PROGRAM, 503: KEY_MISMATCH, 422: {"idempotency_conflict": (
                                 "Idempotency-Key 'till-01:1764000000' was used for another redemption")}})})
    async def post_redemption(program_id: ProgramPath, body: api.RedeemIn, idempotency_key: IdempotencyKey,
                              response: Response, wait: Wait = 0) -> Any:
        """Redeem `quantity` of a reward for a member. In one transaction the rules are checked (`unknown_reward`,
        `blocked_member`, `reward_not_available`, `not_eligible_tier`, `too_fast`, `daily_limit`, `member_limit`,
        then `out_of_stock`), the redemption recorded, and a hold of its points asked of the ledger through the
        outbox; once the ledger places it, the hold is captured and a coupon issued. The answer is 202 `pending`,
        or 409 `{error, detail, redemption_id, status: rejected}` when a rule refused it; `?wait=S` (at most 10)
        waits for the outcome: 201 `completed` (the coupon's code shown in this answer, once) or 409 with the rule's
        or the ledger's reason (`insufficient_points`, `negative_balance`). The same `Idempotency-Key` and body
        answer the redemption that key made; another body is 422 `idempotency_conflict`. Needs the `redeem`
        scope."""
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
             responses=error_responses(401, 403, 404, 422, 503,
                                       reasons={404: UNKNOWN_REDEMPTION, 503: KEY_MISMATCH}),
             summary="A redemption: its status, the reason of a rejection, its coupon")
    async def get_redemption(program_id: ProgramPath, redemption_id: PathId,
                             caller: Annotated[ApiKey, read]) -> api.RedemptionOut:
        """A redemption as it stands: `status` (pending, completed, rejected, cancelled), the reason and detail of
        a rejection, `cancellable_until`, `fulfilment` and its coupon. A coupon's code is shown once, in the first
        answer with the `redeem` scope to find the redemption completed; every later answer, and every answer to a
        key with only `read`, has `code: null`. 404 `unknown_redemption`. Needs the `read` scope."""
        shown = await api.reading(runtime, redeem.look, program_id, redemption_id)
        return api.redemption_out(await revealed(shown, caller.allows("redeem")), clock())

    @app.post(f"{PROGRAM}/redemptions/{{redemption_id}}/cancel", response_model=api.RedemptionOut,
              tags=["redemptions"], dependencies=[redeem_scope], responses=error_responses(
                  401, 403, 404, 409, 422, 503,
                  reasons={404: UNKNOWN_REDEMPTION, 409: CANCEL_REFUSALS, 503: KEY_MISMATCH}),
              summary="Cancel a completed redemption within its reward's window: the points back, the coupon voided")
    async def post_cancel(program_id: ProgramPath, redemption_id: PathId) -> api.RedemptionOut:
        """Cancel a completed redemption within its reward's `cancel_hours`: the ledger reverses the capture, so the
        points come back with the expiry of the lots they were spent from; an unused coupon is voided, the stock
        given back, and `jifen.redemption.cancelled.v1` announced. Refusals (409): `coupon_used`,
        `cancel_window_closed`, `not_cancellable`, `redemption_pending`, `redemption_rejected`; cancelling a cancelled
        redemption answers it as it is. Needs the `redeem` scope."""
        now = clock()
        await api.transaction(runtime, lambda uow: redeem.cancel(uow, program_id, redemption_id, metrics, now))
        shown = await api.reading(runtime, redeem.look, program_id, redemption_id)
        return api.redemption_out(await revealed(shown, may_see_code=True), now)

    @app.post(f"{PROGRAM}/payments", response_model=api.PaymentOut, status_code=202, tags=["payments"],
              dependencies=[redeem_scope], summary="Authorise paying part of a basket with points (a hold)",
              responses={201: {"model": api.PaymentOut, "description": "authorised (with ?wait)"},
                         **error_responses(400, 401, 403, 404, 409, 422, 503, reasons={
                             404: UNKNOWN_PROGRAM, 409: PAYMENT_REFUSALS, 422: {"idempotency_conflict": (
                                 "Idempotency-Key 'pay-1764000000' was used for another payment")}})})
    async def post_payment(program_id: ProgramPath, body: api.PaymentIn, idempotency_key: IdempotencyKey,
                           response: Response, wait: Wait = 0) -> Any:
        """Authorise paying `points` of an order's basket (抵扣): checked against the programme's
        `points_payment` terms, recorded, and a hold of the points asked of the ledger through the outbox. Refused
        at once (409): `points_payment_not_offered`, `currency_not_accepted`, `below_minimum_points`,
        `exceeds_basket_share`, `blocked_member`, `order_has_payment`. The answer is 202 `pending`; `?wait=S` (at
        most 10) waits for the ledger: 201 `authorised`, or 409 with its reason (`insufficient_points`,
        `negative_balance`). The same `Idempotency-Key` and body answer the payment that key made; another body is
        422 `idempotency_conflict`. Needs the `redeem` scope."""
        now = clock()
        programme = desk.programme(program_id, now)
        ask = payments.PaymentAsk(program_id, body.member_id, body.order_id, body.points, body.basket_total,
                                  body.currency, idempotency_key)
        made = await api.transaction(runtime, lambda uow: payments.authorise(uow, programme, ask, metrics, now))
        return await answer_payment(program_id, made.payment_id, wait, response, {"pending"}, None, 201)

    @app.get(f"{PROGRAM}/payments/{{payment_id}}", response_model=api.PaymentOut, tags=["payments"],
             dependencies=[read], summary="A points payment",
             responses=error_responses(401, 403, 404, 422, 503, reasons={404: UNKNOWN_PAYMENT}))
    async def get_payment(program_id: ProgramPath, payment_id: PathId) -> api.PaymentOut:
        """A points payment: its status (pending, authorised, capturing, captured, voiding, voided, expired,
        rejected, with the reason of a rejection), the points authorised and what they pay (`value`, rounded down to
        the currency's minor unit), what was captured, the points refunds of the order gave back, and when an
        authorisation not captured is released. 404 `unknown_payment`. Needs the `read` scope."""
        return api.payment_out(*await api.reading(runtime, payments.read, program_id, payment_id))

    @app.post(f"{PROGRAM}/payments/{{payment_id}}/capture", response_model=api.PaymentOut, status_code=202,
              tags=["payments"], dependencies=[redeem_scope], summary="Capture at most the authorised points",
              responses={200: {"model": api.PaymentOut, "description": "captured (with ?wait)"},
                         **error_responses(400, 401, 403, 404, 409, 422, 503,
                                           reasons={404: UNKNOWN_PAYMENT, 409: CAPTURE_REFUSALS})})
    async def post_capture(program_id: ProgramPath, payment_id: PathId, response: Response,
                           body: Annotated[api.CaptureIn | None, Body()] = None, wait: Wait = 0) -> Any:
        """Spend at most the authorised points (`points`; all of them without a body): the ledger captures them
        from the hold and releases the rest. The answer is 202 `capturing`; `?wait=S` (at most 10) waits for the
        ledger: 200 `captured`, or 409 `payment_<status>` if the payment ended otherwise. The same capture again
        answers the payment as it is; a payment no longer open is 409 `payment_<status>` (e.g. `payment_voided`),
        more than authorised 409 `capture_exceeds_authorisation`. `captured_value` is what the till then sends on
        the purchase as `points_value`. Needs the `redeem` scope."""
        now = clock()
        points = body.points if body is not None else None
        await api.transaction(runtime, lambda uow: payments.capture(uow, program_id, payment_id, points, metrics, now))
        return await answer_payment(program_id, payment_id, wait, response, {"capturing"}, {"captured"}, 200)

    @app.post(f"{PROGRAM}/payments/{{payment_id}}/void", response_model=api.PaymentOut, status_code=202,
              tags=["payments"], dependencies=[redeem_scope], summary="Release an authorisation",
              responses={200: {"model": api.PaymentOut, "description": "voided (with ?wait)"},
                         **error_responses(401, 403, 404, 409, 422, 503,
                                           reasons={404: UNKNOWN_PAYMENT, 409: VOID_REFUSALS})})
    async def post_void(program_id: ProgramPath, payment_id: PathId, response: Response, wait: Wait = 0) -> Any:
        """Release an authorisation: the ledger releases the hold. The answer is 202 `voiding`; `?wait=S` (at most
        10) waits for the ledger: 200 `voided` (or `expired`, when the hold timed out first), or 409. Voiding a
        voided payment answers it as it is; a captured, capturing, expired or rejected one is 409
        `payment_<status>`. Needs the `redeem` scope."""
        now = clock()
        await api.transaction(runtime, lambda uow: payments.void(uow, program_id, payment_id, metrics, now))
        return await answer_payment(program_id, payment_id, wait, response, {"voiding"}, {"voided", "expired"}, 200)

    @app.get(f"{PROGRAM}/coupons/{{code}}", response_model=api.CouponView, tags=["coupons"], dependencies=[read],
             responses=error_responses(401, 403, 404, 422, 503, reasons={404: UNKNOWN_COUPON}),
             summary="A coupon by its code: valid, used, void or expired; its value and expiry")
    async def get_coupon(program_id: ProgramPath, code: api.CouponCode) -> api.CouponView:
        """A coupon by the code printed on it (any case, with or without dashes): `status` (valid, used, void or
        expired) and `valid`, its value, currency and expiry, and the order it was used on. An unknown code, or one
        of another programme, is 404 `unknown_coupon`; the answer never repeats the code. Needs the `read` scope."""
        return api.coupon_view(await api.reading(runtime, coupons.find, program_id, code), clock())

    @app.post(f"{PROGRAM}/coupons/{{code}}/use", response_model=api.CouponView, tags=["coupons"],
              dependencies=[redeem_scope], responses=error_responses(
                  400, 401, 403, 404, 409, 422, 503, reasons={404: UNKNOWN_COUPON, 409: COUPON_REFUSALS}),
              summary="Use a coupon on an order: once; the same order again changes nothing")
    async def post_use(program_id: ProgramPath, code: api.CouponCode,
                       body: api.CouponUseIn) -> api.CouponView:
        """Use a coupon on `order_id`, once: it becomes `used` and `jifen.coupon.used.v1` is announced. The same
        order again changes nothing and answers the coupon; another order is 409 `coupon_used`, a voided or expired
        coupon 409 `coupon_void` or `coupon_expired`, an unknown code 404 `unknown_coupon`. Needs the `redeem`
        scope."""
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
