"""Refunds: take back exactly what the refunded lines earned, rule by rule. Pure: no I/O, no clock.

What each rule gave each line of an order is kept when the order earns (`Earned`). A refund names lines
(by SKU) or only a total, which is then spread over what is not refunded yet, in proportion. Refunds add
up: after each one, each rule's points to take back are floor(Σ line points × share of the line refunded
so far), less what earlier refunds took. Refunding every line in full therefore takes back each rule's
points exactly, and no other order's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from fractions import Fraction

from shared.contracts.purchases import PurchaseLine, PurchaseRefunded
from shared.refusal import Refusal


class RefundRefused(Refusal):
    """A refund that cannot be taken back from its order (unknown line, more than is left)."""


@dataclass(frozen=True)
class Earned:
    """One rule's credit on one order, with the exact points of each line (by line index)."""

    rule_id: str
    credit_key: str
    points: int
    line_points: dict[int, Decimal]


@dataclass(frozen=True)
class Order:
    order_id: str
    member_id: str
    total: Decimal
    lines: list[tuple[str, Decimal]]  # (sku, total) by line index
    earned: list[Earned]
    occurred_at: datetime | None = None  # when it was bought: the member's experiment arms then judge its refunds


def refunded_shares(order: Order, refunds: list[PurchaseRefunded]) -> dict[int, Fraction]:
    """The share (0..1) of each line refunded by these refunds together, or RefundRefused. Exact fractions:
    a third refunded three times is the whole line, not 0.999…"""
    refunded_total = sum((r.total for r in refunds), Decimal(0))
    if refunded_total > order.total:
        raise RefundRefused("refund_exceeds_order", f"refunds of {refunded_total} exceed order {order.order_id}'s "
                                                    f"total of {order.total}")
    by_line = dict.fromkeys(range(len(order.lines)), Fraction(0))
    for refund in refunds:
        if refund.lines:
            _spread_lines(order, refund.lines, by_line)
        else:  # no lines: spread over what is not refunded yet, in proportion to it
            remaining = {i: Fraction(total) - by_line[i] for i, (_, total) in enumerate(order.lines)}
            left = sum(remaining.values(), Fraction(0))
            for i, rest in remaining.items():
                by_line[i] += Fraction(refund.total) * rest / left if left else Fraction(0)
    shares = {}
    for i, (sku, total) in enumerate(order.lines):
        if by_line[i] > total:
            raise RefundRefused("refund_exceeds_order", f"line {sku!r} of order {order.order_id} was {total}; "
                                                        f"{float(by_line[i]):.2f} refunded")
        shares[i] = by_line[i] / Fraction(total) if total else Fraction(1)
    return shares


def _spread_lines(order: Order, lines: list[PurchaseLine], by_line: dict[int, Fraction]) -> None:
    for refunded in lines:
        left = Fraction(refunded.total)
        for i, (sku, total) in enumerate(order.lines):  # the same SKU on several lines: fill them in order
            if sku == refunded.sku and left > 0:
                part = min(left, Fraction(total) - by_line[i])
                by_line[i] += part
                left -= part
        if left > 0:
            known = any(sku == refunded.sku for sku, _ in order.lines)
            raise RefundRefused("refund_exceeds_order" if known else "unknown_line",
                                f"order {order.order_id} has {'less of' if known else 'no line with'} SKU "
                                f"{refunded.sku!r} than refunded ({refunded.total})")


def points_to_take_back(order: Order, earlier: list[PurchaseRefunded], refund: PurchaseRefunded) -> dict[str, int]:
    """Points per rule that this refund takes back (rules with nothing to take back are left out)."""
    before = refunded_shares(order, earlier)
    after = refunded_shares(order, [*earlier, refund])
    back = {}
    for earned in order.earned:
        then = math.floor(sum((Fraction(p) * before[i] for i, p in earned.line_points.items()), Fraction(0)))
        now = math.floor(sum((Fraction(p) * after[i] for i, p in earned.line_points.items()), Fraction(0)))
        if now > then:
            back[earned.rule_id] = min(now, earned.points) - min(then, earned.points)
    return back
