"""Earn's rules through to the ledger's balances, on the fast tier: earn and the ledger as services (their real
consumers, handlers and HTTP routes over one real PostgreSQL), chained without Kafka. What needs Kafka's delivery
(offsets, rebalances, kill -9, a partition that keeps flowing) stays in tests/e2e/.

Moved here from tests/e2e/ (test_purchase_rules, test_refunds, test_activity, test_tiers_and_awards, test_caps,
test_programme_versions): same feeds and assertions, a fraction of a second each instead of 3-10 s. The caps test is
sharper here: one member a batch, so the budget's split between members is exact, not "whatever order the partitions
were read in"."""

from __future__ import annotations

import asyncio
import shutil
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import yaml

from services.earn.app import spec as earn_spec
from services.earn.settings import EarnSettings
from services.ledger.app import spec as ledger_spec
from services.ledger.settings import LedgerSettings
from shared.contracts import topics
from shared.contracts.checkins import CheckinRecorded
from shared.contracts.purchases import PurchaseRefunded
from shared.contracts.tasks import PointsAwarded, TaskCompleted
from shared.contracts.tiers import TierChanged
from shared.settings import Settings
from shared.simulation import purchase_event
from shared.testing import Pipeline, ServiceHarness, cloud_event
from tests.conftest import check_ledger_invariants
from tests.support import Infra

SHANGHAI = ZoneInfo("Asia/Shanghai")  # the retail example's time zone


async def entries(pipeline: Pipeline, program: str, member: str) -> list[dict[str, Any]]:
    status, page = await pipeline["ledger"].get(f"/v1/programs/{program}/members/{member}/entries?limit=100")
    assert status == 200, page
    found: list[dict[str, Any]] = page["entries"]
    return found


async def balance(pipeline: Pipeline, program: str, member: str) -> dict[str, Any]:
    status, body = await pipeline["ledger"].get(f"/v1/programs/{program}/members/{member}/balance")
    assert status == 200, body
    return dict(body)


def purchase(event_id: str, at: datetime, member: str, total: str, lines: list[dict[str, str]], **kw: Any) -> bytes:
    return orjson.dumps(purchase_event(event_id, kw.pop("source", "pos://store-1"), at, member, kw.pop(
        "order_id", f"order-{event_id}"), Decimal(total), lines, **kw))


async def test_bonus_rebate_and_exclusions_each_credit_their_own_points_pending_online(earn_ledger: Pipeline) -> None:
    member = "ivy"
    # A weekday, so the weekend campaign does not run; bought online, so the points wait out 14 days.
    at = datetime.now(UTC) - timedelta(hours=1)
    if at.astimezone(SHANGHAI).weekday() >= 5:
        at -= timedelta(days=2)
    lines = [
        {"sku": "TEA-OOLONG-100", "category": "tea", "quantity": "2", "unit_price": "50.00", "total": "100.00"},
        {"sku": "WINE-RIOJA", "category": "wine", "quantity": "1", "unit_price": "400.00", "total": "400.00"},
        {"sku": "GC-100", "category": "gift_card", "quantity": "1", "unit_price": "100.00", "total": "100.00"},
    ]
    out = await earn_ledger.send(topics.PURCHASES, purchase("w-1", at, member, "600.00", lines, source="web://shop",
                                                            order_id="web-1", channel="online", store_id=None,
                                                            program_id="retail"), key=member)
    assert out.dead == []
    found = await entries(earn_ledger, "retail", member)
    # 500 eligible (the gift card earns nothing): base 500; 20 a box of tea × 2; 2% back on tea, 5% on wine.
    assert sorted((e["rule_id"], e["amount"]) for e in found) == [
        ("base", 500), ("big-basket-rebate", 22), ("new-tea-bonus", 40)]
    rebate = next(e for e in found if e["rule_id"] == "big-basket-rebate")
    assert rebate["details"]["rule"] == {"rule_id": "big-basket-rebate", "kind": "rebate", "points": 22,
                                         "why": "2% back from 500 spent"}
    assert rebate["details"]["lines"] == [{"sku": "TEA-OOLONG-100", "points": "2.00"},
                                          {"sku": "WINE-RIOJA", "points": "20.00"}]
    held = await balance(earn_ledger, "retail", member)
    assert (held["pending"], held["available"]) == (562, 0)


SATURDAY = datetime(2026, 11, 7, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai: the retail example's weekend campaign runs
MILK = {"sku": "FM-MILK-1L", "category": "dairy", "quantity": "2", "unit_price": "12.50", "total": "25.00"}
APPLES = {"sku": "apple", "category": "fruit", "quantity": "3", "unit_price": "5.00", "total": "15.00"}


def refund(event_id: str, member: str, order_id: str, total: str, lines: list[dict[str, str]] | None,
           at: datetime = datetime(2026, 11, 8, 2, tzinfo=UTC), program: str = "retail") -> bytes:
    return cloud_event(PurchaseRefunded, event_id, at, {
        "program_id": program, "member_id": member, "order_id": order_id, "refund_id": event_id, "currency": "CNY",
        "total": total, **({"lines": lines} if lines else {})}, source="pos://store-1")


async def test_refunds_take_back_exactly_what_the_refunded_lines_earned(earn_ledger: Pipeline) -> None:
    member = "dora"
    await earn_ledger.send(topics.PURCHASES, purchase("p-1", SATURDAY, member, "40.00", [MILK, APPLES],
                                                      order_id="o-1", program_id="retail"), key=member)
    # milk 25: base 25, own-brand ×3 +50, weekend ×2 +25; apples 15: base 15, fresh ×2 +15, weekend +15
    assert (await balance(earn_ledger, "retail", member))["balance"] == 145
    assert sorted((e["rule_id"], e["amount"]) for e in await entries(earn_ledger, "retail", member)) == [
        ("base", 40), ("fresh-x2", 15), ("own-brand-x3", 50), ("weekend-double", 40)]

    out = await earn_ledger.send(
        topics.PURCHASES,
        refund("r-1", member, "o-1", "25.00", [{**MILK}]),  # the milk comes back
        refund("r-bad", member, "o-1", "100.00", None),  # more than is left
        refund("r-unknown", member, "o-404", "1.00", None),
        refund("r-2", member, "o-1", "15.00", None), key=member)  # the rest, by total only
    found = await balance(earn_ledger, "retail", member)
    assert (found["balance"], found["lifetime_earned"]) == (0, 0)
    reversals = [(e["rule_id"], e["amount"]) for e in await entries(earn_ledger, "retail", member)
                 if e["kind"] in ("reversal", "cancel")]
    # r-1 took back the milk's share of each rule, r-2 the apples' share.
    assert sorted(reversals) == sorted([("base", -25), ("own-brand-x3", -50), ("weekend-double", -25),
                                        ("base", -15), ("fresh-x2", -15), ("weekend-double", -15)])
    assert sorted(out.reasons) == ["refund_exceeds_order", "unknown_order"]


FIRST_DAY = date(2026, 11, 10)


async def test_a_purchase_in_another_currency_is_dead_lettered_not_credited(earn_ledger: Pipeline) -> None:
    """The retail programme earns on CNY: a USD basket goes to the DLQ as `currency_not_accepted` (as `jifen earn
    explain` predicts, tests/unit/test_earn_cli.py), and the member gets nothing."""
    at = datetime.now(UTC) - timedelta(hours=1)
    event = purchase_event("usd-1", "pos://store-1", at, "una", "usd-order", Decimal("100"), [
        {"sku": "TEA-OOLONG-100", "category": "tea", "quantity": "2", "unit_price": "50", "total": "100"}],
        program_id="retail")
    event["data"]["currency"] = "USD"  # type: ignore[index]
    out = await earn_ledger.send(topics.PURCHASES, orjson.dumps(event), key="una")
    assert out.reasons == ["currency_not_accepted"]
    assert "earns on CNY, not USD" in out.dead[0].detail
    assert await entries(earn_ledger, "retail", "una") == []


async def test_checkins_and_tasks_earn_by_the_default_programme(earn_ledger: Pipeline) -> None:
    member = "erin"
    checkins = [cloud_event(CheckinRecorded, f"c-{n}", datetime.combine(day, datetime.min.time(), UTC).replace(
        hour=9), {"member_id": member, "day": day.isoformat()}, source="app://member")
        for n, day in enumerate(FIRST_DAY + timedelta(days=n) for n in range(7))]
    checkins.append(cloud_event(CheckinRecorded, "c-again", datetime(2026, 11, 16, 20, tzinfo=UTC),
                                {"member_id": member, "day": "2026-11-16"}, source="app://member"))  # 2nd on day 7
    noon = datetime(2026, 11, 16, 12, tzinfo=UTC)
    tasks = [cloud_event(TaskCompleted, f"review-{n}", noon, {"member_id": member, "task_id": f"r{n}",
                                                              "task_type": "review"}, source="app://member")
             for n in range(4)]
    tasks += [cloud_event(TaskCompleted, f"profile-{n}", noon, {"member_id": member, "task_id": "p",
                                                                "task_type": "profile"}, source="app://member")
              for n in range(2)]
    tasks.append(cloud_event(TaskCompleted, "kpi-1", noon, {"member_id": member, "task_id": "k", "task_type": "kpi"},
                             source="app://member"))
    await earn_ledger.send(topics.CHECKINS, *checkins, key=member)
    out = await earn_ledger.send(topics.TASKS, *tasks, key=member)

    # 7 check-ins + 10 for the 7-day streak + 3 reviews of 5 (the 4th capped) + the profile once.
    assert (await balance(earn_ledger, "default", member))["lifetime_earned"] == 7 + 10 + 15 + 20
    rules = sorted(e["rule_id"] for e in await entries(earn_ledger, "default", member))
    assert rules == sorted(["checkin"] * 7 + ["checkin-streak-7", "profile-completed"] + ["review"] * 3)
    assert out.reasons == ["no_rule"]
    capped = await earn_ledger["earn"].query("SELECT rule_id, why FROM capped ORDER BY event_id")
    assert [(r["rule_id"], r["why"]) for r in capped] == [("profile-completed", "cap reached: 1 per ever"),
                                                          ("review", "cap reached: 3 per day")]


CST = timezone(timedelta(hours=8))
SILVER_FROM = datetime(2026, 10, 1, tzinfo=CST)
GOLD_FROM = datetime(2026, 10, 10, tzinfo=CST)


def tier(event_id: str, at: datetime, name: str, multiplier: str) -> bytes:
    return cloud_event(TierChanged, event_id, at, {"program_id": "retail", "member_id": "gus", "tier": name,
                                                   "earn_multiplier": multiplier}, source="jifen.tiers")


async def test_tier_multipliers_follow_the_tier_held_at_purchase_time(earn_ledger: Pipeline) -> None:
    await earn_ledger.send(topics.TIERS, tier("t-1", SILVER_FROM, "silver", "1.2"),
                           tier("t-2", GOLD_FROM, "gold", "1.5"), key="gus")
    assert len(await earn_ledger["earn"].query("SELECT 1 FROM member_tiers WHERE member_id = 'gus'")) == 2
    # Weekday purchases without categories: the example's weekend and wine campaigns do not apply.
    await earn_ledger.send(topics.PURCHASES,
                           purchase("p-0", SILVER_FROM - timedelta(days=1, hours=-10), "gus", "100.00", [],
                                    program_id="retail"),  # before any tier: ×1
                           purchase("p-1", SILVER_FROM + timedelta(days=5, hours=10), "gus", "100.00", [],
                                    program_id="retail"),  # silver: +20
                           purchase("p-2", GOLD_FROM + timedelta(days=2, hours=10), "gus", "100.00", [],
                                    program_id="retail"),  # gold: +50
                           purchase("p-3", SILVER_FROM + timedelta(days=6, hours=10), "gus", "100.00", [],
                                    program_id="retail"),  # sent late, happened while silver: +20
                           key="gus")
    found = await entries(earn_ledger, "retail", "gus")
    earned = sorted((e["source_event_id"].split("|")[1], e["rule_id"], e["amount"]) for e in found)
    assert earned == [("p-0", "base", 100), ("p-1", "base", 100), ("p-1", "tier", 20), ("p-2", "base", 100),
                      ("p-2", "tier", 50), ("p-3", "base", 100), ("p-3", "tier", 20)]
    gold = next(e for e in found if e["rule_id"] == "tier" and e["amount"] == 50)
    assert gold["details"]["rule"]["why"] == "×1.5 for tier gold"

    # Refunding the gold purchase takes back its base and its tier points; the other orders keep theirs.
    await earn_ledger.send(topics.PURCHASES, refund("r-2", "gus", "order-p-2", "100.00", None,
                                                    at=GOLD_FROM + timedelta(days=3)), key="gus")
    reversed_ = sorted((e["rule_id"], e["amount"]) for e in await entries(earn_ledger, "retail", "gus")
                       if e["kind"] == "reversal")
    assert reversed_ == [("base", -100), ("tier", -50)]
    assert (await balance(earn_ledger, "retail", "gus"))["available"] == 100 + 120 + 120


def award(event_id: str, source: str, member: str, program: str, award_id: str, points: int) -> bytes:
    return cloud_event(PointsAwarded, event_id, datetime(2026, 11, 20, 10, tzinfo=CST), {
        "program_id": program, "member_id": member, "award_id": award_id, "points": points,
        "reason": "goodwill for a late delivery", "awarded_by": "agent-7"}, source=source)


async def test_manual_awards_are_paid_only_from_trusted_sources_within_limits(earn_ledger: Pipeline) -> None:
    out = await earn_ledger.send(topics.TASKS,
                                 award("a-1", "crm://service-desk", "gus", "retail", "case-1", 300),  # paid
                                 award("a-2", "pos://store-1", "gus", "retail", "case-2", 50),  # a till may not
                                 award("a-3", "crm://service-desk", "gus", "retail", "case-3", 600),  # over 500
                                 award("a-4", "crm://service-desk", "gus", "retail", "case-1", 300),  # resubmitted
                                 key="gus")
    # Staff: a manager's bonus is capped at 2000 per person per month.
    out += await earn_ledger.send(topics.TASKS,
                                  award("s-1", "hr://portal", "sam", "staff", "bonus-1", 1000),
                                  award("s-2", "hr://portal", "sam", "staff", "bonus-2", 800),
                                  award("s-3", "hr://portal", "sam", "staff", "bonus-3", 500),  # only 200 fit
                                  key="sam")
    assert (await balance(earn_ledger, "retail", "gus"))["lifetime_earned"] == 300
    assert (await balance(earn_ledger, "staff", "sam"))["lifetime_earned"] == 2000
    assert sorted(out.reasons) == ["award_too_large", "duplicate_award", "untrusted_source"]
    last = next(e for e in await entries(earn_ledger, "staff", "sam") if e["source_event_id"] == "hr://portal|s-3")
    assert (last["amount"], last["details"]["capped"]["wanted"], last["details"]["awarded_by"]) == (200, 500, "agent-7")


CAPPED = {"program_id": "capped", "name": "Capped", "version": 1, "effective_from": "2026-01-01T00:00:00Z",
          "purchase": {"base": {"rule_id": "base", "points_per_unit": "1"}},
          "caps": [{"rule_id": "base", "per": "day", "points": 100}],
          "budget": {"per": "day", "points": 250}}


def earn_and_ledger(folder: Path, dsn: str) -> Pipeline:
    """Both reading the same programme folder, as deployed services do."""
    return Pipeline(ServiceHarness(earn_spec(EarnSettings(programmes_dir=folder)), dsn),
                    ServiceHarness(ledger_spec(LedgerSettings(programmes_dir=folder)), dsn))


async def test_caps_and_the_budget_hold_across_batches_and_a_restart(infra: Infra, tmp_path: Path) -> None:
    (tmp_path / "capped.yaml").write_text(yaml.safe_dump(CAPPED))
    dsn = await infra.new_database("caps_")
    at = datetime.now(UTC) - timedelta(minutes=5)

    def buy(event_id: str, member: str) -> bytes:
        return purchase(event_id, at, member, "60.00", [], program_id="capped")

    async with earn_and_ledger(tmp_path, dsn) as pipeline:
        await pipeline.send(topics.PURCHASES, buy("a1", "ann"), buy("a2", "ann"), key="ann")  # 60, then 40 of 60
        assert (await balance(pipeline, "capped", "ann"))["lifetime_earned"] == 100
    # A restart: what was used of the cap and the budget is in the database, not in the process.
    async with earn_and_ledger(tmp_path, dsn) as pipeline:
        await pipeline.send(topics.PURCHASES, buy("a3", "ann"), key="ann")  # her cap is full: nothing
        await pipeline.send(topics.PURCHASES, buy("b1", "bob"), buy("b2", "bob"), key="bob")  # 100 of these 120
        await pipeline.send(topics.PURCHASES, buy("c1", "cy"), key="cy")
        await pipeline.send(topics.PURCHASES, buy("d1", "dee"), key="dee")
        got = {m: (await balance(pipeline, "capped", m))["lifetime_earned"] for m in ("ann", "bob", "cy", "dee")}
        # 260 more were wanted, but the budget had 150 left after ann's 100.
        assert got == {"ann": 100, "bob": 100, "cy": 50, "dee": 0}
        cy = [e["details"]["capped"] for e in await entries(pipeline, "capped", "cy")]
        assert cy == [{"wanted": 60, "granted": 50, "why": ["the programme's budget of 250 points per day"]}]
    await check_ledger_invariants(dsn)


async def test_a_new_version_judges_only_what_happens_after_it_takes_effect(infra: Infra, tmp_path: Path) -> None:
    for name in ("default.yaml", "retail.yaml"):
        shutil.copy(Settings().programmes_dir / name, tmp_path)
    dsn = await infra.new_database("versions_")
    line = {"sku": "SKU-RICE", "category": "grocery", "quantity": "1", "unit_price": "100.00", "total": "100.00"}

    def buy(event_id: str, at: datetime, program: str | None) -> bytes:
        return purchase(event_id, at, "fay", "100.00", [line], program_id=program)

    async with earn_and_ledger(tmp_path, dsn) as pipeline:
        before = datetime.now(UTC) - timedelta(minutes=1)
        await pipeline.send(topics.PURCHASES, buy("r-1", before, "retail"),  # retail v1: 1 point per yuan
                            buy("d-1", before, None), key="fay")  # the default programme, side by side
        # Version 2 of retail doubles the base rate from a moment in the near future.
        takes_effect = datetime.now(UTC) + timedelta(minutes=1)
        v2 = yaml.safe_load((tmp_path / "retail.yaml").read_text())
        v2 |= {"version": 2, "effective_from": takes_effect.isoformat()}
        v2["purchase"]["base"]["points_per_unit"] = "2"
        (tmp_path / "retail.v2.yaml").write_text(yaml.safe_dump(v2))
        await asyncio.sleep(2.1)  # the catalogue looks at its folder at most every 2 s
        status, loaded = await pipeline["earn"].get("/v1/programs")
        assert status == 200 and ("retail", 2) in {(p["program_id"], p["version"]) for p in loaded}
        after = takes_effect + timedelta(seconds=1)  # within the 5 minutes an event may be ahead of the clock
        await pipeline.send(topics.PURCHASES, buy("r-2", after, "retail"),  # judged by v2
                            buy("r-3", before + timedelta(seconds=1), "retail"),  # late, but happened before: v1
                            buy("d-2", after, None), key="fay")
        assert (await balance(pipeline, "retail", "fay"))["lifetime_earned"] == 400
        assert (await balance(pipeline, "default", "fay"))["lifetime_earned"] == 200
        versions = sorted((e["source_event_id"].split("|")[1], e["rule_version"], e["amount"])
                          for e in await entries(pipeline, "retail", "fay"))
        assert versions == [("r-1", 1, 100), ("r-2", 2, 200), ("r-3", 1, 100)]
    await check_ledger_invariants(dsn)
