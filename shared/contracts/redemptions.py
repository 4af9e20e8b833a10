"""jifen.redemptions: what became of redemptions, points payments and coupons. A redemption's events carry `arms`,
the member's arm of every experiment running at the redemption's time (experiment id -> arm; empty when none was):
the arm that priced the reward."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field

from shared.contracts.base import Channel, Contract, Currency, Id, Money, ProgramId, Text

RewardKind = Literal["goods", "coupon", "service", "cashback"]


class IssuedCoupon(Contract):
    """A coupon as announced: never its code, which only the redemption's own answer shows, once."""

    coupon_id: Id
    value: Money
    currency: Currency
    expires_at: datetime


class RedemptionCompleted(Contract):
    TYPE: ClassVar[str] = "jifen.redemption.completed.v1"

    program_id: ProgramId
    member_id: Id
    redemption_id: Id
    reward_id: Id
    kind: RewardKind
    quantity: int = Field(gt=0)
    points: int = Field(gt=0)
    coupon: IssuedCoupon | None = None
    arms: dict[str, str] = Field(default_factory=dict)  # the member's arms at the redemption's time


class RedemptionRejected(Contract):
    TYPE: ClassVar[str] = "jifen.redemption.rejected.v1"

    program_id: ProgramId
    member_id: Id
    redemption_id: Id
    reward_id: Id
    reason: Id  # insufficient_points, out_of_stock, daily_limit, ... (DESIGN.md, "Redemption")
    detail: Text
    arms: dict[str, str] = Field(default_factory=dict)  # the member's arms at the redemption's time


class RedemptionCancelled(Contract):
    TYPE: ClassVar[str] = "jifen.redemption.cancelled.v1"

    program_id: ProgramId
    member_id: Id
    redemption_id: Id
    reward_id: Id
    points_returned: int = Field(ge=0)
    arms: dict[str, str] = Field(default_factory=dict)  # the member's arms at the redemption's time


class PaymentCaptured(Contract):
    TYPE: ClassVar[str] = "jifen.payment.captured.v1"

    program_id: ProgramId
    member_id: Id
    payment_id: Id
    order_id: Id
    points: int = Field(gt=0)
    value: Money  # what the points paid, in the programme's currency
    currency: Currency


class PaymentVoided(Contract):
    TYPE: ClassVar[str] = "jifen.payment.voided.v1"

    program_id: ProgramId
    member_id: Id
    payment_id: Id
    order_id: Id
    reason: Id  # voided (by the till), expired (never captured in time), rejected (the ledger refused the hold)


class CouponUsed(Contract):
    TYPE: ClassVar[str] = "jifen.coupon.used.v1"

    program_id: ProgramId
    member_id: Id
    coupon_id: Id
    redemption_id: Id
    order_id: Id
    value: Money
    currency: Currency


CHANNEL = Channel("jifen.redemptions", "out", "Outcomes of redemptions, points payments and coupons.",
                  (RedemptionCompleted, RedemptionRejected, RedemptionCancelled, PaymentCaptured, PaymentVoided,
                   CouponUsed))
