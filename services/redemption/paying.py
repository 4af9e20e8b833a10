"""Paying with points (抵扣), the pure rules: what points are worth, whether they may pay a basket, a payment and
how the ledger's outcomes move it, and what a refund gives back. Pure: no I/O, no clock. The use cases (authorise,
capture, void over HTTP) are in payments.py; the programme's `points_payment` terms in programme.py.

A payment is a hold on the member's points: authorised when the ledger places it, captured (at most the authorised
points) when the till asks, voided when released; an authorisation never captured expires with the hold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_DOWN, Decimal
from fractions import Fraction
from typing import Literal

from services.redemption.domain import Command, Outcome, Refused
from services.redemption.programme import PointsPayment
from shared import keys

PaymentStatus = Literal["pending", "authorised", "capturing", "captured", "voiding", "voided", "expired", "rejected"]

OPEN_PAYMENT: frozenset[str] = frozenset({"pending", "authorised", "capturing", "voiding"})


def points_value(points: int, points_per_unit: Decimal, decimals: int) -> Decimal:
    """What points pay, rounded down to the currency's minor unit: the member never pays with more than the points
    are worth."""
    return (Decimal(points) / points_per_unit).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_DOWN)


def payment_refusal(points: int, basket_total: Decimal, currency: str, rules: PointsPayment | None) -> Refused | None:
    if rules is None:
        return Refused("points_payment_not_offered", "this programme does not take points as payment")
    if currency != rules.currency:
        return Refused("currency_not_accepted", f"points pay {rules.currency} baskets, not {currency}")
    if points < rules.min_points:
        return Refused("below_minimum_points", f"at least {rules.min_points} points pay; {points} asked")
    value = points_value(points, rules.points_per_unit, rules.decimals)
    most = basket_total * rules.max_share
    if value > most:
        return Refused("exceeds_basket_share", f"{points} points pay {value} {currency}, more than {rules.max_share:%} "
                                               f"of the {basket_total} basket ({most})")
    return None


@dataclass
class Payment:
    payment_id: str
    program_id: str
    member_id: str
    order_id: str
    points: int  # authorised
    basket_total: Decimal
    currency: str
    points_per_unit: Decimal  # the terms it was authorised on
    decimals: int
    status: PaymentStatus
    created_at: datetime
    reason: str | None = None
    detail: str | None = None
    expires_at: datetime | None = None
    capture_points: int | None = None  # asked for by the till
    captured_points: int = 0
    settled_at: datetime | None = None

    @property
    def hold_id(self) -> str:
        return keys.hold_of("pay", self.payment_id)

    def key(self, command: Command, refund_id: str = "") -> str:
        return keys.redemption_command("pay", self.payment_id, command, refund_id)

    @property
    def captured_value(self) -> Decimal:
        return points_value(self.captured_points, self.points_per_unit, self.decimals)


def payment_after(payment: Payment, outcome: Outcome, command: Command) -> PaymentStatus | None:
    """A payment's status after a ledger outcome; None: unchanged."""
    status = payment.status
    if status not in OPEN_PAYMENT:
        return None
    match outcome:
        case "placed":
            return "authorised" if status == "pending" else None
        case "captured":
            return "captured"
        case "released":
            return "voided"
        case "expired":
            return "expired"
    # A refused hold rejects the payment; a refused capture or release is followed by the hold's own outcome (it
    # timed out, or was resolved before), which settles it.
    return "rejected" if command == "hold" else None


def points_to_return(captured: int, basket_total: Decimal, refunded_before: Decimal, refund: Decimal,
                     returned_before: int) -> int:
    """Points a refund gives back: the captured points in proportion to the share of the basket refunded so far
    (rounded down), less what earlier refunds gave back. Refunding the whole basket gives all of them back."""
    share = min(Fraction(1), Fraction(refunded_before + refund) / Fraction(basket_total))
    return max(0, math.floor(captured * share) - returned_before)
