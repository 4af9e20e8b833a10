"""The what-if's tiers simulation (cli/whatif/tiers.py), pure: members crossing silver then gold by spend and by
points earned, a refund or reversal undoing the crossing, a downgrade at review after grace (the same changes the
tiers domain gives), a manual tier from a trusted source only and its end, and the version in force at each
event's time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from cli.whatif.tiers import TierMove, TierSim
from services.tiers import domain
from services.tiers.domain import Contribution, Member
from services.tiers.programme import TiersProgramme
from services.tiers.windows import add_months
from shared.contracts.members import TierAssigned
from shared.envelope import CloudEvent
from shared.programmes import Catalogue

T0 = datetime(2026, 3, 10, 12, tzinfo=UTC)
DAY = timedelta(days=1)
LEVELS: list[dict[str, Any]] = [{"tier": "member", "threshold": "0"},
          {"tier": "silver", "threshold": "1000", "earn_multiplier": "1.25"},
          {"tier": "gold", "threshold": "5000", "earn_multiplier": "1.5", "grace_days": 30}]


def version(program_id: str, metric: str, number: int = 1, effective: str = "2020-01-01T00:00:00Z",
            levels: list[dict[str, Any]] | None = None, **tiers: Any) -> dict[str, Any]:
    return {"program_id": program_id, "name": program_id, "version": number, "effective_from": effective,
            "timezone": "UTC", "currency": "CNY",
            "tiers": {"metric": metric, "window": {"kind": "rolling", "months": 12}, "levels": levels or LEVELS,
                      "manual": {"sources": ["crm://vip-desk"]}, **tiers}}


def catalogue(folder: Path, *versions: dict[str, Any]) -> Catalogue[TiersProgramme]:
    for v in versions:
        (folder / f"{v['program_id']}-{v['version']}.yaml").write_text(yaml.safe_dump(v))
    return Catalogue.load(folder, TiersProgramme)


@pytest.fixture
def sim(tmp_path: Path) -> TierSim:
    return TierSim(catalogue(tmp_path, version("shop", "spend"), version("pts", "points_earned")))


def moved(moves: list[TierMove]) -> list[tuple[str, str, Decimal, str, str | None]]:
    return [(m.member_id, m.tier, m.multiplier, m.reason, m.detail) for m in moves]


def test_spend_crosses_silver_then_gold_and_the_refund_of_the_crossing_order_undoes_gold(sim: TierSim) -> None:
    assert sim.purchase("shop", "ann", T0, Decimal("600"), "o1") == []
    silver = sim.purchase("shop", "ann", T0 + DAY, Decimal("400"), "o2")
    assert moved(silver) == [("ann", "silver", Decimal("1.25"), "upgrade", None)]
    assert (silver[0].at, silver[0].previous) == (T0 + DAY, "member")
    assert sim.purchase("shop", "ann", T0 + DAY, Decimal("400"), "o2") == []  # the same order again: counted once
    assert sim.purchase("shop", "ann", T0 + 2 * DAY, Decimal("3999.99"), "o3") == []  # 4999.99: not yet gold
    gold = sim.purchase("shop", "ann", T0 + 3 * DAY, Decimal("0.01"), "o4")
    assert moved(gold) == [("ann", "gold", Decimal("1.5"), "upgrade", None)]
    assert sim.tiers_at("shop", T0 - DAY) == {}
    assert sim.tiers_at("shop", T0) == {"member": 1}
    assert sim.tiers_at("shop", T0 + 2 * DAY) == {"silver": 1}
    assert sim.tiers_at("shop", T0 + 3 * DAY) == {"gold": 1}
    # What earn would apply to a purchase then: no tier before the first change, then the tier announced.
    assert sim.announced_at("shop", "ann", T0 + DAY / 2) is None
    assert sim.announced_at("shop", "ann", T0 + 2 * DAY) == silver[0]
    assert sim.announced_at("shop", "ann", T0 + 3 * DAY) == gold[0]
    # A refund in the window gold was crossed in takes spend below it: back to silver, as the service does it.
    undone = sim.refund("shop", "ann", T0 + 4 * DAY, Decimal("100"), "o3", refund_id="r1")
    assert moved(undone) == [("ann", "silver", Decimal("1.25"), "downgrade", "reversed")]
    assert sim.refund("shop", "ann", T0 + 4 * DAY, Decimal("100"), "o3", refund_id="r1") == []  # a replay
    assert sim.tier_of("shop", "ann") == "silver"
    # A refund of an order never counted here takes nothing back.
    assert sim.refund("shop", "ann", T0 + 5 * DAY, Decimal("900"), "elsewhere") == []
    assert sim.ignored["correction_of_uncounted"] == 1


def test_points_earned_cross_silver_then_gold_and_a_reversal_takes_gold_back(sim: TierSim) -> None:
    assert sim.points("pts", "bob", T0, 999, "earn", entry="c1") == []
    assert sim.points("pts", "bob", T0, 5000, "redeem", entry="d1") == []  # spending is not earning
    assert moved(sim.points("pts", "bob", T0 + DAY, 1, "earn", entry="c2")) == [
        ("bob", "silver", Decimal("1.25"), "upgrade", None)]
    assert moved(sim.points("pts", "bob", T0 + 2 * DAY, 4000, "earn", entry="c3")) == [
        ("bob", "gold", Decimal("1.5"), "upgrade", None)]
    back = sim.points("pts", "bob", T0 + 3 * DAY, -4000, "reversal", entry="v3", corrects="c3")
    assert moved(back) == [("bob", "silver", Decimal("1.25"), "downgrade", "reversed")]
    # Purchases move nothing in a points programme; points nothing in a spend one.
    assert sim.purchase("pts", "bob", T0 + 4 * DAY, Decimal("9000"), "o9") == []
    assert sim.points("shop", "bob", T0 + 4 * DAY, 9000, "earn", entry="c9") == []
    assert sim.ignored["other_metric"] == 2
    assert sim.tiers_at("pts", T0 + 10 * DAY) == {"silver": 1}


def test_the_review_drops_gold_after_its_grace_days_as_the_tiers_domain_does(sim: TierSim) -> None:
    zone = ZoneInfo("UTC")
    sim.points("pts", "cat", T0, 5200, "earn", entry="c1")  # gold, and nothing after
    sim.points("pts", "dan", T0, 5200, "earn", entry="d1")
    sim.points("pts", "dan", T0 + 200 * DAY, 5000, "earn", entry="d2")  # dan qualifies again within the period
    period_end = add_months(T0, 12, zone)
    assert sim.advance(period_end) == []  # gold's 30 grace days
    dropped = sim.advance(period_end + 40 * DAY)
    assert [(m.member_id, m.tier, m.reason, m.detail, m.at) for m in dropped] == [
        ("cat", "member", "downgrade", "review", period_end + 30 * DAY)]
    assert sim.tiers_at("pts", period_end + 29 * DAY) == {"gold": 2}
    assert sim.tiers_at("pts", period_end + 30 * DAY) == {"gold": 1, "member": 1}

    # The same history through the tiers domain, as the service's handler and review job apply it.
    rules = catalogue_rules(sim, "pts")
    cat = Member.new(rules)
    changes = domain.contribute(cat, rules, zone, Contribution(T0, 5200), T0)
    changes += domain.advance(cat, rules, zone, period_end + 40 * DAY)
    assert [(c.at, c.tier, c.reason, c.detail) for c in changes] == [
        (T0, "gold", "upgrade", None), (period_end + 30 * DAY, "member", "downgrade", "review")]


def catalogue_rules(sim: TierSim, program_id: str) -> Any:
    programme = sim.catalogue.at(program_id, T0)
    assert programme is not None and programme.tiers is not None
    return programme.tiers


def assigned(event_id: str, member: str, tier: str, until: datetime | None, at: datetime,
             source: str = "crm://vip-desk") -> tuple[CloudEvent, TierAssigned]:
    data = TierAssigned(program_id="shop", member_id=member, tier=tier, until=until, reason="status match",
                        assigned_by="agent-7")
    return CloudEvent(event_id, source, TierAssigned.TYPE, at, data.model_dump(mode="json")), data


def test_a_manual_tier_from_a_trusted_source_holds_until_its_end_then_the_spend_decides(sim: TierSim) -> None:
    sim.purchase("shop", "eve", T0, Decimal("1500"), "o1")  # silver by spend
    assert sim.assign(*assigned("x1", "eve", "gold", None, T0 + DAY, source="pos://till-4")) == []
    assert sim.assign(*assigned("x2", "eve", "platinum", None, T0 + DAY)) == []
    assert sim.refused == {"untrusted_source": 1, "unknown_tier": 1}
    until = T0 + 90 * DAY
    event, data = assigned("x3", "eve", "gold", until, T0 + DAY)
    assert moved(sim.assign(event, data)) == [("eve", "gold", Decimal("1.5"), "manual", None)]
    assert sim.assign(event, data) == []  # the same event again
    assert sim.advance(until - DAY) == []
    ended = sim.advance(until + DAY)
    assert [(m.tier, m.reason, m.at) for m in ended] == [("silver", "expired_manual", until)]


def test_each_event_is_judged_by_the_version_in_force_at_its_time(tmp_path: Path) -> None:
    lower = [{**LEVELS[0]}, {**LEVELS[1], "threshold": "500"}, {**LEVELS[2]}]
    sim = TierSim(catalogue(tmp_path, version("shop", "spend"),
                            version("shop", "spend", 2, "2026-04-01T00:00:00Z", levels=lower)))
    assert sim.purchase("shop", "fay", T0, Decimal("600"), "o1") == []  # March: silver needs 1000
    assert sim.purchase("shop", "gus", T0, Decimal("600"), "o2") == []
    april = datetime(2026, 4, 2, tzinfo=UTC)
    assert moved(sim.purchase("shop", "fay", april, Decimal("1"), "o3")) == [
        ("fay", "silver", Decimal("1.25"), "upgrade", None)]  # April: 601 ≥ 500
    assert sim.tiers_at("shop", april) == {"silver": 1, "member": 1}
    assert sim.purchase("nowhere", "fay", april, Decimal("1"), "o4") == []
    assert sim.ignored["no_tiers"] == 1
