"""The HTTP side's bodies and answers, with their OpenAPI examples, and the examples of what each route refuses
with."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import Header, Path, Query
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from services.redemption.domain import Coupon, Status
from services.redemption.paying import Payment, points_value
from services.redemption.programme import CashbackTerms, CouponTerms, Limit, RewardId
from services.redemption.redeem import Offer, Shown
from shared.contracts.base import Currency, Id, Money
from shared.http import ErrorBody

# Examples of what the routes refuse with, for their OpenAPI descriptions: reason → detail, as the code words them.
UNKNOWN_PROGRAM = {"unknown_program": "no programme 'defualt' (the programmes are default, retail, staff, starbucks)"}
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



def _decimal_string(value: Any) -> Any:
    # Money over HTTP is a decimal string, as the schema says: a JSON number (a float) may have lost precision.
    if not isinstance(value, str):
        raise ValueError("a decimal string such as \"100.00\", not a number")
    return value


# A basket's total: a decimal string above zero, as documented (any such string is taken).
BASKET_PATTERN = r"^([1-9][0-9]{0,11}(\.[0-9]{1,6})?|0?\.[0-9]{0,5}[1-9][0-9]{0,5})$"
BasketTotal = Annotated[Money, BeforeValidator(_decimal_string), Field(gt=0), WithJsonSchema(
    {"type": "string", "pattern": BASKET_PATTERN, "description": "a decimal string above zero, e.g. \"100.00\"",
     "examples": ["100.00"]})]

IdempotencyKey = Annotated[str, Header(min_length=1, max_length=150, pattern=r"^[\x21-\x7e]+$",
                                       description="the client's key for this request: the same key and body "
                                                   "answer the same result; another body is refused")]
Wait = Annotated[float, Query(ge=0, le=10, description="seconds (at most 10) to wait for the final state")]
CouponCode = Annotated[str, Path(min_length=10, max_length=40, pattern=r"^[A-Za-z0-9 -]+$",
                                 description="the code as printed (dashes and case do not matter)")]
StockKey = Annotated[str | None, Header(min_length=1, max_length=150, pattern=r"^[\x21-\x7e]+$",
                                        description="optional: a retry with the same key adds nothing again")]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RedeemIn(Body):
    model_config = ConfigDict(json_schema_extra={"examples": [{"member_id": "vip-0", "reward_id": "coupon-5",
                                                               "quantity": 1}]})

    member_id: Id
    reward_id: RewardId
    quantity: int = Field(default=1, ge=1, le=100)


class CouponOut(BaseModel):
    coupon_id: str
    code: str | None = Field(description="the code, in the answer that shows it: the first with the redeem scope to "
                                         "find the redemption completed, and the same redemption request again (the "
                                         "same Idempotency-Key and body) within JIFEN_COUPON_REVEAL_WINDOW_S (300 s) "
                                         "after; null in every other")
    code_shown: bool = Field(description="the code has been shown (only its hash is kept once the reveal window "
                                         "has closed)")
    value: Decimal
    currency: str
    expires_at: datetime
    status: Literal["valid", "used", "void", "expired"]


class RedemptionOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"redemption_id": "rd_4be0c2a9d17f36e85a10", "program_id": "default", "member_id": "vip-0",
         "reward_id": "coupon-5", "kind": "coupon", "quantity": 1, "points": 100, "status": "completed",
         "reason": None, "detail": None, "created_at": "2026-11-24T02:10:00.120000Z",
         "settled_at": "2026-11-24T02:10:00.480000Z", "cancelled_at": None,
         "cancellable_until": "2026-11-25T02:10:00.480000Z", "fulfilment": None,
         "coupon": {"coupon_id": "cp_9a7c3e1f0b2d4c6e8a10", "code": "7M3QK-2ZC9D-XW4HB-R8TNE", "code_shown": True,
                    "value": "5.00", "currency": "CNY", "expires_at": "2026-12-25T00:00:00Z", "status": "valid"}}]})

    redemption_id: str
    program_id: str
    member_id: str
    reward_id: str
    kind: str
    quantity: int
    points: int
    status: Status
    reason: str | None = Field(description="why it was rejected: a reason code")
    detail: str | None
    created_at: datetime
    settled_at: datetime | None = Field(description="when it was completed or rejected")
    cancelled_at: datetime | None
    cancellable_until: datetime | None
    fulfilment: str | None = Field(description="goods, services and cash back: to_fulfil once paid, withdrawn if "
                                               "cancelled")
    coupon: CouponOut | None


class RedemptionRefused(ErrorBody):
    redemption_id: str
    status: Literal["rejected"]


class RewardOut(BaseModel):
    reward_id: str
    name: str
    kind: str
    points: int = Field(description="the price of one unit for this member (the base price without a member)")
    base_points: int
    points_by_tier: dict[str, int]
    tiers: list[str] | None = Field(description="only members at these tiers may redeem it")
    stock_left: int | None = Field(description="none: the reward has no stock to run out of")
    available_until: datetime | None
    limit: Limit | None
    coupon: CouponTerms | None
    cashback: CashbackTerms | None
    cancel_hours: int | None


class RewardsOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"program_id": "default", "version": 1, "member_id": "vip-0", "tier": "gold", "blocked": False, "rewards": [
            {"reward_id": "coupon-5", "name": "5 yuan coupon", "kind": "coupon", "points": 100, "base_points": 100,
             "points_by_tier": {}, "tiers": None, "stock_left": None, "available_until": None, "limit": None,
             "coupon": {"value": "5.00", "currency": "CNY", "valid_days": 30}, "cashback": None, "cancel_hours": 24},
            {"reward_id": "coupon-30", "name": "30 yuan coupon", "kind": "coupon", "points": 450, "base_points": 500,
             "points_by_tier": {"gold": 450, "diamond": 400}, "tiers": None, "stock_left": None,
             "available_until": None, "limit": {"count": 4, "per": "month"},
             "coupon": {"value": "30.00", "currency": "CNY", "valid_days": 30}, "cashback": None,
             "cancel_hours": 24}]}]})

    program_id: str
    version: int
    member_id: str | None
    tier: str | None
    blocked: bool
    rewards: list[RewardOut]


class StockIn(Body):
    model_config = ConfigDict(json_schema_extra={"examples": [{"quantity": 50}]})

    quantity: int = Field(ge=1, le=1_000_000)


class StockOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"program_id": "retail", "reward_id": "tote-bag", "added": True, "stock_left": 231}]})

    program_id: str
    reward_id: str
    added: bool = Field(description="false when this Idempotency-Key added its stock before")
    stock_left: int


class PaymentIn(Body):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"member_id": "vip-0", "order_id": "order-9", "points": 2000, "basket_total": "100.00", "currency": "CNY"}]})

    member_id: Id
    order_id: Id
    points: int = Field(ge=1, le=10**9)
    basket_total: BasketTotal
    currency: Currency | None = Field(default=None, description="the basket's; the programme's points currency when "
                                                                "not given")


class CaptureIn(Body):
    model_config = ConfigDict(json_schema_extra={"examples": [{"points": 1500}]})

    points: int | None = Field(default=None, ge=1, le=10**9, description="at most the authorised points (default: "
                                                                         "all of them)")


class PaymentOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"payment_id": "pm_1f0e2d3c4b5a69788796", "program_id": "default", "member_id": "vip-0",
         "order_id": "order-9", "status": "authorised", "reason": None, "detail": None, "points": 2000,
         "value": "20.00", "basket_total": "100.00", "currency": "CNY", "captured_points": 0, "captured_value": "0.00",
         "points_returned": 0, "expires_at": "2026-11-24T02:25:00.350000Z", "created_at": "2026-11-24T02:10:00.200000Z",
         "settled_at": None}]})

    payment_id: str
    program_id: str
    member_id: str
    order_id: str
    status: Literal["pending", "authorised", "capturing", "captured", "voiding", "voided", "expired", "rejected"]
    reason: str | None
    detail: str | None
    points: int = Field(description="authorised")
    value: Decimal = Field(description="what the authorised points pay, rounded down to the currency's minor unit")
    basket_total: Decimal
    currency: str
    captured_points: int
    captured_value: Decimal
    points_returned: int = Field(description="given back by refunds of the order")
    expires_at: datetime | None = Field(description="when an authorisation not captured is released")
    created_at: datetime
    settled_at: datetime | None


class CouponUseIn(Body):
    model_config = ConfigDict(json_schema_extra={"examples": [{"order_id": "order-1"}]})

    order_id: Id


class CouponView(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"coupon_id": "cp_9a7c3e1f0b2d4c6e8a10", "redemption_id": "rd_4be0c2a9d17f36e85a10", "status": "used",
         "valid": False, "value": "5.00", "currency": "CNY", "expires_at": "2026-12-25T00:00:00Z",
         "used_order_id": "order-1", "used_at": "2026-11-24T03:41:12.500000Z"}]})

    coupon_id: str
    redemption_id: str
    status: Literal["valid", "used", "void", "expired"]
    valid: bool
    value: Decimal
    currency: str
    expires_at: datetime
    used_order_id: str | None
    used_at: datetime | None


def redemption_out(shown: Shown, now: datetime) -> RedemptionOut:
    r, c = shown.redemption, shown.coupon
    coupon = CouponOut(coupon_id=c.coupon_id, code=shown.code, code_shown=shown.code_shown, value=c.value,
                       currency=c.currency, expires_at=c.expires_at, status=c.status(now)) if c is not None else None
    return RedemptionOut(
        redemption_id=r.redemption_id, program_id=r.program_id, member_id=r.member_id, reward_id=r.reward_id,
        kind=r.kind, quantity=r.quantity, points=r.points, status=r.status, reason=r.reason, detail=r.detail,
        created_at=r.created_at, settled_at=r.settled_at, cancelled_at=r.cancelled_at,
        cancellable_until=r.cancellable_until, fulfilment=shown.fulfilment, coupon=coupon)


def reward_out(offer: Offer) -> RewardOut:
    r = offer.reward
    return RewardOut(reward_id=r.reward_id, name=r.name, kind=r.kind, points=offer.points, base_points=r.points,
                     points_by_tier=r.points_by_tier, tiers=r.tiers, stock_left=offer.stock_left,
                     available_until=r.available.ends if r.available else None, limit=r.limit, coupon=r.coupon,
                     cashback=r.cashback, cancel_hours=r.cancel_hours)


def payment_out(p: Payment, returned: int) -> PaymentOut:
    return PaymentOut(
        payment_id=p.payment_id, program_id=p.program_id, member_id=p.member_id, order_id=p.order_id,
        status=p.status, reason=p.reason, detail=p.detail, points=p.points,
        value=points_value(p.points, p.points_per_unit, p.decimals), basket_total=p.basket_total, currency=p.currency,
        captured_points=p.captured_points, captured_value=p.captured_value, points_returned=returned,
        expires_at=p.expires_at, created_at=p.created_at, settled_at=p.settled_at)


def coupon_view(c: Coupon, now: datetime) -> CouponView:
    status = c.status(now)
    return CouponView(coupon_id=c.coupon_id, redemption_id=c.redemption_id, status=status, valid=status == "valid",
                      value=c.value, currency=c.currency, expires_at=c.expires_at, used_order_id=c.used_order_id,
                      used_at=c.used_at)

