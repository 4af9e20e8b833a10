"""The redemption service's routes: rewards, redemptions, points payments and coupons. Each parses the request,
runs a use case (redeem.py, payments.py, coupons.py) through the kit's `runtime.transaction` or `runtime.read` (a
database that does not answer is 503 with Retry-After) and answers; a use case's refusal is answered by the kit with
its status (app.py `refusal_status`).

No `from __future__ import annotations` here: the routes' parameters name dependencies local to `routes`, which
FastAPI can read only from annotations evaluated where they are written."""

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Body, FastAPI, Query, Response
from fastapi.responses import JSONResponse

from services.redemption import api, coupons, payments, redeem
from services.redemption.api import IdempotencyKey, Wait
from services.redemption.metrics import RedemptionMetrics
from services.redemption.programme import RedemptionProgramme
from shared.auth import ApiKey
from shared.contracts.base import ID_MAX_LENGTH, ID_PATTERN
from shared.http import PathId, ProgramPath, error_responses, examples
from shared.programmes import Catalogue
from shared.service import Runtime

PROGRAM = "/v1/programs/{program_id}"


@dataclass
class Desk:
    """What the routes share: the programmes, the metrics, the key that seals coupon codes and how long a shown
    code may be shown again to the same request."""

    catalogue: Catalogue[RedemptionProgramme]
    metrics: RedemptionMetrics
    coupon_key: bytes
    reveal_window_s: float


def routes(app: FastAPI, runtime: Runtime, desk: Desk) -> None:
    read, redeem_scope, admin = runtime.requires("read"), runtime.requires("redeem"), runtime.requires("admin")
    clock, metrics, waiting, catalogue = runtime.spec.clock, desk.metrics, runtime.waiting, desk.catalogue
    # A body that is not even text (bytes that are not UTF-8) is FastAPI's 400, before any model sees it: the routes
    # with a body document it.
    member_query = Query(min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN,
                         description="the member whose offers to list, at their price")

    @app.get(f"{PROGRAM}/rewards", response_model=api.RewardsOut, tags=["rewards"], dependencies=[read],
             responses=error_responses(401, 403, 404, 422, 503, reasons={404: api.UNKNOWN_PROGRAM}),
             summary="The rewards that can be redeemed now; for a member, those they may redeem, at their price")
    async def get_rewards(program_id: ProgramPath,
                          member_id: Annotated[str | None, member_query] = None) -> api.RewardsOut:
        """The rewards of the programme version in effect that can be redeemed now and are in stock, each at its
        price. With `member_id`, only those this member may redeem now (tier-only rewards, a block, the programme's
        and the reward's limits are checked; points are not, the ledger judges them at redemption), at the member's
        tier price, with the member's `tier` and `blocked`. A programme not in effect is 404 `unknown_program`.
        Needs the `read` scope."""
        now = clock()
        # A member sees the rewards at their arm's prices and availability; without one, the version's own.
        programme = catalogue.in_force(program_id, now) if member_id is None else catalogue.for_member(
            program_id, member_id, now)[0]
        member, found = await runtime.read(lambda db: redeem.offers(db, programme, member_id, now))
        return api.RewardsOut(program_id=program_id, version=programme.version, member_id=member_id,
                              tier=member.tier, blocked=member.blocked, rewards=[api.reward_out(o) for o in found])

    @app.post(f"{PROGRAM}/rewards/{{reward_id}}/stock", response_model=api.StockOut, tags=["rewards"],
              responses=error_responses(400, 401, 403, 404, 409, 422, 503, reasons={
                  404: {**api.UNKNOWN_PROGRAM, "unknown_reward": "the catalogue has no reward 'tote-bgs'"},
                  409: {"no_stock_kept": "'coupon-5' has no stock in the catalogue: it never runs out"}}),
              summary="Add stock to a reward (admin)")
    async def post_stock(program_id: ProgramPath, reward_id: PathId, body: api.StockIn,
                         caller: Annotated[ApiKey, admin], idempotency_key: api.StockKey = None) -> api.StockOut:
        """Add `quantity` units to the stock of a reward that keeps stock (one with `stock` in the catalogue) and
        answer the stock left after it. With an `Idempotency-Key`, a retry with the same key adds nothing again
        (`added: false`). Refusals: 404 `unknown_reward`, 409 `no_stock_kept` for a reward that never runs out.
        Needs the `admin` scope."""
        now = clock()
        programme = catalogue.in_force(program_id, now)
        added, left = await runtime.transaction(lambda uow: redeem.add_stock(
            uow, programme, reward_id, body.quantity, idempotency_key, caller.key_id, metrics, now))
        return api.StockOut(program_id=program_id, reward_id=reward_id, added=added, stock_left=left)

    @app.post(f"{PROGRAM}/redemptions", response_model=api.RedemptionOut, status_code=202, tags=["redemptions"],
              dependencies=[redeem_scope], summary="Redeem a reward: 202 pending, 201 completed (with ?wait), 409 "
                                                   "rejected with the reason",
              responses={201: {"model": api.RedemptionOut, "description": "completed"},
                         409: {"model": api.RedemptionRefused, "description": "rejected, with the reason",
                               "content": {"application/json": examples(api.REDEMPTION_REFUSALS)}},
                         **error_responses(400, 401, 403, 404, 422, 503, reasons={
                             404: api.UNKNOWN_PROGRAM, 503: api.KEY_MISMATCH, 422: {"idempotency_conflict": (
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
        answer the redemption that key made (and, within `JIFEN_COUPON_REVEAL_WINDOW_S` of the answer that first
        showed its coupon's code, show that code again, for a till that lost that answer); another body is 422
        `idempotency_conflict`. Needs the `redeem` scope."""
        now = clock()
        # The member's arm of every experiment running now prices the reward and says whether it is available.
        programme, arms = catalogue.for_member(program_id, body.member_id, now)
        ask = redeem.Ask(program_id, body.member_id, body.reward_id, body.quantity, idempotency_key)
        rid = redeem.new_id()
        # Listening before the commit: the ledger's answer cannot arrive before this request waits for it.
        async with waiting.watching(rid) if wait > 0 else contextlib.nullcontext() as watch:
            made = await runtime.transaction(lambda uow: redeem.redeem(uow, programme, ask, rid, metrics, now, arms))
            fresh = made.redemption_id == rid
            # A new redemption is as this request left it: pending, or rejected by a rule, with nothing else yet.
            shown = redeem.Shown(made) if fresh else await looked(program_id, made.redemption_id)()
            if watch is not None and fresh:
                shown = await watch.until(looked(program_id, rid), settled, wait, known=shown)
        if wait > 0 and not fresh:  # a replay: the redemption its key made first
            shown = await waiting.until(made.redemption_id, looked(program_id, made.redemption_id), settled, wait)
        shown = await revealed(shown, may_see_code=True, again=not fresh)
        r = shown.redemption
        if r.status == "rejected":
            return JSONResponse(api.RedemptionRefused(error=r.reason or "rejected", detail=r.detail or "",
                                                      redemption_id=r.redemption_id, status="rejected").model_dump(),
                                status_code=409)
        response.status_code = 202 if r.status == "pending" else 201
        return api.redemption_out(shown, clock())

    @app.get(f"{PROGRAM}/redemptions/{{redemption_id}}", response_model=api.RedemptionOut, tags=["redemptions"],
             responses=error_responses(401, 403, 404, 422, 503,
                                       reasons={404: api.UNKNOWN_REDEMPTION, 503: api.KEY_MISMATCH}),
             summary="A redemption: its status, the reason of a rejection, its coupon")
    async def get_redemption(program_id: ProgramPath, redemption_id: PathId,
                             caller: Annotated[ApiKey, read]) -> api.RedemptionOut:
        """A redemption as it stands: `status` (pending, completed, rejected, cancelled), the reason and detail of
        a rejection, `cancellable_until`, `fulfilment` and its coupon. A coupon's code is shown once here, in the
        first answer with the `redeem` scope to find the redemption completed; every later answer, and every answer
        to a key with only `read`, has `code: null` (only the redemption request itself, repeated with its
        `Idempotency-Key` within the reveal window, shows it again). 404 `unknown_redemption`. Needs the `read`
        scope."""
        shown = await looked(program_id, redemption_id)()
        return api.redemption_out(await revealed(shown, caller.allows("redeem")), clock())

    @app.post(f"{PROGRAM}/redemptions/{{redemption_id}}/cancel", response_model=api.RedemptionOut,
              tags=["redemptions"], dependencies=[redeem_scope], responses=error_responses(
                  401, 403, 404, 409, 422, 503,
                  reasons={404: api.UNKNOWN_REDEMPTION, 409: api.CANCEL_REFUSALS, 503: api.KEY_MISMATCH}),
              summary="Cancel a completed redemption within its reward's window: the points back, the coupon voided")
    async def post_cancel(program_id: ProgramPath, redemption_id: PathId) -> api.RedemptionOut:
        """Cancel a completed redemption within its reward's `cancel_hours`: the ledger reverses the capture, so the
        points come back with the expiry of the lots they were spent from; an unused coupon is voided, the stock
        given back, and `jifen.redemption.cancelled.v1` announced. Refusals (409): `coupon_used`,
        `cancel_window_closed`, `not_cancellable`, `redemption_pending`, `redemption_rejected`; cancelling a cancelled
        redemption answers it as it is. Needs the `redeem` scope."""
        now = clock()
        await runtime.transaction(lambda uow: redeem.cancel(uow, program_id, redemption_id, metrics, now))
        shown = await looked(program_id, redemption_id)()
        return api.redemption_out(await revealed(shown, may_see_code=True), now)

    @app.post(f"{PROGRAM}/payments", response_model=api.PaymentOut, status_code=202, tags=["payments"],
              dependencies=[redeem_scope], summary="Authorise paying part of a basket with points (a hold)",
              responses={201: {"model": api.PaymentOut, "description": "authorised (with ?wait)"},
                         **error_responses(400, 401, 403, 404, 409, 422, 503, reasons={
                             404: api.UNKNOWN_PROGRAM, 409: api.PAYMENT_REFUSALS, 422: {"idempotency_conflict": (
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
        programme = catalogue.in_force(program_id, now)
        ask = payments.PaymentAsk(program_id, body.member_id, body.order_id, body.points, body.basket_total,
                                  body.currency, idempotency_key)
        made = await runtime.transaction(lambda uow: payments.authorise(uow, programme, ask, metrics, now))
        return await answer_payment(program_id, made.payment_id, wait, response, {"pending"}, None, 201)

    @app.get(f"{PROGRAM}/payments/{{payment_id}}", response_model=api.PaymentOut, tags=["payments"],
             dependencies=[read], summary="A points payment",
             responses=error_responses(401, 403, 404, 422, 503, reasons={404: api.UNKNOWN_PAYMENT}))
    async def get_payment(program_id: ProgramPath, payment_id: PathId) -> api.PaymentOut:
        """A points payment: its status (pending, authorised, capturing, captured, voiding, voided, expired,
        rejected, with the reason of a rejection), the points authorised and what they pay (`value`, rounded down to
        the currency's minor unit), what was captured, the points refunds of the order gave back, and when an
        authorisation not captured is released. 404 `unknown_payment`. Needs the `read` scope."""
        return api.payment_out(*await runtime.read(lambda db: payments.read(db, program_id, payment_id)))

    @app.post(f"{PROGRAM}/payments/{{payment_id}}/capture", response_model=api.PaymentOut, status_code=202,
              tags=["payments"], dependencies=[redeem_scope], summary="Capture at most the authorised points",
              responses={200: {"model": api.PaymentOut, "description": "captured (with ?wait)"},
                         **error_responses(400, 401, 403, 404, 409, 422, 503,
                                           reasons={404: api.UNKNOWN_PAYMENT, 409: api.CAPTURE_REFUSALS})})
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
        await runtime.transaction(lambda uow: payments.capture(uow, program_id, payment_id, points, metrics, now))
        return await answer_payment(program_id, payment_id, wait, response, {"capturing"}, {"captured"}, 200)

    @app.post(f"{PROGRAM}/payments/{{payment_id}}/void", response_model=api.PaymentOut, status_code=202,
              tags=["payments"], dependencies=[redeem_scope], summary="Release an authorisation",
              responses={200: {"model": api.PaymentOut, "description": "voided (with ?wait)"},
                         **error_responses(401, 403, 404, 409, 422, 503,
                                           reasons={404: api.UNKNOWN_PAYMENT, 409: api.VOID_REFUSALS})})
    async def post_void(program_id: ProgramPath, payment_id: PathId, response: Response, wait: Wait = 0) -> Any:
        """Release an authorisation: the ledger releases the hold. The answer is 202 `voiding`; `?wait=S` (at most
        10) waits for the ledger: 200 `voided` (or `expired`, when the hold timed out first), or 409. Voiding a
        voided payment answers it as it is; a captured, capturing, expired or rejected one is 409
        `payment_<status>`. Needs the `redeem` scope."""
        now = clock()
        await runtime.transaction(lambda uow: payments.void(uow, program_id, payment_id, metrics, now))
        return await answer_payment(program_id, payment_id, wait, response, {"voiding"}, {"voided", "expired"}, 200)

    @app.get(f"{PROGRAM}/coupons/{{code}}", response_model=api.CouponView, tags=["coupons"], dependencies=[read],
             responses=error_responses(401, 403, 404, 422, 503, reasons={404: api.UNKNOWN_COUPON}),
             summary="A coupon by its code: valid, used, void or expired; its value and expiry")
    async def get_coupon(program_id: ProgramPath, code: api.CouponCode) -> api.CouponView:
        """A coupon by the code printed on it (any case, with or without dashes): `status` (valid, used, void or
        expired) and `valid`, its value, currency and expiry, and the order it was used on. An unknown code, or one
        of another programme, is 404 `unknown_coupon`; the answer never repeats the code. Needs the `read` scope."""
        return api.coupon_view(await runtime.read(lambda db: coupons.find(db, program_id, code)), clock())

    @app.post(f"{PROGRAM}/coupons/{{code}}/use", response_model=api.CouponView, tags=["coupons"],
              dependencies=[redeem_scope], responses=error_responses(
                  400, 401, 403, 404, 409, 422, 503, reasons={404: api.UNKNOWN_COUPON, 409: api.COUPON_REFUSALS}),
              summary="Use a coupon on an order: once; the same order again changes nothing")
    async def post_use(program_id: ProgramPath, code: api.CouponCode,
                       body: api.CouponUseIn) -> api.CouponView:
        """Use a coupon on `order_id`, once: it becomes `used` and `jifen.coupon.used.v1` is announced. The same
        order again changes nothing and answers the coupon; another order is 409 `coupon_used`, a voided or expired
        coupon 409 `coupon_void` or `coupon_expired`, an unknown code 404 `unknown_coupon`. Needs the `redeem`
        scope."""
        now = clock()
        used = await runtime.transaction(lambda uow: coupons.use(uow, program_id, code, body.order_id, metrics, now))
        return api.coupon_view(used, now)

    def looked(program_id: str, redemption_id: str) -> Callable[[], Awaitable[redeem.Shown]]:
        return lambda: runtime.read(lambda db: redeem.look(db, program_id, redemption_id))

    def settled(shown: redeem.Shown) -> bool:
        return shown.redemption.status != "pending"

    async def revealed(shown: redeem.Shown, may_see_code: bool, again: bool = False) -> redeem.Shown:
        """The code in the first answer that may show it; `again` (the same redemption request repeated) within the
        reveal window too."""
        key, window = desk.coupon_key, desk.reveal_window_s
        if redeem.reveal_due(shown, may_see_code):
            first = shown
            shown = await runtime.transaction(lambda uow: redeem.reveal(uow, first, key, window, clock()))
        if again and shown.code is None and redeem.reshow_due(shown):
            shown_before = shown
            shown = await runtime.read(lambda db: redeem.reshow(db, shown_before, key, window, clock()))
        return shown

    async def answer_payment(program_id: str, payment_id: str, wait: float, response: Response, moving: set[str],
                             fine: set[str] | None, code: int) -> Any:
        """202 while `moving`; `code` once settled as hoped (`fine`, None: anything but rejected); else 409."""
        found, returned = await waiting.until(
            payment_id, lambda: runtime.read(lambda db: payments.read(db, program_id, payment_id)),
            lambda p: p[0].status not in moving, wait)
        if found.status == "rejected" or (fine is not None and found.status not in fine | moving):
            reason = found.reason if found.status == "rejected" and found.reason else f"payment_{found.status}"
            return JSONResponse({"error": reason, "detail": found.detail or f"the payment is {found.status}"},
                                status_code=409)
        response.status_code = 202 if found.status in moving else code
        return api.payment_out(found, returned)
