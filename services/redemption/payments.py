"""Points as payment (抵扣) over HTTP: authorise (a hold, checked against the programme's `points_payment`), capture
(at most the authorised points) and void. The ledger's answers settle them (handlers.py); an authorisation never
captured is released by the hold's own timeout."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import asyncpg
import orjson

from services.redemption import events, paying, repository
from services.redemption.domain import Refused
from services.redemption.metrics import RedemptionMetrics
from services.redemption.paying import OPEN_PAYMENT, Payment
from services.redemption.programme import RedemptionProgramme
from shared.uow import UnitOfWork


@dataclass(frozen=True, slots=True)
class PaymentAsk:
    program_id: str
    member_id: str
    order_id: str
    points: int
    basket_total: Decimal
    currency: str | None
    idempotency_key: str

    @property
    def digest(self) -> bytes:
        body = {"member_id": self.member_id, "order_id": self.order_id, "points": self.points,
                "basket_total": str(self.basket_total.normalize()), "currency": self.currency}
        return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).digest()


def _refused(metrics: RedemptionMetrics, program_id: str, operation: str, reason: str, detail: str) -> Refused:
    metrics.refusals.labels(program_id, operation, reason).inc()
    return Refused(reason, detail)


def _unknown(program_id: str, payment_id: str) -> Refused:
    return Refused("unknown_payment", f"programme {program_id!r} has no payment {payment_id!r}")


async def authorise(uow: UnitOfWork, programme: RedemptionProgramme, ask: PaymentAsk,
                    metrics: RedemptionMetrics, now: datetime) -> Payment:
    """Record the payment and ask the ledger for its hold; the same key and body answer the payment it made."""
    member = await repository.members.lock_member(uow.db, ask.program_id, ask.member_id)
    known = await repository.payments.payment_by_key(uow.db, ask.program_id, ask.idempotency_key)
    if known is not None:
        if known[1] != ask.digest:
            raise Refused("idempotency_conflict", f"Idempotency-Key {ask.idempotency_key!r} was used for another "
                                                  "payment")
        return known[0]
    rules = programme.rules.points_payment
    currency = ask.currency or (rules.currency if rules is not None else "")
    refused = paying.payment_refusal(ask.points, ask.basket_total, currency, rules)
    if refused is None and member.blocked:
        refused = Refused("blocked_member", "the member is blocked from paying with points")
    if refused is not None:
        raise _refused(metrics, ask.program_id, "pay", refused.reason, refused.detail)
    assert rules is not None
    live = await repository.payments.live_payment_of_order(uow.db, ask.program_id, ask.order_id)
    if live is not None:
        raise _refused(metrics, ask.program_id, "pay", "order_has_payment",
                       f"order {ask.order_id!r} has payment {live.payment_id} ({live.status}) already")
    p = Payment(payment_id=f"pm_{secrets.token_hex(10)}", program_id=ask.program_id, member_id=ask.member_id,
                order_id=ask.order_id, points=ask.points, basket_total=ask.basket_total, currency=currency,
                points_per_unit=rules.points_per_unit, decimals=rules.decimals, status="pending", created_at=now)
    if not await repository.payments.insert_payment(uow.db, p, ask.idempotency_key, ask.digest):
        raise Refused("idempotency_conflict", f"Idempotency-Key {ask.idempotency_key!r} or order {ask.order_id!r} "
                                              "was taken by another payment meanwhile")
    events.authorise(uow, p, rules.authorisation_ttl_seconds, programme.version, now)
    uow.after_commit.append(metrics.payments.labels(p.program_id, "pending").inc)
    return p


async def _open(uow: UnitOfWork, program_id: str, payment_id: str) -> Payment:
    p = await repository.payments.payment(uow.db, program_id, payment_id, lock=True)
    if p is None:
        raise _unknown(program_id, payment_id)
    return p


async def capture(uow: UnitOfWork, program_id: str, payment_id: str, points: int | None,
                  metrics: RedemptionMetrics, now: datetime) -> Payment:
    """Capture `points` (all the authorised points when not given); the rest of the hold is released. Asking again
    for the same capture answers the payment as it is."""
    p = await _open(uow, program_id, payment_id)
    wanted = points if points is not None else p.points
    if p.status in ("capturing", "captured") and p.capture_points == wanted:
        return p
    if p.status not in ("pending", "authorised"):
        raise _refused(metrics, program_id, "capture", f"payment_{p.status}",
                       f"payment {payment_id} is {p.status}")
    if wanted > p.points:
        raise _refused(metrics, program_id, "capture", "capture_exceeds_authorisation",
                       f"{wanted} points asked; {p.points} were authorised")
    p.status, p.capture_points = "capturing", wanted
    await repository.payments.update_payments(uow.db, [p])
    events.capture_payment(uow, p, wanted, now)
    return p


async def void(uow: UnitOfWork, program_id: str, payment_id: str, metrics: RedemptionMetrics,
               now: datetime) -> Payment:
    """Release the authorisation; voiding a voided payment answers it as it is."""
    p = await _open(uow, program_id, payment_id)
    if p.status in ("voiding", "voided"):
        return p
    if p.status not in OPEN_PAYMENT or p.status == "capturing":
        raise _refused(metrics, program_id, "void", f"payment_{p.status}", f"payment {payment_id} is {p.status}")
    p.status = "voiding"
    await repository.payments.update_payments(uow.db, [p])
    events.void_payment(uow, p, now)
    return p


async def read(db: asyncpg.Connection, program_id: str, payment_id: str) -> tuple[Payment, int]:
    """A payment and the points its refunds gave back."""
    p = await repository.payments.payment(db, program_id, payment_id)
    if p is None:
        raise _unknown(program_id, payment_id)
    return p, await repository.payments.points_returned(db, payment_id)
