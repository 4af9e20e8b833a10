"""Everything the redemption service sends, in one place: its ledger commands (keys derived from the redemption or
payment, so a command derived again is the same command) and its outcomes on jifen.redemptions (event ids derived
the same way). All of it goes through the unit of work's outbox."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.redemption.domain import Coupon, Redemption
from services.redemption.paying import Payment
from shared import keys
from shared.contracts.ledger_commands import CaptureHold, Cause, PlaceHold, ReleaseHold, ReverseEntry
from shared.contracts.redemptions import (
    CouponUsed,
    IssuedCoupon,
    PaymentCaptured,
    PaymentVoided,
    RedemptionCancelled,
    RedemptionCompleted,
    RedemptionRejected,
)
from shared.uow import UnitOfWork

SOURCE = "jifen.redemption"


def _cause(subject: str, reason: str, rule_id: str | None = None, rule_version: int | None = None,
           arms: dict[str, str] | None = None) -> Cause:
    return Cause(source_event_id=keys.cause_of(SOURCE, subject), rule_id=rule_id, rule_version=rule_version,
                 reason=reason, arms=arms or None)


def _ids(r: Redemption) -> dict[str, Any]:
    return {"program_id": r.program_id, "member_id": r.member_id, "redemption_id": r.redemption_id,
            "reward_id": r.reward_id, "arms": r.arms}


# --- redemptions ----------------------------------------------------------------------------------------

def place_hold(uow: UnitOfWork, r: Redemption, ttl_seconds: int, version: int, now: datetime) -> None:
    uow.emit(PlaceHold(idempotency_key=r.key("hold"), program_id=r.program_id, member_id=r.member_id,
                       cause=_cause(r.redemption_id, "redemption", r.reward_id, version, r.arms), occurred_at=now,
                       hold_id=r.hold_id, amount=r.points, ttl_seconds=ttl_seconds,
                       details={"reward_id": r.reward_id, "quantity": r.quantity}), at=now)


def capture(uow: UnitOfWork, r: Redemption, now: datetime) -> None:
    uow.emit(CaptureHold(idempotency_key=r.key("capture"), program_id=r.program_id, member_id=r.member_id,
                         cause=_cause(r.redemption_id, "redemption", r.reward_id, arms=r.arms), occurred_at=now,
                         hold_id=r.hold_id, amount=r.points), at=now)


def give_back(uow: UnitOfWork, r: Redemption, now: datetime) -> None:
    """A cancellation: the capture reversed, so the points come back with the expiry of the lots they left."""
    uow.emit(ReverseEntry(idempotency_key=r.key("cancel"), program_id=r.program_id, member_id=r.member_id,
                          cause=_cause(r.redemption_id, "redemption cancelled", r.reward_id, arms=r.arms),
                          occurred_at=now,
                          entry_key=r.key("capture")), at=now)


def completed(uow: UnitOfWork, r: Redemption, coupon: Coupon | None, now: datetime) -> None:
    issued = IssuedCoupon(coupon_id=coupon.coupon_id, value=coupon.value, currency=coupon.currency,
                          expires_at=coupon.expires_at) if coupon is not None else None
    uow.emit(RedemptionCompleted(**_ids(r), kind=r.kind, quantity=r.quantity, points=r.points, coupon=issued),
             at=now, event_id=keys.redemption_event("redemption-completed", r.redemption_id))


def rejected(uow: UnitOfWork, r: Redemption, now: datetime) -> None:
    assert r.reason is not None
    uow.emit(RedemptionRejected(**_ids(r), reason=r.reason, detail=r.detail or ""), at=now,
             event_id=keys.redemption_event("redemption-rejected", r.redemption_id))


def cancelled(uow: UnitOfWork, r: Redemption, now: datetime) -> None:
    uow.emit(RedemptionCancelled(**_ids(r), points_returned=r.points), at=now,
             event_id=keys.redemption_event("redemption-cancelled", r.redemption_id))


def coupon_used(uow: UnitOfWork, coupon: Coupon, now: datetime) -> None:
    assert coupon.used_order_id is not None
    uow.emit(CouponUsed(program_id=coupon.program_id, member_id=coupon.member_id, coupon_id=coupon.coupon_id,
                        redemption_id=coupon.redemption_id, order_id=coupon.used_order_id, value=coupon.value,
                        currency=coupon.currency),
             at=now, event_id=keys.redemption_event("coupon-used", coupon.coupon_id))


# --- points payments ------------------------------------------------------------------------------------

def authorise(uow: UnitOfWork, p: Payment, ttl_seconds: int, version: int, now: datetime) -> None:
    uow.emit(PlaceHold(idempotency_key=p.key("hold"), program_id=p.program_id, member_id=p.member_id,
                       cause=_cause(p.payment_id, "points payment", "points_payment", version), occurred_at=now,
                       hold_id=p.hold_id, amount=p.points, ttl_seconds=ttl_seconds,
                       details={"order_id": p.order_id, "basket_total": str(p.basket_total),
                                "currency": p.currency}), at=now)


def capture_payment(uow: UnitOfWork, p: Payment, points: int, now: datetime) -> None:
    uow.emit(CaptureHold(idempotency_key=p.key("capture"), program_id=p.program_id, member_id=p.member_id,
                         cause=_cause(p.payment_id, "points payment"), occurred_at=now, hold_id=p.hold_id,
                         amount=points, details={"order_id": p.order_id}), at=now)


def void_payment(uow: UnitOfWork, p: Payment, now: datetime) -> None:
    uow.emit(ReleaseHold(idempotency_key=p.key("void"), program_id=p.program_id, member_id=p.member_id,
                         cause=_cause(p.payment_id, "points payment voided"), occurred_at=now, hold_id=p.hold_id),
             at=now)


def refund_points(uow: UnitOfWork, p: Payment, refund_id: str, points: int, now: datetime) -> None:
    """What a refund of the order gives back: part of the capture reversed, keyed by the refund."""
    uow.emit(ReverseEntry(idempotency_key=p.key("refund", refund_id), program_id=p.program_id,
                          member_id=p.member_id,
                          cause=_cause(keys.refund_subject(p.payment_id, refund_id), "order refunded"),
                          occurred_at=now, entry_key=p.key("capture"), amount=points,
                          details={"order_id": p.order_id, "refund_id": refund_id}), at=now)


def payment_captured(uow: UnitOfWork, p: Payment, now: datetime) -> None:
    uow.emit(PaymentCaptured(program_id=p.program_id, member_id=p.member_id, payment_id=p.payment_id,
                             order_id=p.order_id, points=p.captured_points, value=p.captured_value,
                             currency=p.currency),
             at=now, event_id=keys.redemption_event("payment-captured", p.payment_id))


def payment_voided(uow: UnitOfWork, p: Payment, why: str, now: datetime) -> None:
    uow.emit(PaymentVoided(program_id=p.program_id, member_id=p.member_id, payment_id=p.payment_id,
                           order_id=p.order_id, reason=why),
             at=now, event_id=keys.redemption_event("payment-voided", p.payment_id))
