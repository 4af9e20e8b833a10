"""Earn rules, table by table: what a purchase earns under a programme version, and why."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from services.earn.domain import (
    MemberTier,
    credits_for_purchase,
    expires_at,
    purchase_points,
    rule_points,
    tier_at,
)
from services.earn.programme import BaseRate, Programme
from services.ledger.domain import payload_hash
from shared.contracts.purchases import PurchaseCompleted, PurchaseLine
from shared.programmes import Catalogue, ProgrammeError, load_file
from shared.settings import Settings

SATURDAY = datetime(2026, 11, 7, 10, tzinfo=UTC)
MONDAY = datetime(2026, 11, 9, 10, tzinfo=UTC)


def line(sku: str, total: str, category: str | None = None, quantity: str = "1") -> PurchaseLine:
    return PurchaseLine(sku=sku, category=category, quantity=Decimal(quantity),
                        unit_price=Decimal(total) / Decimal(quantity), total=Decimal(total))


def purchase(total: str, *lines: PurchaseLine, channel: str = "pos", store: str | None = "s1") -> PurchaseCompleted:
    return PurchaseCompleted(member_id="m1", order_id="o1", channel=channel, store_id=store, currency="CNY",
                             total=Decimal(total), lines=list(lines))


def programme(**purchase_rules: Any) -> Programme:
    rules = {"base": {"points_per_unit": "1"}, **purchase_rules}
    return Programme.model_validate({"program_id": "shop", "name": "Shop", "version": 3,
                                     "effective_from": "2026-01-01T00:00:00Z", "timezone": "Asia/Shanghai",
                                     "purchase": rules})


def points(p: Programme, order: PurchaseCompleted, at: datetime = MONDAY,
           tier: MemberTier | None = None) -> dict[str, int]:
    return {r.rule_id: r.points for r in rule_points(p, at, order, tier) if r.points}


@pytest.mark.parametrize(("total", "rate", "expected"), [
    ("123.45", "1", 123), ("0.99", "1", 0), ("10", "1", 10), ("10.00", "0.5", 5), ("9.99", "1.5", 14),
])
def test_base_points_are_the_floor_of_total_times_rate(total: str, rate: str, expected: int) -> None:
    assert purchase_points(BaseRate(points_per_unit=Decimal(rate)), Decimal(total)) == expected


RULES: list[tuple[str, dict[str, Any], PurchaseCompleted, datetime, dict[str, int]]] = [
    ("excluded lines earn nothing",
     {"exclude": {"categories": ["gift_card", "shipping"]}},
     purchase("130", line("a", "100", "food"), line("g", "20", "gift_card"), line("s", "10", "shipping")),
     MONDAY, {"base": 100}),
    ("the highest product or category multiplier applies, once",
     {"multipliers": [{"rule_id": "dairy-x2", "categories": ["dairy"], "multiplier": "2"},
                      {"rule_id": "milk-x3", "skus": ["milk"], "multiplier": "3"}]},
     purchase("50", line("milk", "10", "dairy"), line("cheese", "20", "dairy"), line("bread", "20", "bakery")),
     MONDAY, {"base": 50, "milk-x3": 20, "dairy-x2": 20}),
    ("fixed bonuses per unit and per line",
     {"bonuses": [{"rule_id": "new-sku", "skus": ["tea"], "points": 5, "per": "unit"},
                  {"rule_id": "any-line", "points": 1, "per": "line"}]},
     purchase("30", line("tea", "30", "drinks", quantity="3")), MONDAY, {"base": 30, "new-sku": 15, "any-line": 1}),
    ("a weekend campaign doubles categorised lines on a Saturday in the programme's time zone",
     {"campaigns": [{"rule_id": "weekend-x2", "multiplier": "2", "starts": "2026-11-01T00:00:00+08:00",
                     "ends": "2026-12-01T00:00:00+08:00", "weekdays": ["sat", "sun"]}]},
     purchase("40", line("a", "25", "food"), line("b", "15")), SATURDAY, {"base": 40, "weekend-x2": 25}),
    ("the campaign does not run on a Monday",
     {"campaigns": [{"rule_id": "weekend-x2", "multiplier": "2", "starts": "2026-11-01T00:00:00+08:00",
                     "ends": "2026-12-01T00:00:00+08:00", "weekdays": ["sat", "sun"]}]},
     purchase("40", line("a", "40", "food")), MONDAY, {"base": 40}),
    ("a campaign limited to online orders and a store does not apply at another till",
     {"campaigns": [{"rule_id": "online", "multiplier": "3", "starts": "2026-01-01T00:00:00Z",
                     "ends": "2027-01-01T00:00:00Z", "channels": ["online"], "stores": ["web"]}]},
     purchase("40", line("a", "40", "food")), MONDAY, {"base": 40}),
    ("a campaign never applies to a plain purchase without a category",
     {"campaigns": [{"rule_id": "all-x2", "multiplier": "2", "starts": "2026-01-01T00:00:00Z",
                     "ends": "2027-01-01T00:00:00Z"}]},
     purchase("88.80"), MONDAY, {"base": 88}),
    ("a rebate pays its percentage from the threshold, chosen products more",
     {"rebates": [{"rule_id": "rebate-5", "min_total": "100", "percent": "5",
                   "higher": [{"categories": ["wine"], "percent": "10"}]}]},
     purchase("200", line("a", "100", "food"), line("w", "100", "wine")), MONDAY, {"base": 200, "rebate-5": 15}),
    ("below the threshold there is no rebate",
     {"rebates": [{"rule_id": "rebate-5", "min_total": "100", "percent": "5"}]},
     purchase("99.99", line("a", "99.99", "food")), MONDAY, {"base": 99}),
]


@pytest.mark.parametrize(("rules", "order", "at", "expected"), [r[1:] for r in RULES], ids=[r[0] for r in RULES])
def test_purchase_rules(rules: dict[str, Any], order: PurchaseCompleted, at: datetime,
                        expected: dict[str, int]) -> None:
    assert points(programme(**rules), order, at) == expected


GOLD = MemberTier("gold", Decimal("1.5"))
VIP_CAMPAIGN = {"campaigns": [{"rule_id": "gold-x2", "multiplier": "2", "starts": "2026-01-01T00:00:00Z",
                               "ends": "2027-01-01T00:00:00Z", "tiers": ["gold"]}]}
TIER_RULES: list[tuple[str, dict[str, Any], PurchaseCompleted, MemberTier | None, dict[str, int]]] = [
    ("the tier multiplier adds the rest of ×1.5 to the base points of eligible lines",
     {"exclude": {"categories": ["gift_card"]}},
     purchase("121", line("a", "101", "food"), line("g", "20", "gift_card")), GOLD, {"base": 101, "tier": 50}),
    ("with no tier known the multiplier is 1", {}, purchase("100"), None, {"base": 100}),
    ("a tier whose multiplier is 1 earns nothing extra", {}, purchase("100"), MemberTier("basic"), {"base": 100}),
    ("a programme may ignore tiers", {"tier": None}, purchase("100"), GOLD, {"base": 100}),
    ("a campaign limited to a tier runs for its members", VIP_CAMPAIGN, purchase("10", line("a", "10", "food")), GOLD,
     {"base": 10, "tier": 5, "gold-x2": 10}),
    ("and not for other tiers", VIP_CAMPAIGN, purchase("10", line("a", "10", "food")), MemberTier("silver"),
     {"base": 10}),
    ("nor for a member without a tier", VIP_CAMPAIGN, purchase("10", line("a", "10", "food")), None, {"base": 10}),
]


@pytest.mark.parametrize(("rules", "order", "tier", "expected"), [r[1:] for r in TIER_RULES],
                         ids=[r[0] for r in TIER_RULES])
def test_tier_rules(rules: dict[str, Any], order: PurchaseCompleted, tier: MemberTier | None,
                    expected: dict[str, int]) -> None:
    assert points(programme(**rules), order, MONDAY, tier) == expected


def test_a_purchase_is_judged_by_the_tier_held_when_it_happened() -> None:
    history = [(MONDAY - timedelta(days=30), MemberTier("silver", Decimal("1.2"))), (MONDAY, GOLD)]
    assert tier_at(history, MONDAY - timedelta(days=31)) is None
    assert tier_at(history, MONDAY - timedelta(seconds=1)) == history[0][1]
    assert tier_at(history, MONDAY) == GOLD
    credits = credits_for_purchase(programme(), "pos://s1|e1", MONDAY, purchase("10"), GOLD)
    assert [(c.cause.rule_id, c.amount) for c in credits] == [("base", 10), ("tier", 5)]
    assert credits[1].details is not None
    assert credits[1].details["tier"] == "gold" and credits[1].details["rule"]["why"] == "×1.5 for tier gold"


def test_a_tier_rule_id_may_not_repeat_another_rule() -> None:
    with pytest.raises(ValueError, match="unique"):
        programme(multipliers=[{"rule_id": "tier", "skus": ["a"], "multiplier": "2"}])


def test_every_credit_explains_itself_and_is_keyed_by_its_rule() -> None:
    shop = programme(multipliers=[{"rule_id": "dairy-x2", "categories": ["dairy"], "multiplier": "2"}])
    credits = credits_for_purchase(shop, "pos://s1|e1", MONDAY, purchase("30", line("milk", "10", "dairy"),
                                                                           line("bread", "20", "bakery")))
    assert [(c.idempotency_key, c.amount) for c in credits] == [("earn:pos://s1|e1:base", 30),
                                                                ("earn:pos://s1|e1:dairy-x2", 10)]
    assert all(c.cause.rule_version == 3 for c in credits)
    assert credits[1].details is not None
    assert credits[1].details["rule"] == {"rule_id": "dairy-x2", "kind": "multiplier", "points": 10,
                                          "why": "×2 on matching lines"}
    assert credits[1].details["lines"] == [{"sku": "milk", "points": "10"}]


@pytest.mark.parametrize(("policy", "earned", "expected"), [
    ({"policy": "none"}, MONDAY, None),
    ({"policy": "rolling", "months": 24}, datetime(2026, 2, 28, 12, tzinfo=UTC),
     datetime(2028, 2, 28, 12, tzinfo=UTC)),
    ({"policy": "rolling", "months": 1}, datetime(2026, 1, 31, 12, tzinfo=UTC),
     datetime(2026, 2, 28, 12, tzinfo=UTC)),
    # The end of next year in Shanghai: 31 December 23:59:59.999999 local is 15:59:59.999999 UTC.
    ({"policy": "fixed", "month": 12, "day": 31, "years_after": 1}, MONDAY,
     datetime(2027, 12, 31, 15, 59, 59, 999999, tzinfo=UTC)),
])
def test_expiry_policies(policy: dict[str, Any], earned: datetime, expected: datetime | None) -> None:
    p = Programme.model_validate({"program_id": "p", "name": "p", "version": 1,
                                  "effective_from": "2020-01-01T00:00:00Z", "timezone": "Asia/Shanghai",
                                  "purchase": {"base": {"points_per_unit": "1"}}, "expiry": policy})
    assert expires_at(p, earned) == expected


def test_online_orders_stay_pending_for_the_return_window_and_till_purchases_do_not() -> None:
    p = Programme.model_validate({"program_id": "p", "name": "p", "version": 1,
                                  "effective_from": "2020-01-01T00:00:00Z",
                                  "purchase": {"base": {"points_per_unit": "1"}},
                                  "pending": {"days": 0, "by_channel": {"online": 14}}})
    [online] = credits_for_purchase(p, "e|1", MONDAY, purchase("10", channel="online"))
    [till] = credits_for_purchase(p, "e|2", MONDAY, purchase("10", channel="pos"))
    assert online.available_at == MONDAY + timedelta(days=14) and till.available_at == MONDAY


def test_the_shipped_default_programme_is_the_documented_one() -> None:
    catalogue = Catalogue.load(Settings().programmes_dir, Programme)
    default = catalogue.at("default", MONDAY)
    assert default is not None
    [credit] = credits_for_purchase(default, "pos://s1|e1", MONDAY, purchase("88.80"))
    assert (credit.amount, credit.idempotency_key) == (88, "earn:pos://s1|e1:base")
    assert credit.available_at == MONDAY  # no pending period
    assert credit.expires_at == datetime(2028, 11, 9, 10, tzinfo=UTC)  # 24 months rolling
    assert credits_for_purchase(default, "pos://s1|e2", MONDAY, purchase("0.50")) == []


def write(folder: Path, name: str, version: int, effective_from: str, rate: str) -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump({"program_id": "shop", "name": "Shop", "version": version,
                                    "effective_from": effective_from, "purchase": {"base": {"points_per_unit": rate}}}))
    return path


def test_an_event_is_judged_by_the_version_in_effect_at_its_own_time(tmp_path: Path) -> None:
    write(tmp_path, "shop.v1.yaml", 1, "2026-01-01T00:00:00Z", "1")
    write(tmp_path, "shop.v2.yaml", 2, "2026-11-08T00:00:00Z", "2")
    catalogue = Catalogue.load(tmp_path, Programme)
    assert catalogue.at("shop", datetime(2025, 12, 31, tzinfo=UTC)) is None
    before, after = catalogue.at("shop", SATURDAY), catalogue.at("shop", MONDAY)
    assert before is not None and after is not None and (before.version, after.version) == (1, 2)
    assert points(before, purchase("10")) == {"base": 10} and points(after, purchase("10")) == {"base": 20}


def test_a_new_version_dropped_in_the_folder_is_used_without_a_restart(tmp_path: Path) -> None:
    write(tmp_path, "shop.v1.yaml", 1, "2026-01-01T00:00:00Z", "1")
    catalogue = Catalogue.load(tmp_path, Programme)
    catalogue.check_every_s, catalogue.clock = 0, lambda: SATURDAY
    assert catalogue.at("shop", MONDAY).version == 1  # type: ignore[union-attr]
    v2 = write(tmp_path, "shop.v2.yaml", 2, "2026-11-08T00:00:00Z", "2")  # takes effect after "now" (Saturday)
    os.utime(v2, (time.time() + 5, time.time() + 5))
    assert catalogue.at("shop", MONDAY).version == 2  # type: ignore[union-attr]
    assert catalogue.at("shop", SATURDAY).version == 1  # type: ignore[union-attr]
    (tmp_path / "shop.v3.yaml").write_text("program_id: shop\nversion: oops\n")  # broken: the old ones stay
    assert catalogue.at("shop", MONDAY).version == 2  # type: ignore[union-attr]
    # Each reload is counted by outcome and the last one is kept, for jifen_programme_reload_runs_total and the
    # programme summary.
    assert catalogue.reloads == {True: 1, False: 1}
    assert catalogue.last_reload is not None and not catalogue.last_reload.ok
    assert "shop.v3.yaml" in catalogue.last_reload.detail and catalogue.last_reload.at == SATURDAY


def test_a_version_that_would_rewrite_history_is_not_loaded(tmp_path: Path) -> None:
    write(tmp_path, "shop.v1.yaml", 1, "2026-01-01T00:00:00Z", "1")
    catalogue = Catalogue.load(tmp_path, Programme)
    catalogue.check_every_s, catalogue.clock = 0, lambda: MONDAY
    past = write(tmp_path, "shop.v2.yaml", 2, "2026-11-08T00:00:00Z", "2")  # before "now" (Monday)
    os.utime(past, (time.time() + 5, time.time() + 5))
    assert catalogue.at("shop", MONDAY).version == 1  # type: ignore[union-attr]
    past.unlink()
    edited = write(tmp_path, "shop.v1.yaml", 1, "2026-01-01T00:00:00Z", "3")  # v1 changed while in effect
    os.utime(edited, (time.time() + 10, time.time() + 10))
    assert points(catalogue.at("shop", MONDAY), purchase("10")) == {"base": 10}  # type: ignore[arg-type]


def test_a_broken_programme_file_is_named_with_its_line_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "loyalty.yaml"
    bad.write_text("program_id: loyalty\nname: x\nversion: 0\neffective_from: 2020-01-01T00:00:00Z\n"
                   "purchase:\n  base:\n    points_per_unit: '-1'\n")
    with pytest.raises(ProgrammeError,
                       match=r"loyalty\.yaml: line 3: version.*line 7: purchase\.base\.points_per_unit"):
        load_file(bad, Programme)


def test_two_files_claiming_one_version_are_refused(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", 1, "2026-01-01T00:00:00Z", "1")
    write(tmp_path, "b.yaml", 1, "2026-02-01T00:00:00Z", "2")
    with pytest.raises(ProgrammeError, match=r"b\.yaml: programme 'shop' version 1 is already defined in a\.yaml"):
        Catalogue.load(tmp_path, Programme)


amounts = st.decimals(min_value=0, max_value=10**6, places=2)


tiers = st.one_of(st.none(), st.builds(MemberTier, st.sampled_from(["silver", "gold"]),
                                       st.decimals(min_value=1, max_value=5, places=2)))


@given(st.lists(st.tuples(amounts, st.sampled_from([None, "food", "dairy", "wine", "gift_card"])), max_size=6), tiers)
def test_points_are_never_negative_and_each_rule_is_the_floor_of_its_exact_sum(
        spec: list[tuple[Decimal, str | None]], tier: MemberTier | None) -> None:
    shop = programme(exclude={"categories": ["gift_card"]},
                     multipliers=[{"rule_id": "dairy-x2", "categories": ["dairy"], "multiplier": "2"}],
                     rebates=[{"rule_id": "rebate", "min_total": "50", "percent": "3.5"}],
                     campaigns=[{"rule_id": "always", "multiplier": "1.5", "starts": "2026-01-01T00:00:00Z",
                                 "ends": "2027-01-01T00:00:00Z"}])
    order = purchase(str(sum((a for a, _ in spec), Decimal(0))),
                     *[line(f"sku{i}", str(a), c) for i, (a, c) in enumerate(spec)])
    for r in rule_points(shop, MONDAY, order, tier):
        exact = sum(r.lines.values(), Decimal(0))
        assert 0 <= r.points <= exact < r.points + 1


@given(st.lists(st.tuples(amounts, st.sampled_from([None, "food", "dairy", "wine"]),
                          st.sampled_from(["milk", "tea", "bread"])), min_size=0, max_size=5),
       st.sampled_from(["pos", "online", "app"]), st.datetimes(min_value=datetime(2026, 1, 1),
                                                              max_value=datetime(2026, 12, 31), timezones=st.just(UTC)),
       tiers)
def test_a_replayed_event_earns_identical_credits_so_the_ledger_sees_a_replay(
        spec: list[tuple[Decimal, str | None, str]], channel: str, at: datetime, tier: MemberTier | None) -> None:
    shop = programme(multipliers=[{"rule_id": "dairy-x2", "categories": ["dairy"], "multiplier": "2"}],
                     bonuses=[{"rule_id": "tea", "skus": ["tea"], "points": 3}],
                     campaigns=[{"rule_id": "weekend", "multiplier": "1.5", "starts": "2026-01-01T00:00:00Z",
                                 "ends": "2027-01-01T00:00:00Z", "weekdays": ["sat", "sun"]}],
                     rebates=[{"rule_id": "rebate", "min_total": "50", "percent": "2"}])
    order = purchase(str(sum((a for a, _, _ in spec), Decimal(0))),
                     *[line(sku, str(a), c) for a, c, sku in spec], channel=channel)
    # The event as it would be read again from Kafka: its JSON, parsed anew.
    again = PurchaseCompleted.model_validate_json(order.model_dump_json())
    first = credits_for_purchase(shop, "pos://s|e1", at, order, tier)
    second = credits_for_purchase(shop, "pos://s|e1", at, again, tier)
    assert first == second
    assert [payload_hash(c) for c in first] == [payload_hash(c) for c in second]


def test_the_part_of_a_basket_paid_with_points_earns_nothing_but_fixed_bonuses_stay_whole() -> None:
    """A till that lets a member pay 40 of 100 with points (the redemption service's points payment) says so in
    `points_value`; money-based rules earn on the 60 paid with money, per-unit bonuses on the goods bought."""
    rules = programme(bonuses=[{"rule_id": "tea-bonus", "skus": ["tea"], "points": 5, "per": "unit"}],
                      rebates=[{"rule_id": "rebate-10", "min_total": "50", "percent": "10"}])
    paid = purchase("100", line("tea", "40", "drinks", quantity="2"), line("rice", "60", "food"))
    paid = paid.model_copy(update={"points_value": Decimal("40")})
    points = {r.rule_id: r.points for r in rule_points(rules, MONDAY, paid) if r.points}
    assert points == {"base": 60, "tea-bonus": 10, "rebate-10": 6}
    with pytest.raises(ValidationError, match="more than the total"):
        PurchaseCompleted.model_validate({**paid.model_dump(), "points_value": "100.01"})
