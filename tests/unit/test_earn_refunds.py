"""Refunds take back exactly what the refunded lines earned, rule by rule, in proportion."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.earn.domain import MemberTier, lines_of, rule_points
from services.earn.programme import Programme
from services.earn.refunds import Earned, Order, RefundRefused, points_to_take_back
from shared import keys
from shared.contracts.purchases import PurchaseCompleted, PurchaseLine, PurchaseRefunded

WHEN = datetime(2026, 11, 9, 10, tzinfo=UTC)
GOLD = MemberTier("gold", Decimal("1.25"))  # a gold member's tier points are taken back like every other rule's
SHOP = Programme.model_validate({
    "program_id": "shop", "name": "Shop", "version": 1, "effective_from": "2026-01-01T00:00:00Z",
    "purchase": {"base": {"points_per_unit": "1"},
                 "multipliers": [{"rule_id": "dairy-x2", "categories": ["dairy"], "multiplier": "2"}],
                 "rebates": [{"rule_id": "rebate", "min_total": "10", "percent": "3"}]}})


def line(sku: str, total: str, category: str | None = None) -> PurchaseLine:
    return PurchaseLine(sku=sku, category=category, quantity=Decimal(1), unit_price=Decimal(total),
                        total=Decimal(total))


def order_of(*lines: PurchaseLine, tier: MemberTier | None = None) -> tuple[Order, dict[str, int]]:
    purchase = PurchaseCompleted(member_id="m1", order_id="o1", channel="pos", currency="CNY",
                                 total=sum((ln.total for ln in lines), Decimal(0)), lines=list(lines))
    earned = [Earned(r.rule_id, keys.earn_credit("e", r.rule_id), r.points, r.lines)
              for r in rule_points(SHOP, WHEN, purchase, tier) if r.points]
    order = Order("o1", "m1", purchase.total, [(ln.sku, ln.total) for ln in lines_of(purchase)], earned)
    return order, {e.rule_id: e.points for e in earned}


def refund(total: str, *lines: PurchaseLine, refund_id: str = "r1") -> PurchaseRefunded:
    return PurchaseRefunded(member_id="m1", order_id="o1", refund_id=refund_id, currency="CNY",
                            total=Decimal(total), lines=list(lines) or None)


def test_refunding_one_line_takes_back_only_that_lines_points_of_every_rule() -> None:
    order, earned = order_of(line("milk", "10.50", "dairy"), line("bread", "20", "bakery"))
    assert earned == {"base": 30, "dairy-x2": 10}  # the rebate, 0.915, rounds to nothing
    # milk earned base 10.5, ×2 10.5, rebate 0.315 → floor per rule of what the milk line earned
    assert points_to_take_back(order, [], refund("10.50", line("milk", "10.50"))) == {"base": 10, "dairy-x2": 10}


def test_partial_refunds_add_up_to_exactly_what_was_earned() -> None:
    order, earned = order_of(line("a", "100", "dairy"))
    thirds = [refund("33.33", refund_id="r1"), refund("33.33", refund_id="r2"), refund("33.34", refund_id="r3")]
    taken: dict[str, int] = {}
    for n, r in enumerate(thirds):
        for rule, points in points_to_take_back(order, thirds[:n], r).items():
            taken[rule] = taken.get(rule, 0) + points
    assert taken == {k: v for k, v in earned.items() if v}


@pytest.mark.parametrize(("refunds", "reason"), [
    ([refund("31")], "refund_exceeds_order"),
    ([refund("20", line("milk", "20"))], "refund_exceeds_order"),
    ([refund("5", line("cheese", "5"))], "unknown_line"),
])
def test_a_refund_larger_than_the_order_or_of_a_line_it_never_had_is_refused(
        refunds: list[PurchaseRefunded], reason: str) -> None:
    order, _ = order_of(line("milk", "10", "dairy"), line("bread", "20"))
    with pytest.raises(RefundRefused) as refused:
        points_to_take_back(order, refunds[:-1], refunds[-1])
    assert refused.value.reason == reason


money = st.decimals(min_value="0.01", max_value=1000, places=2)


@given(st.lists(st.tuples(money, st.sampled_from([None, "dairy"])), min_size=1, max_size=5),
       st.lists(st.integers(1, 100), min_size=1, max_size=5))
def test_refunding_every_line_in_any_pieces_returns_the_order_to_zero(
        spec: list[tuple[Decimal, str | None]], cuts: list[int]) -> None:
    lines = [line(f"sku{i}", str(total), category) for i, (total, category) in enumerate(spec)]
    order, earned = order_of(*lines, tier=GOLD)
    # Refund each line in pieces proportional to `cuts`, the last piece taking the rest exactly.
    refunds: list[PurchaseRefunded] = []
    for ln in lines:
        left = ln.total
        for n, cut in enumerate(cuts):
            piece = left if n == len(cuts) - 1 else min(left, (ln.total * cut / 100).quantize(Decimal("0.01")))
            if piece > 0:
                refunds.append(refund(str(piece), line(ln.sku, str(piece)), refund_id=f"r{len(refunds)}"))
                left -= piece
    taken: dict[str, int] = {}
    for n, r in enumerate(refunds):
        for rule, points in points_to_take_back(order, refunds[:n], r).items():
            assert points > 0
            taken[rule] = taken.get(rule, 0) + points
    assert taken == {k: v for k, v in earned.items() if v}


def test_a_refund_by_total_after_a_line_refund_takes_back_the_rest_of_the_other_lines() -> None:
    order, _ = order_of(line("milk", "10", "dairy"), line("bread", "20"))
    milk = refund("10", line("milk", "10"), refund_id="r1")
    rest = refund("20", refund_id="r2")
    assert points_to_take_back(order, [], milk) == {"base": 10, "dairy-x2": 10}
    assert points_to_take_back(order, [milk], rest) == {"base": 20}
    with pytest.raises(RefundRefused):
        points_to_take_back(order, [milk, rest], refund("0.01", refund_id="r3"))
