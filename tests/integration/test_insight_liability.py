"""Insight's liability roll-forward and cohorts against the ledger's own summary, on the fast tier: earn, the ledger,
redemption and insight over one PostgreSQL, chained without Kafka, with one clock. A mixed feed for the retail
programme (Asia/Shanghai): purchases at the till and online (pending), a redemption, one cancelled, a refund after
the points were spent (debt, repaid by a later purchase), an adjustment, an award and a transfer by the admin routes,
and the sweeper's expiries. Then the abuse watch on insight alone: an earning outlier and a shared device, announced
once each."""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from pydantic import SecretStr

from services.earn.app import spec as earn_spec
from services.insight.app import spec as insight_spec
from services.ledger.app import spec as ledger_spec
from services.redemption.app import spec as redemption_spec
from services.redemption.settings import RedemptionSettings
from shared.contracts import topics
from shared.contracts.insight import MemberFlagged
from shared.contracts.ledger_entries import PointsEntryPosted
from shared.contracts.members import MemberEnrolled
from shared.contracts.purchases import PurchaseRefunded
from shared.contracts.redemptions import RedemptionCancelled, RedemptionCompleted
from shared.simulation import purchase_event
from shared.testing import Delivered, Pipeline, ServiceHarness, cloud_event
from tests.conftest import check_ledger_invariants
from tests.support import Infra

SHANGHAI = ZoneInfo("Asia/Shanghai")
P = "retail"  # 1 point a yuan, 2% more from 500, online pending 14 days, points expire at the end of next year
BASE = f"/v1/programs/{P}"
# Tuesdays (no weekend campaign) in October, November and December 2026, Shanghai time.
OCT = datetime(2026, 10, 13, 10, 0, tzinfo=SHANGHAI)
NOV = datetime(2026, 11, 17, 10, 0, tzinfo=SHANGHAI)
DEC = datetime(2026, 12, 8, 10, 0, tzinfo=SHANGHAI)
SWEEP = datetime(2028, 1, 5, 10, 0, tzinfo=SHANGHAI)  # after the 2026 lots expired (end of 2027)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Chain:
    """The pipeline with its clock; calls that let what a service emitted flow on, as Kafka would."""

    def __init__(self, pipeline: Pipeline, clock: Clock) -> None:
        self.pipeline, self.clock = pipeline, clock
        self.n = 0

    async def flow(self, service: str) -> Delivered:
        out = await self.pipeline[service].drain()
        return out + await self.pipeline.settle(out.messages)

    async def purchase(self, member: str, total: str, channel: str = "pos") -> str:
        self.n += 1
        order = f"order-{self.n}"
        lines = [{"sku": f"SKU-{self.n}", "category": "grocery", "quantity": "1", "unit_price": total,
                  "total": total}]
        value = orjson.dumps(purchase_event(f"p-{self.n}", "pos://store-1", self.clock.now, member, order,
                                            Decimal(total), lines, channel=channel, program_id=P))
        await self.pipeline.send(topics.PURCHASES, value, key=member)
        return order

    async def refund(self, member: str, order: str, total: str) -> None:
        self.n += 1
        value = cloud_event(PurchaseRefunded, f"r-{self.n}", self.clock.now, {
            "program_id": P, "member_id": member, "order_id": order, "refund_id": f"r-{self.n}", "currency": "CNY",
            "total": total}, source="pos://store-1")
        await self.pipeline.send(topics.PURCHASES, value, key=member)

    async def redeem(self, member: str, reward: str) -> dict[str, Any]:
        self.n += 1
        response = await self.pipeline["redemption"].request(
            "POST", f"{BASE}/redemptions", json={"member_id": member, "reward_id": reward},
            headers={"Idempotency-Key": f"till:{self.n}"})
        assert response.status_code in (201, 202), response.text
        out = await self.flow("redemption")
        assert [d["reward_id"] for d in out.of(RedemptionCompleted)] == [reward]
        status, body = await self.pipeline["redemption"].get(f"{BASE}/redemptions/{response.json()['redemption_id']}")
        assert status == 200 and body["status"] == "completed", body
        return dict(body)

    async def cancel(self, redemption_id: str) -> None:
        response = await self.pipeline["redemption"].request("POST", f"{BASE}/redemptions/{redemption_id}/cancel")
        assert response.status_code == 200, response.text
        out = await self.flow("redemption")
        assert [d["redemption_id"] for d in out.of(RedemptionCancelled)] == [redemption_id]

    async def admin(self, path: str, body: dict[str, Any]) -> None:
        self.n += 1
        response = await self.pipeline["ledger"].request("POST", f"{BASE}/{path}?wait=0", json=body,
                                                         headers={"Idempotency-Key": f"ticket-{self.n}"})
        assert response.status_code == 202, response.text
        await self.flow("ledger")
        status, done = await self.pipeline["ledger"].get(f"{BASE}/commands/{response.json()['idempotency_key']}")
        assert status == 200 and done["status"] == "posted", done

    async def balance(self, member: str) -> int:
        status, body = await self.pipeline["ledger"].get(f"{BASE}/members/{member}/balance")
        assert status == 200, body
        return int(body["balance"])


@pytest.fixture
async def chain(infra: Infra) -> AsyncIterator[Chain]:
    clock = Clock(OCT)
    dsn = await infra.new_database("liability_")
    redemption = RedemptionSettings(coupon_key=SecretStr("liability-test-key"))
    async with Pipeline(ServiceHarness(earn_spec(clock=clock), dsn), ServiceHarness(ledger_spec(clock=clock), dsn),
                        ServiceHarness(redemption_spec(redemption, clock=clock), dsn),
                        ServiceHarness(insight_spec(clock=clock), dsn)) as pipeline:
        yield Chain(pipeline, clock)
    await check_ledger_invariants(dsn)


async def mixed_feed(chain: Chain) -> None:
    clock = chain.clock
    # October: purchases at the till (1 point a yuan, 2% more from 500), one online (pending 14 days).
    await chain.purchase("ann", "3000.00")
    await chain.purchase("bob", "900.00")
    await chain.purchase("cy", "400.00")
    await chain.purchase("di", "450.00", channel="online")
    eve_order = await chain.purchase("eve", "1000.00")
    clock.now += timedelta(hours=2)
    await chain.redeem("ann", "rice-5kg")  # 3000
    await chain.redeem("eve", "cashback-10")  # 1000 of eve's 1020
    tote = await chain.redeem("bob", "tote-bag")  # 800, handed back the next day
    clock.now += timedelta(days=1)
    await chain.cancel(tote["redemption_id"])
    # November: eve's basket is refunded after she spent its points: she owes 1000.
    clock.now = NOV
    await chain.refund("eve", eve_order, "1000.00")
    assert await chain.balance("eve") == -1000
    await chain.admin("members/cy/awards", {"points": 200, "reason": "goodwill for a late delivery"})
    await chain.admin("members/bob/adjustments", {"direction": "debit", "points": 50, "reason": "double scan"})
    await chain.admin("transfers", {"from_member_id": "ann", "to_member_id": "cy", "points": 30, "reason": "family"})
    # December: eve's next basket repays part of her debt; bob earns again.
    clock.now = DEC
    await chain.purchase("eve", "300.00")
    assert await chain.balance("eve") == -700
    await chain.purchase("bob", "120.00")
    # Past the end of 2027 every 2026 lot has expired: the sweeper's commands reach the ledger.
    clock.now = SWEEP
    out = await chain.pipeline.run_job("ledger", "sweeper", SWEEP)
    assert [m for m in out.of(PointsEntryPosted) if m["kind"] == "expire"], "the sweeper expired something"


async def member_entries(chain: Chain) -> list[dict[str, Any]]:
    rows = await chain.pipeline["ledger"].query(
        "SELECT a.member_id, e.kind, e.amount, e.to_account_id = e.account_id AS incoming, e.balance_after "
        "FROM entries e JOIN accounts a ON a.id = e.account_id WHERE a.kind = 'member' AND a.program_id = $1 "
        "ORDER BY a.id, e.seq", P)
    return [dict(r) for r in rows]


async def test_the_roll_forward_closes_at_the_ledgers_outstanding_after_a_mixed_feed(chain: Chain) -> None:
    await mixed_feed(chain)
    status, summary = await chain.pipeline["ledger"].get(f"{BASE}/summary")
    assert status == 200, summary
    assert summary["redeemed"] > 0 and summary["expired"] > 0 and summary["adjusted"] == -50

    status, body = await chain.pipeline["insight"].get(f"{BASE}/liability")
    assert status == 200, body
    months = body["months"]
    assert [m["month"] for m in months][:3] == ["2026-10", "2026-11", "2026-12"]
    assert months[-1]["month"] in ("2027-12", "2028-01")  # the expiries at the end of 2027
    assert months[-1]["closing"] == body["closing"] == summary["outstanding"]
    for measure in ("issued", "redeemed", "expired", "adjusted"):
        assert sum(m[measure] for m in months) == summary[measure], measure
    assert sum(m["transferred"] for m in months) == 0
    assert Decimal(body["closing_money"]) == Decimal(summary["liability"])
    assert body["currency"] == "CNY" and Decimal(body["point_value"]) == Decimal("0.01")
    assert months[0]["opening"] == 0
    for before, month in itertools.pairwise(months):
        assert month["opening"] == before["closing"], month
    for m in months:
        assert m["closing"] == (m["opening"] + m["issued"] - m["redeemed"] - m["expired"] + m["adjusted"]
                                + m["transferred"]), m

    response = await chain.pipeline["insight"].request("GET", f"{BASE}/liability?format=csv")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["month"] for r in rows] == [m["month"] for m in months]
    for row, m in zip(rows, months, strict=True):
        for column in ("opening", "issued", "redeemed", "expired", "adjusted", "transferred", "closing"):
            assert int(row[column]) == m[column], (column, row)
        assert Decimal(row["closing_money"]) == Decimal(m["closing_money"]) and row["currency"] == "CNY"


async def test_the_cohorts_add_up_to_what_members_hold_and_to_what_was_credited(chain: Chain) -> None:
    await mixed_feed(chain)
    _, summary = await chain.pipeline["ledger"].get(f"{BASE}/summary")
    status, body = await chain.pipeline["insight"].get(f"{BASE}/cohorts")
    assert status == 200, body
    cohorts = body["cohorts"]
    assert [c["month"] for c in cohorts][:3] == ["2026-10", "2026-11", "2026-12"]
    last = [c["curve"][-1] for c in cohorts]
    assert sum(point["outstanding"] for point in last) == summary["outstanding"]
    for cohort, point in zip(cohorts, last, strict=True):
        assert cohort["issued"] == point["redeemed"] + point["expired"] + point["other"] + point["outstanding"], cohort
        ages = [p["age"] for p in cohort["curve"]]
        assert ages == list(range(len(ages)))

    # A cohort's points are the month's credits to members (earn, a cancelled redemption's points back, an award,
    # a transfer received), less what paid a debt of an earlier month: those points belong to the debt's cohort.
    entries = await member_entries(chain)
    credited = sum(e["amount"] for e in entries if e["incoming"])
    repaid = sum(min(e["amount"], e["amount"] - e["balance_after"]) for e in entries
                 if e["incoming"] and e["balance_after"] - e["amount"] < 0)
    assert repaid == 300  # eve's December basket, against her November debt
    assert sum(c["issued"] for c in cohorts) == credited - repaid
    # Eve's debt (1000, November) is November's cohort's, with cy's award (200) and transfer received (30); her
    # December basket (300) repays it, so it counts for November, not as December's issue.
    by_month = {c["month"]: c for c in cohorts}
    november, december = by_month["2026-11"], by_month["2026-12"]
    assert november["issued"] == 230
    assert [p["outstanding"] for p in november["curve"][:2]] == [230 - 1000, 230 - 1000 + 300]
    assert november["curve"][-1]["outstanding"] == 200 - 700  # cy's award never expires; eve owes 700
    assert [p["other"] for p in november["curve"][:2]] == [1000, 700]  # the debt, less what repaid it
    assert december["issued"] == 120 and december["curve"][-1]["outstanding"] == 0  # bob's basket, expired
    assert by_month["2026-10"]["curve"][-1]["outstanding"] == 0

    breakage = Decimal(body["ultimate_breakage"])
    assert 0 < breakage <= 1 and body["method"]


def entry_event(n: int, member: str, at: datetime, amount: int, seq: int) -> bytes:
    data = PointsEntryPosted(
        entry_id=n, program_id=P, member_id=member, seq=seq, amount=amount, balance_after=amount, kind="earn",
        idempotency_key=f"earn:{n}", cause={"source_event_id": f"src{n}", "rule_id": "base"}, occurred_at=at,
        posted_at=at, lots=[{"lot_id": n, "amount": amount, "available_at": at,
                             "expires_at": at + timedelta(days=365)}], hash="00")
    return cloud_event(PointsEntryPosted, f"e{n}", at, data.model_dump(mode="json"))


@pytest.fixture
async def insight(infra: Infra) -> AsyncIterator[ServiceHarness]:
    async with ServiceHarness(insight_spec(clock=lambda: NOW), await infra.new_database("watch_")) as harness:
        yield harness


NOW = datetime(2026, 11, 20, 4, 0, tzinfo=UTC)


async def test_the_abuse_watch_lists_an_outlier_and_a_shared_device_and_announces_each_once(
        insight: ServiceHarness) -> None:
    at = NOW - timedelta(days=3)
    for n in range(24):  # the norm: about 100 points each
        await insight.send(topics.LEDGER_ENTRIES, entry_event(n + 1, f"m{n:02d}", at, 90 + n, 1), key=f"m{n:02d}")
    await insight.send(topics.LEDGER_ENTRIES, entry_event(100, "whale", at, 5000, 1), key="whale")
    for n in range(5):
        member = f"farm{n}"
        await insight.send(topics.MEMBERS, cloud_event(MemberEnrolled, f"enrol-{n}", at, {
            "program_id": P, "member_id": member, "enrolled_at": at.isoformat(), "fingerprints": {"device": "same"}}),
                           key=member)
    await insight.send(topics.MEMBERS, cloud_event(MemberEnrolled, "enrol-x", at, {
        "program_id": P, "member_id": "loner", "fingerprints": {"device": "other"}}), key="loner")

    done, out = await insight.run_job("abuse-watch", NOW)
    assert done == 6
    status, body = await insight.get(f"{BASE}/watch")
    assert status == 200, body
    found = {(m["member_id"], m["reason"]) for m in body["members"]}
    assert found == {("whale", "earning_outlier")} | {(f"farm{n}", "shared_fingerprint") for n in range(5)}
    flagged = out.of(MemberFlagged)
    assert sorted((f["member_id"], f["reason"]) for f in flagged) == sorted(found)
    assert all(m.topic == topics.INSIGHT for m in out.messages) and len(out.messages) == len(found)
    whale = next(m for m in body["members"] if m["member_id"] == "whale")
    assert "5000" in whale["detail"]

    done, again = await insight.run_job("abuse-watch", NOW + timedelta(minutes=10))
    assert done == 6 and again.messages == []
    _, body = await insight.get(f"{BASE}/watch")
    assert {(m["member_id"], m["reason"]) for m in body["members"]} == found
