"""Insight on the fast harness (its real consumer and routes over real PostgreSQL): a generated feed whose totals the
test works out itself, read back as KPIs for a day, a month and a period across a month end in Asia/Shanghai; the
verdicts at the seed's edges; leaderboards with an opt-out; balance bands and their CSV; a replayed batch that
changes nothing."""

from __future__ import annotations

import csv
import io
import random
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from services.insight.app import spec as insight_spec
from services.insight.domain import HEALTH
from shared.contracts import topics
from shared.contracts.ledger_entries import PointsEntryPosted
from shared.contracts.purchases import PurchaseCompleted
from shared.contracts.redemptions import RedemptionCompleted
from shared.contracts.referral_outcomes import ReferralRejected, ReferralRewarded
from shared.contracts.tasks import TaskCompleted
from shared.testing import ServiceHarness, cloud_event
from tests.support import Infra

SHANGHAI = ZoneInfo("Asia/Shanghai")
P = "retail"  # Asia/Shanghai, 0.01 a point, cheapest reward 800
# Around the October/November month end, in Shanghai: from 28 October to 3 November local.
START = datetime(2026, 10, 28, 0, 0, tzinfo=SHANGHAI)


def local_day(at: datetime) -> date:
    return at.astimezone(SHANGHAI).date()


class Feed:
    """Events and what they add up to, worked out here, not read back from the service."""

    def __init__(self, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.records: list[tuple[str, bytes, str]] = []
        self.seq: dict[str, int] = defaultdict(int)
        self.balance: dict[str, int] = defaultdict(int)
        self.issued: Counter[date] = Counter()
        self.redeemed: Counter[date] = Counter()
        self.by_rule: dict[date, Counter[str]] = defaultdict(Counter)
        self.by_reward: dict[date, Counter[str]] = defaultdict(Counter)
        self.revenue: dict[date, Decimal] = defaultdict(Decimal)
        self.active: dict[date, set[str]] = defaultdict(set)
        self.earned: dict[date, Counter[str]] = defaultdict(Counter)
        self.tasks: dict[date, set[str]] = defaultdict(set)
        self.members: set[str] = set()
        self.referrals: dict[date, Counter[str]] = defaultdict(Counter)
        self.n = 0

    def _id(self) -> str:
        self.n += 1
        return f"e{self.n}"

    def entry(self, member: str, at: datetime, amount: int, kind: str, rule: str | None = None) -> None:
        self.seq[member] += 1
        self.balance[member] += amount
        self.members.add(member)
        day = local_day(at)
        entry_id = self.n + 1
        data = PointsEntryPosted(
            entry_id=entry_id, program_id=P, member_id=member, seq=self.seq[member], amount=amount,
            balance_after=self.balance[member], kind=kind, idempotency_key=f"k{entry_id}",
            cause={"source_event_id": f"src{entry_id}", "rule_id": rule}, occurred_at=at, posted_at=at,
            lots=[{"lot_id": entry_id, "amount": amount, "available_at": at, "expires_at": at + timedelta(days=365)}]
            if amount > 0 else [], hash="00")
        self.records.append((topics.LEDGER_ENTRIES, cloud_event(PointsEntryPosted, self._id(), at,
                                                                data.model_dump(mode="json")), member))
        if kind == "earn":
            self.issued[day] += amount
            self.by_rule[day][rule or ""] += amount
            self.earned[day][member] += amount
            self.active[day].add(member)
        elif kind == "redeem":
            self.redeemed[day] -= amount
            self.active[day].add(member)

    def event(self, contract: type, at: datetime, data: dict[str, Any], member: str) -> None:
        self.records.append((contract.CHANNEL_TOPIC if hasattr(contract, "CHANNEL_TOPIC")
                             else topics.channel_of(contract).topic,
                             cloud_event(contract, self._id(), at, data), member))

    def generate(self, members: int = 8, days: int = 7) -> Feed:
        for d in range(days):
            for h in range(0, 24, 3):
                at = START + timedelta(days=d, hours=h, minutes=self.rng.randrange(60))
                member = f"m{self.rng.randrange(members):02d}"
                total = Decimal(self.rng.randrange(500, 50000)) / 100
                channel = self.rng.choice(["pos", "online", "app"])
                self.event(PurchaseCompleted, at, {"program_id": P, "member_id": member, "order_id": self._id(),
                                                   "channel": channel, "currency": "CNY", "total": str(total)},
                           member)
                self.revenue[local_day(at)] += total
                self.entry(member, at, int(total), "earn", self.rng.choice(["base", "weekend"]))
                if self.rng.random() < 0.7:
                    reward = self.rng.choice(["tote-bag", "coupon-20", "cashback-10", "rice-5kg"])
                    points = self.rng.choice([100, 200, 300])
                    if self.balance[member] >= points:
                        self.entry(member, at + timedelta(minutes=5), -points, "redeem")
                        self.event(RedemptionCompleted, at + timedelta(minutes=5), {
                            "program_id": P, "member_id": member, "redemption_id": self._id(), "reward_id": reward,
                            "kind": "goods", "quantity": 1, "points": points}, member)
                        self.by_reward[local_day(at + timedelta(minutes=5))][reward] += points
                if self.rng.random() < 0.3:
                    self.event(TaskCompleted, at, {"program_id": P, "member_id": member, "task_id": self._id(),
                                                   "task_type": "survey"}, member)
                    self.tasks[local_day(at)].add(member)
                if self.rng.random() < 0.2:
                    rewarded = self.rng.random() < 0.7
                    referee = f"r{self.n}"
                    if rewarded:
                        self.event(ReferralRewarded, at, {
                            "program_id": P, "referral_id": self._id(), "referrer_member_id": member,
                            "referee_member_id": referee, "qualifying_order_id": "o", "referrer_points": 0,
                            "referee_points": 0}, referee)
                    else:
                        self.event(ReferralRejected, at, {
                            "program_id": P, "referral_id": self._id(), "referrer_member_id": member,
                            "referee_member_id": referee, "reason": "self_referral", "detail": "same device"}, referee)
                    self.referrals[local_day(at)]["rewarded" if rewarded else "rejected"] += 1
        return self

    def over(self, first: date, last: date) -> dict[str, Any]:
        days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
        rules: Counter[str] = Counter()
        rewards: Counter[str] = Counter()
        earned: Counter[str] = Counter()
        for d in days:
            rules.update(self.by_rule[d])
            rewards.update(self.by_reward[d])
            earned.update(self.earned[d])
        return {"issued": sum(self.issued[d] for d in days), "redeemed": sum(self.redeemed[d] for d in days),
                "revenue": sum((self.revenue[d] for d in days), Decimal(0)),
                "active": len(set().union(*(self.active[d] for d in days))),
                "task_members": len(set().union(*(self.tasks[d] for d in days))),
                "rules": rules, "rewards": rewards, "earned": earned,
                "rewarded": sum(self.referrals[d]["rewarded"] for d in days),
                "rejected": sum(self.referrals[d]["rejected"] for d in days)}


@pytest.fixture
async def insight(infra: Infra) -> AsyncIterator[ServiceHarness]:
    async with ServiceHarness(insight_spec(), await infra.new_database("insight_")) as harness:
        yield harness


async def feed(harness: ServiceHarness, generated: Feed) -> None:
    for topic, value, member in generated.records:
        await harness.send(topic, value, key=member)


def q(value: Decimal | int, places: str = "0.0001") -> Decimal:
    return (Decimal(value)).quantize(Decimal(places))


def share(a: Decimal | int, b: Decimal | int) -> Decimal | None:
    """a ÷ b as the service rounds it (four places, half up); None when there is nothing to divide by."""
    return q(Decimal(a) / Decimal(b)) if b else None


def value(kpi: dict[str, Any]) -> Decimal | None:
    return Decimal(kpi["value"]) if kpi["value"] is not None else None


@pytest.mark.parametrize("first, last", [(date(2026, 10, 31), date(2026, 10, 31)),  # a day
                                         (date(2026, 11, 1), date(2026, 11, 30)),  # a month
                                         (date(2026, 10, 29), date(2026, 11, 2))])  # across the month end
async def test_every_kpi_equals_the_totals_worked_out_from_the_feed(insight: ServiceHarness, first: date,
                                                                    last: date) -> None:
    generated = Feed().generate()
    await feed(insight, generated)
    expect = generated.over(first, last)
    status, body = await insight.get(f"/v1/programs/{P}/kpis?from={first}&to={last}&granularity=day")
    assert status == 200, body
    kpis = {k["kpi"]: k for k in body["kpis"]}
    assert Decimal(kpis["issued"]["value"]) == expect["issued"]
    assert Decimal(kpis["redeemed"]["value"]) == expect["redeemed"]
    assert Decimal(kpis["revenue"]["value"]) == expect["revenue"]
    assert Decimal(kpis["active_members"]["value"]) == expect["active"]
    assert value(kpis["issue_redeem_ratio"]) == share(expect["issued"], expect["redeemed"])
    members = len(generated.members)
    assert value(kpis["task_completion"]) == share(expect["task_members"], members)
    rewards = sorted(expect["rewards"].values(), reverse=True)
    assert value(kpis["top3_reward_share"]) == share(sum(rewards[:3]), sum(rewards))
    rate = share(expect["redeemed"], expect["issued"])
    assert rate is not None and expect["redeemed"] > 0, "the feed redeems in every period tested"
    assert value(kpis["points_cost_share"]) == share(expect["issued"] * Decimal("0.01") * rate, expect["revenue"])
    assert value(kpis["breakage"]) == 0 and value(kpis["redemption_rate"]) == rate
    assert value(kpis["referral_conversion"]) == share(expect["rewarded"], expect["rewarded"] + expect["rejected"])
    assert {r["rule_id"]: r["points"] for r in body["issued_by_rule"]} == dict(expect["rules"])
    assert {r["reward_id"]: r["points"] for r in body["redeemed_by_reward"]} == dict(expect["rewards"])
    # The daily series adds up to the period, day by local day.
    assert sum(s["issued"] for s in body["series"]) == expect["issued"]
    assert {s["period"] for s in body["series"]} <= {str(first + timedelta(days=i))
                                                      for i in range((last - first).days + 1)}
    for k in body["kpis"]:
        if k["verdict"] not in (None, "ok"):
            assert k["advice"], k
    # Holdings against the cheapest reward (800): members with points now.
    held = [b for b in generated.balance.values() if b > 0]
    assert Decimal(kpis["holding_vs_cheapest_reward"]["value"]) == q(q(Decimal(sum(held)) / len(held)) / 800)

    status, top = await insight.get(f"/v1/programs/{P}/leaderboard?from={first}&to={last}&limit=5")
    assert status == 200
    best = sorted(expect["earned"].items(), key=lambda t: (-t[1], t[0]))[:5]
    assert [(m["member_id"], m["points"]) for m in top["members"]] == best


async def test_a_month_in_the_programme_zone_is_not_the_utc_month(insight: ServiceHarness) -> None:
    at = datetime(2026, 10, 31, 17, 30, tzinfo=UTC)  # 1 November, 01:30 in Shanghai
    generated = Feed()
    generated.entry("m1", at, 500, "earn", "base")
    await feed(insight, generated)
    _, october = await insight.get(f"/v1/programs/{P}/kpis?from=2026-10-01&to=2026-10-31")
    _, november = await insight.get(f"/v1/programs/{P}/kpis?from=2026-11-01&to=2026-11-30&granularity=month")
    assert {k["kpi"]: k["value"] for k in october["kpis"]}["issued"] == "0"
    assert {k["kpi"]: k["value"] for k in november["kpis"]}["issued"] == "500"
    assert november["series"][0]["period"] == "2026-11-01"


async def test_a_batch_delivered_twice_counts_once(insight: ServiceHarness) -> None:
    generated = Feed().generate(members=10, days=2)
    await feed(insight, generated)
    await feed(insight, generated)  # Kafka redelivers after a crash: the inbox makes it harmless
    expect = generated.over(date(2026, 10, 28), date(2026, 10, 29))
    _, body = await insight.get(f"/v1/programs/{P}/kpis?from=2026-10-28&to=2026-10-29")
    assert Decimal({k["kpi"]: k["value"] for k in body["kpis"]}["issued"]) == expect["issued"]


EDGES = [
    ("issue_redeem_ratio", "2.5", "ok"), ("issue_redeem_ratio", "2.5001", "watch"),
    ("issue_redeem_ratio", "3", "watch"), ("issue_redeem_ratio", "3.0001", "act"),
    ("holding_vs_cheapest_reward", "2", "ok"), ("holding_vs_cheapest_reward", "3", "ok"),
    ("holding_vs_cheapest_reward", "1.9999", "watch"), ("holding_vs_cheapest_reward", "4.0001", "act"),
    ("holding_vs_cheapest_reward", "1.4999", "act"),
    ("task_completion", "0.25", "ok"), ("task_completion", "0.2", "watch"), ("task_completion", "0.1999", "act"),
    ("top3_reward_share", "0.6", "ok"), ("top3_reward_share", "0.5999", "watch"),
    ("top3_reward_share", "0.4499", "act"),
    ("points_cost_share", "0.003", "ok"), ("points_cost_share", "0.008", "ok"),
    ("points_cost_share", "0.0081", "watch"), ("points_cost_share", "0.0101", "act"),
    ("points_cost_share", "0.0019", "act"),
    ("points_gmv_share", "0.05", "ok"), ("points_gmv_share", "0.15", "ok"),
    ("points_gmv_share", "0.0499", "watch"), ("points_gmv_share", "0.2001", "act"),
]


@pytest.mark.parametrize("kpi, value, verdict", EDGES)
def test_verdicts_follow_the_seed_ranges_at_their_edges(kpi: str, value: str, verdict: str) -> None:
    health = HEALTH[kpi]
    assert health.verdict(Decimal(value)) == verdict
    assert (health.advice(Decimal(value)) is None) == (verdict == "ok")


async def test_opted_out_members_leave_the_leaderboard_and_bands_list_their_members(insight: ServiceHarness) -> None:
    generated = Feed()
    at = START + timedelta(hours=1)
    for member, points in (("ann", 5000), ("bob", 1700), ("cy", 900), ("di", 100)):
        generated.entry(member, at, points, "earn", "base")
    await feed(insight, generated)
    status, _ = await insight.get(f"/v1/programs/{P}/leaderboard?from=2026-10-28&to=2026-10-28")
    assert status == 200
    response = await insight.request("PUT", f"/v1/programs/{P}/members/ann/leaderboard", json={"opt_out": True})
    assert response.status_code == 200, response.text
    _, top = await insight.get(f"/v1/programs/{P}/leaderboard?from=2026-10-28&to=2026-10-28")
    assert [m["member_id"] for m in top["members"]] == ["bob", "cy", "di"]
    refused = await insight.request("PUT", f"/v1/programs/{P}/members/ann/leaderboard", json={"opt_out": "maybe"})
    assert refused.status_code == 422 and refused.json()["error"] == "invalid_request"

    _, segments = await insight.get(f"/v1/programs/{P}/segments")
    assert {b["band"]: b["members"] for b in segments["bands"]} == {"below": 1, "1-2x": 1, "2-3x": 1, "above": 1}
    band = await insight.request("GET", f"/v1/programs/{P}/segments/2-3x/members?format=csv")
    assert band.status_code == 200 and band.headers["content-type"].startswith("text/csv")
    assert list(csv.reader(io.StringIO(band.text))) == [["member_id", "balance"], ["bob", "1700"]]
    _, listed = await insight.get(f"/v1/programs/{P}/segments/above/members")
    assert listed["members"] == [{"member_id": "ann", "balance": 5000}] and listed["next_after"] is None
    status, unknown = await insight.get(f"/v1/programs/{P}/segments/middle/members")
    assert status == 404 and unknown["error"] == "unknown_band"


async def test_bad_periods_and_unknown_programmes_are_answered(insight: ServiceHarness) -> None:
    status, body = await insight.get(f"/v1/programs/{P}/kpis?from=2026-12-01&to=2026-11-01")
    assert status == 422 and body["error"] == "invalid_period"
    status, body = await insight.get("/v1/programs/nope/kpis")
    assert status == 404 and body["error"] == "unknown_program"
    status, body = await insight.get(f"/v1/programs/{P}/kpis?granularity=year")
    assert status == 422 and body["error"] == "invalid_request"
    response = await insight.request("GET", f"/v1/programs/{P}/kpis", token="")
    assert response.status_code == 401


async def test_a_referral_announced_again_counts_once_as_what_it_became(insight: ServiceHarness) -> None:
    at = START + timedelta(hours=2)
    base = {"program_id": P, "referral_id": "ref-1", "referrer_member_id": "ann", "referee_member_id": "bob"}
    rejected = {**base, "reason": "velocity", "detail": "sent to review"}
    rewarded = {**base, "qualifying_order_id": "o1", "referrer_points": 100, "referee_points": 50}
    for event_id, contract, data in (("x1", ReferralRejected, rejected), ("x2", ReferralRewarded, rewarded),
                                     ("x3", ReferralRewarded, {**rewarded, "bonus_points": 200})):
        await insight.send(topics.REFERRAL_OUTCOMES, cloud_event(contract, event_id, at, data), key="bob")
    _, body = await insight.get(f"/v1/programs/{P}/kpis?from=2026-10-28&to=2026-10-28")
    assert body["referrals"] == {"rewarded": 1, "rejected": 0, "rejected_by_reason": {"velocity": 0}, "revoked": 0,
                                 "conversion": "1.0000", "referee_spend_90d": "0"}


async def test_a_kpi_with_nothing_to_measure_leaves_no_gauge_behind(insight: ServiceHarness) -> None:
    now = datetime.now(UTC)
    generated = Feed()
    generated.entry("ann", now - timedelta(days=1), 900, "earn", "base")
    generated.entry("ann", now - timedelta(hours=20), -300, "redeem")
    await feed(insight, generated)
    await insight.run_job("kpi-gauges", now)
    metrics = (await insight.request("GET", "/metrics", token="")).text
    assert f'jifen_insight_kpi{{kpi="issue_redeem_ratio",program_id="{P}",service="insight"}} 3.0' in metrics
    await insight.run_job("kpi-gauges", now + timedelta(days=40))  # nothing in the last 30 days: no ratio
    metrics = (await insight.request("GET", "/metrics", token="")).text
    assert 'kpi="issue_redeem_ratio"' not in metrics
