"""Coupons at the till: look one up by its code, use it on an order (once; the same order again is a replay)."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from services.redemption import codes, domain, events, repository
from services.redemption.domain import Coupon, Refused
from services.redemption.metrics import RedemptionMetrics
from shared.uow import UnitOfWork


def _unknown(code: str) -> Refused:
    # The code is not echoed back: an answer is no place to repeat a secret, even a wrong one.
    return Refused("unknown_coupon", f"no coupon has this code ({len(codes.normalise(code))} characters given)")


async def find(db: asyncpg.Connection, program_id: str, code: str) -> Coupon:
    coupon = await repository.coupons.coupon_by_code(db, codes.code_hash(code))
    if coupon is None or coupon.program_id != program_id:
        raise _unknown(code)
    return coupon


async def use(uow: UnitOfWork, program_id: str, code: str, order_id: str, metrics: RedemptionMetrics,
              now: datetime) -> Coupon:
    coupon = await repository.coupons.coupon_by_code(uow.db, codes.code_hash(code), lock=True)
    if coupon is None or coupon.program_id != program_id:
        raise _unknown(code)
    refused = domain.use_refusal(coupon, order_id, now)
    if refused is not None:
        metrics.refusals.labels(program_id, "coupon", refused.reason).inc()
        raise refused
    if coupon.state == "used":
        return coupon  # this very order used it already
    coupon.state, coupon.used_order_id, coupon.used_at = "used", order_id, now
    await repository.coupons.use_coupon(uow.db, coupon.coupon_id, order_id, now)
    events.coupon_used(uow, coupon, now)
    uow.after_commit.append(metrics.coupons.labels(program_id, "used").inc)
    return coupon
