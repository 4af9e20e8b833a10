"""The tiers service on the fast tier: purchases through earn and the ledger to tiers and back (each service's real
consumer, handlers and routes over one PostgreSQL, chained without Kafka), the review job at a time the test names,
manual tiers, the HTTP side, and a rebuild that equals what the live service built."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from services.earn.app import spec as earn_spec
from services.ledger.app import spec as ledger_spec
from services.tiers.app import spec as tiers_spec
from services.tiers.windows import add_months
from shared import keys
from shared.contracts import topics
from shared.contracts.ledger_entries import PointsEntryPosted
from shared.contracts.members import TierAssigned
from shared.contracts.purchases import PurchaseRefunded
from shared.contracts.tiers import TierChanged, TierExpiring
from shared.simulation import purchase_event
from shared.testing import Pipeline, ServiceHarness, cloud_event
from tests.conftest import check_ledger_invariants
from tests.support import Infra

NOW = datetime.now(UTC).replace(microsecond=0)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def chain(infra: Infra) -> AsyncIterator[tuple[Pipeline, Clock]]:
    clock = Clock(NOW)
    dsn = await infra.new_database("tiers_")
    async with Pipeline(ServiceHarness(earn_spec(), dsn), ServiceHarness(ledger_spec(), dsn),
                        ServiceHarness(tiers_spec(clock=clock), dsn)) as pipeline:
        yield pipeline, clock
    await check_ledger_invariants(dsn)


def buy(event_id: str, member: str, total: str, at: datetime, program: str | None = None) -> bytes:
    return orjson.dumps(purchase_event(event_id, "pos://store-1", at, member, f"order-{event_id}", Decimal(total), [],
                                       program_id=program))


async def tier(pipeline: Pipeline, member: str, program: str = "default") -> dict[str, Any]:
    status, body = await pipeline["tiers"].get(f"/v1/programs/{program}/members/{member}/tier")
    assert status == 200, body
    return dict(body)


async def balance(pipeline: Pipeline, member: str, program: str = "default") -> dict[str, Any]:
    status, body = await pipeline["ledger"].get(f"/v1/programs/{program}/members/{member}/balance")
    assert status == 200, body
    return dict(body)


async def test_purchases_reach_gold_the_next_purchase_earns_x1_5_and_a_refund_of_the_crossing_undoes_it(
        chain: tuple[Pipeline, Clock]) -> None:
    pipeline, _ = chain
    t = NOW - timedelta(days=10)
    out = await pipeline.send(topics.PURCHASES, buy("p1", "ann", "900.00", t), key="ann")
    assert out.of(TierChanged) == []
    out = await pipeline.send(topics.PURCHASES, buy("p2", "ann", "200.00", t + timedelta(hours=1)), key="ann")
    assert [(c["tier"], c["previous_tier"], c["reason"], c["earn_multiplier"]) for c in out.of(TierChanged)] == [
        ("silver", "normal", "upgrade", "1.25")]
    # 1100 so far; 4000 more, at ×1.25 for silver, is 5000 and crosses gold (6100); the next purchase earns ×1.5.
    crossing = t + timedelta(days=1)
    out = await pipeline.send(topics.PURCHASES, buy("p3", "ann", "4000.00", crossing), key="ann")
    assert [(c["tier"], c["reason"]) for c in out.of(TierChanged)] == [("gold", "upgrade")]
    before = (await balance(pipeline, "ann"))["lifetime_earned"]
    await pipeline.send(topics.PURCHASES, buy("p4", "ann", "100.00", crossing + timedelta(hours=2)), key="ann")
    assert (await balance(pipeline, "ann"))["lifetime_earned"] - before == 150  # 100 base + 50 for gold
    shown = await tier(pipeline, "ann")
    assert (shown["tier"], shown["earn_multiplier"], shown["qualifying"]["value"]) == ("gold", "1.5", "6250")
    assert shown["next"] == {"tier": "diamond", "needed": "13750"} and "priority service" in shown["benefits"]
    assert shown["valid_until"] == (crossing + timedelta(days=365)).isoformat().replace("+00:00", "Z")

    # The crossing purchase is refunded: earn reverses its credits (base and silver's), the ledger posts the
    # reversals, tiers sees the metric fall below gold in the window gold was crossed in, and undoes the upgrade.
    refund = cloud_event(PurchaseRefunded, "r3", crossing + timedelta(days=1), {
        "member_id": "ann", "order_id": "order-p3", "refund_id": "r3", "currency": "CNY", "total": "4000.00"},
        source="pos://store-1")
    out = await pipeline.send(topics.PURCHASES, refund, key="ann")
    assert [(c["tier"], c["previous_tier"], c["reason"], c["detail"]) for c in out.of(TierChanged)] == [
        ("silver", "gold", "downgrade", "reversed")]
    shown = await tier(pipeline, "ann")
    assert (shown["tier"], shown["qualifying"]["value"]) == ("silver", "1250")
    status, history = await pipeline["tiers"].get("/v1/programs/default/members/ann/tier/history")
    assert status == 200
    assert [(c["seq"], c["tier"], c["reason"]) for c in history["changes"]] == [
        (3, "silver", "downgrade"), (2, "gold", "upgrade"), (1, "silver", "upgrade")]
    # Only earn credits count: the member's spending is not the tiers' business.
    status, levels = await pipeline["tiers"].get("/v1/programs/default/tiers")
    assert status == 200
    assert {lv["tier"]: lv["members"] for lv in levels["levels"]} == {"normal": 0, "silver": 1, "gold": 0,
                                                                      "diamond": 0}


async def test_the_review_warns_before_and_drops_at_the_end_of_the_period_at_the_time_named(
        chain: tuple[Pipeline, Clock]) -> None:
    pipeline, clock = chain
    long_ago = NOW - timedelta(days=380)
    await pipeline.send(topics.PURCHASES, buy("q1", "bob", "5200.00", long_ago), key="bob")  # gold, a year ago
    assert (await tier(pipeline, "bob"))["tier"] == "gold"
    period_end = add_months(long_ago, 12, ZoneInfo("UTC"))  # 15 days ago; gold's 30 grace days end in 15 days
    # Within warn_days (30) of the drop: the 12 months the review judges hold nothing, so a warning goes out.
    out = await pipeline.run_job("tiers", "tier-review", NOW)
    warned = out.of(TierExpiring)
    assert [(w["tier"], w["drops_to"], w["needed"]) for w in warned] == [("gold", "normal", "5000")]
    assert warned[0]["on"] == (period_end + timedelta(days=30)).isoformat().replace("+00:00", "Z")  # 30 grace days
    assert (await pipeline.run_job("tiers", "tier-review", NOW + timedelta(hours=1))).of(TierExpiring) == []  # once
    # The review, after the grace days: the drop is announced at its own time, whenever the job runs.
    clock.now = period_end + timedelta(days=45)
    out = await pipeline.run_job("tiers", "tier-review", clock.now)
    changes = out.of(TierChanged)
    assert [(c["tier"], c["reason"], c["detail"]) for c in changes] == [("normal", "downgrade", "review")]
    assert [m.event["time"] for m in out.messages if m.type == TierChanged.TYPE] == [
        (period_end + timedelta(days=30)).isoformat().replace("+00:00", "Z")]
    assert (await tier(pipeline, "bob"))["tier"] == "normal"


async def test_a_manual_tier_from_a_trusted_source_holds_until_its_end(chain: tuple[Pipeline, Clock]) -> None:
    pipeline, clock = chain
    until = NOW + timedelta(days=30)

    def assigned(event_id: str, source: str, tier_name: str) -> bytes:
        return cloud_event(TierAssigned, event_id, NOW - timedelta(minutes=1), {
            "program_id": "retail", "member_id": "cy", "tier": tier_name, "until": until.isoformat(),
            "reason": "status match", "assigned_by": "agent-3"}, source=source)

    out = await pipeline.send(topics.MEMBERS, assigned("a1", "pos://store-1", "gold"),  # a till may not
                              assigned("a2", "crm://vip-desk", "platinum"),  # no such tier
                              assigned("a3", "crm://vip-desk", "gold"), key="cy")
    assert sorted(out.reasons) == ["unknown_tier", "untrusted_source"]
    assert [(c["tier"], c["reason"], c["earn_multiplier"]) for c in out.of(TierChanged)] == [
        ("gold", "manual", "1.5")]
    shown = await tier(pipeline, "cy", "retail")
    assert (shown["tier"], shown["manual"], shown["keep"]) == ("gold", True, None)
    clock.now = until + timedelta(days=1)
    out = await pipeline.run_job("tiers", "tier-review", clock.now)
    # Nothing spent: at its end the member holds what spend supports, not gold as a silent floor.
    assert [(c["tier"], c["reason"]) for c in out.of(TierChanged)] == [("member", "expired_manual")]


async def test_spend_tiers_count_purchases_less_refunds_in_the_calendar_year(chain: tuple[Pipeline, Clock]) -> None:
    pipeline, _ = chain
    at = datetime(2026, 3, 2, 2, tzinfo=UTC)  # a Monday: the retail example's weekend campaign does not run
    out = await pipeline.send(topics.PURCHASES, buy("s1", "dee", "2500.00", at, "retail"),
                              buy("s2", "dee", "600.00", at + timedelta(hours=1), "retail"), key="dee")
    assert [(c["tier"], c["qualifying_value"]) for c in out.of(TierChanged)] == [("silver", "3100.00")]
    refund = cloud_event(PurchaseRefunded, "rs2", at + timedelta(days=2), {
        "program_id": "retail", "member_id": "dee", "order_id": "order-s2", "refund_id": "rs2", "currency": "CNY",
        "total": "600.00"}, source="pos://store-1")
    out = await pipeline.send(topics.PURCHASES, refund, key="dee")
    assert [(c["tier"], c["detail"]) for c in out.of(TierChanged)] == [("member", "reversed")]


async def test_unknown_programmes_and_programmes_without_tiers_are_404(chain: tuple[Pipeline, Clock]) -> None:
    pipeline, _ = chain
    status, body = await pipeline["tiers"].get("/v1/programs/nosuch/members/ann/tier")
    assert (status, body["error"]) == (404, "unknown_program")
    status, body = await pipeline["tiers"].get("/v1/programs/staff/tiers")
    assert (status, body["error"]) == (404, "no_tiers")
    shown = await tier(pipeline, "never-seen")
    assert (shown["tier"], shown["since"], shown["qualifying"]["value"]) == ("normal", None, "0")


async def test_a_ledger_entry_delivered_twice_in_one_batch_counts_once(infra: Infra) -> None:
    # The ledger's relay publishes again what it published just before a crash: the two copies sit side by side in
    # the partition and reach tiers in one batch. Tiers has no inbox (contributions are stored by key), so the key
    # alone must make the second copy change nothing: 600 points, not 1200 (which would be silver).
    at = NOW - timedelta(days=1)
    data = {"entry_id": 7, "program_id": "default", "member_id": "ann", "seq": 1, "amount": 600, "balance_after": 600,
            "kind": "earn", "idempotency_key": keys.earn_credit("p7", "base"), "cause": {"source_event_id": "p7"},
            "occurred_at": at.isoformat(), "posted_at": at.isoformat(), "hash": "00"}
    copy = cloud_event(PointsEntryPosted, keys.posted_event(7), at, data, source="jifen.ledger")
    async with ServiceHarness(tiers_spec(clock=Clock(NOW)), await infra.new_database("tiers_")) as harness:
        out = await harness.send(topics.LEDGER_ENTRIES, copy, copy, key="ann")
        assert out.dead == [] and out.of(TierChanged) == []
        status, shown = await harness.get("/v1/programs/default/members/ann/tier")
        assert status == 200, shown
        assert (shown["tier"], shown["qualifying"]["value"]) == ("normal", "600")
