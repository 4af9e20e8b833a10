from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.earn.domain import PurchaseRule, credit_for_purchase, purchase_points
from services.earn.programmes import ProgrammeError, load_file, load_folder
from services.earn.settings import EarnSettings
from shared.contracts import PurchaseCompleted

WHEN = datetime(2026, 11, 1, tzinfo=UTC)


def purchase(total: str) -> PurchaseCompleted:
    return PurchaseCompleted(member_id="m1", order_id="o1", channel="pos", currency="CNY", total=Decimal(total))


@pytest.mark.parametrize(("total", "rate", "points"), [
    ("123.45", "1", 123), ("0.99", "1", 0), ("10", "1", 10), ("10.00", "0.5", 5), ("9.99", "1.5", 14),
])
def test_points_are_floor_of_total_times_rate(total: str, rate: str, points: int) -> None:
    assert purchase_points(PurchaseRule(points_per_unit=Decimal(rate)), Decimal(total)) == points


@given(st.decimals(min_value=0, max_value=10**9, places=2), st.decimals(min_value="0.01", max_value=100, places=2))
def test_points_are_never_negative_nor_more_than_the_exact_product(total: Decimal, rate: Decimal) -> None:
    points = purchase_points(PurchaseRule(points_per_unit=rate), total)
    assert 0 <= points <= total * rate < points + 1


def test_shipped_default_programme_earns_one_point_per_unit() -> None:
    programmes = load_folder(EarnSettings().programmes_dir)
    credit = credit_for_purchase(programmes["default"], "pos://s1|e1", WHEN, purchase("88.80"))
    assert credit is not None and credit.amount == 88
    assert credit.idempotency_key == "earn:pos://s1|e1:base"  # derived from the cause: a re-derivation matches
    assert credit.cause.rule_id == "base" and credit.cause.rule_version == 1
    assert credit.available_at == WHEN and credit.details is not None


def test_a_purchase_worth_no_point_asks_the_ledger_for_nothing() -> None:
    programmes = load_folder(EarnSettings().programmes_dir)
    assert credit_for_purchase(programmes["default"], "pos://s1|e2", WHEN, purchase("0.50")) is None


def test_a_broken_programme_file_is_named_with_its_field(tmp_path: Path) -> None:
    bad = tmp_path / "loyalty.yaml"
    bad.write_text("program_id: loyalty\nname: x\nversion: 0\neffective_from: 2020-01-01T00:00:00Z\n"
                   "purchase: {points_per_unit: '-1'}\n")
    with pytest.raises(ProgrammeError, match=r"loyalty\.yaml.*version.*purchase\.points_per_unit"):
        load_file(bad)
