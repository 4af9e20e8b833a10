"""Insight's comparison of an experiment's arms on the fast harness (its real consumer and routes over real
PostgreSQL): a temporary programme folder declares a referral experiment; entries, purchases, refunds, redemptions
and referral outcomes of members of both arms, and some outside the window, are fed; the API's members, means,
proportions and intervals are the ones worked out here from the same events. Bad input is answered."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest

from cli import report
from services.insight import experiments
from services.insight.app import spec as insight_spec
from services.insight.settings import InsightSettings
from shared.contracts import topics
from shared.contracts.base import Contract
from shared.contracts.ledger_entries import PointsEntryPosted
from shared.contracts.purchases import PurchaseCompleted, PurchaseRefunded
from shared.contracts.redemptions import RedemptionCancelled, RedemptionCompleted
from shared.contracts.referral_outcomes import ReferralRejected, ReferralRewarded
from shared.contracts.tasks import TaskCompleted
from shared.experiments import Experiment, arm_of
from shared.testing import ServiceHarness, cloud_event
from tests.support import Infra

P = "trial"
STARTS = datetime(2026, 11, 1, tzinfo=UTC)
ENDS = datetime(2026, 12, 1, tzinfo=UTC)
PROGRAMME = f"""
program_id: {P}
name: A trial programme
version: 1
effective_from: 2026-01-01T00:00:00Z
point_value: "0.01"
rewards:
  - reward_id: tote-bag
    points: 500
experiments:
  - experiment_id: referral-50
    name: "Invite a friend: 20 or 50 points"
    starts: {STARTS.isoformat()}
    ends: {ENDS.isoformat()}
    arms:
      - name: a
        share: "0.5"
      - name: b
        share: "0.5"
        overrides:
          referral:
            referrer_points: 50
"""


def folder(tmp_path: Path) -> Path:
    (tmp_path / f"{P}.yaml").write_text(PROGRAMME)
    return tmp_path


class Feed:
    """Events of the programme, and per member what of them falls in the window, worked out here."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes, str]] = []
        self.n = 0
        self.seq: dict[str, int] = defaultdict(int)
        self.seen: set[str] = set()
        self.earned: dict[str, int] = defaultdict(int)
        self.referral_points: dict[str, int] = defaultdict(int)
        self.spend: dict[str, Decimal] = defaultdict(Decimal)
        self.orders: dict[str, int] = defaultdict(int)
        self.redeemed: dict[str, int] = defaultdict(int)
        self.redemptions: dict[str, int] = defaultdict(int)
        self.judged: dict[str, int] = defaultdict(int)
        self.rewarded: dict[str, int] = defaultdict(int)

    def _id(self) -> str:
        self.n += 1
        return f"x{self.n}"

    def _in(self, member: str, at: datetime) -> bool:
        inside = STARTS <= at < ENDS
        if inside:
            self.seen.add(member)
        return inside

    def event(self, contract: type[Contract], at: datetime, data: dict[str, Any], member: str) -> str:
        event_id = self._id()
        self.records.append((topics.channel_of(contract).topic, cloud_event(contract, event_id, at, data), member))
        return event_id

    def credit(self, member: str, at: datetime, points: int, rule: str) -> None:
        self.seq[member] += 1
        data = PointsEntryPosted(
            entry_id=self.n + 1, program_id=P, member_id=member, seq=self.seq[member], amount=points,
            balance_after=points, kind="earn", idempotency_key=f"k{self.n + 1}",
            cause={"source_event_id": f"s{self.n + 1}", "rule_id": rule}, occurred_at=at, posted_at=at,
            hash="00")
        self.event(PointsEntryPosted, at, data.model_dump(mode="json"), member)
        if self._in(member, at):
            self.earned[member] += points
            self.referral_points[member] += points if rule.startswith("referral-") else 0

    def purchase(self, member: str, at: datetime, total: Decimal) -> str:
        order = self._id()
        self.event(PurchaseCompleted, at, {"program_id": P, "member_id": member, "order_id": order,
                                           "channel": "pos", "currency": "CNY", "total": str(total)}, member)
        if self._in(member, at):
            self.spend[member] += total
            self.orders[member] += 1
        return order

    def refund(self, member: str, at: datetime, order: str, total: Decimal) -> None:
        self.event(PurchaseRefunded, at, {"program_id": P, "member_id": member, "order_id": order,
                                          "refund_id": self._id(), "currency": "CNY", "total": str(total)}, member)
        if self._in(member, at):
            self.spend[member] -= total

    def redeem(self, member: str, at: datetime, points: int, cancel: bool = False) -> None:
        redemption = self._id()
        self.event(RedemptionCompleted, at, {"program_id": P, "member_id": member, "redemption_id": redemption,
                                             "reward_id": "tote-bag", "kind": "goods", "quantity": 1,
                                             "points": points}, member)
        if self._in(member, at):
            self.redemptions[member] += 1
            self.redeemed[member] += points
        if cancel:
            later = at + timedelta(hours=1)
            self.event(RedemptionCancelled, later, {"program_id": P, "member_id": member,
                                                    "redemption_id": redemption, "reward_id": "tote-bag",
                                                    "points_returned": points}, member)
            if self._in(member, later):
                self.redemptions[member] -= 1
                self.redeemed[member] -= points

    def referral(self, referrer: str, at: datetime, rewarded: bool, again: bool = False) -> None:
        referral, referee = self._id(), f"friend-{self.n}"
        common = {"program_id": P, "referral_id": referral, "referrer_member_id": referrer,
                  "referee_member_id": referee}
        times = 2 if again else 1  # announced again (its points changed): it counts once
        for _ in range(times):
            if rewarded:
                self.event(ReferralRewarded, at, {**common, "qualifying_order_id": "o1", "referrer_points": 20,
                                                  "referee_points": 20}, referrer)
            else:
                self.event(ReferralRejected, at, {**common, "reason": "self_referral", "detail": "same device"},
                           referrer)
        if self._in(referrer, at):
            self.judged[referrer] += 1
            self.rewarded[referrer] += rewarded


def experiment() -> Experiment:
    return Experiment.model_validate({
        "experiment_id": "referral-50", "starts": STARTS, "ends": ENDS,
        "arms": [{"name": "a", "share": "0.5"}, {"name": "b", "share": "0.5", "overrides": {"referral": {}}}]})


def generate() -> tuple[Feed, dict[str, str]]:
    """40 members in the window: arm b's refer more and convert better, and earn the bigger referral reward; two
    members seen only before the window and after it; one of arm a's events before the window too."""
    feed = Feed()
    members = [f"m{i:03d}" for i in range(40)]
    arms = {m: arm_of(P, experiment(), m).name for m in members}
    for i, m in enumerate(members):
        at = STARTS + timedelta(days=i % 28, hours=i % 24)
        b = arms[m] == "b"
        order = feed.purchase(m, at, Decimal(f"{20 + 7 * (i % 9)}.{i % 10}5"))
        feed.credit(m, at, 20 + 7 * (i % 9), "base")
        if i % 5 == 0:
            feed.refund(m, at + timedelta(hours=2), order, Decimal("3.50"))
        if i % 3 == 0:
            feed.redeem(m, at + timedelta(hours=3), 100 + 50 * (i % 4), cancel=i % 9 == 0)
        for k in range(1 + (i % 3) + (2 if b else 0)):
            rewarded = (k + i) % 5 != 0 if b else (k + i) % 3 == 0
            feed.referral(m, at + timedelta(hours=4, minutes=k), rewarded, again=k == 1)
            if rewarded:
                feed.credit(m, at + timedelta(hours=4, minutes=k), 50 if b else 20, "referral-referrer")
        if i % 4 == 0:
            feed.event(TaskCompleted, at, {"program_id": P, "member_id": m, "task_id": feed._id(),
                                           "task_type": "survey"}, m)
    feed.purchase("m000", STARTS - timedelta(days=1), Decimal("99.00"))  # before the window: not summed
    feed.credit("before", STARTS - timedelta(seconds=1), 500, "base")  # seen only outside the window
    feed.purchase("after", ENDS, Decimal("10.00"))  # `ends` is not in the window
    return feed, arms


class Clock:
    """The service's clock: after the window while the feed goes in (no event is ahead of it), moved by the test."""

    def __init__(self) -> None:
        self.now = datetime(2026, 12, 10, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def insight(infra: Infra, tmp_path: Path, clock: Clock) -> AsyncIterator[ServiceHarness]:
    settings = InsightSettings(programmes_dir=folder(tmp_path))
    async with ServiceHarness(insight_spec(settings, clock=clock), await infra.new_database("insight_x_")) as h:
        yield h


async def send(harness: ServiceHarness, feed: Feed) -> None:
    by_topic: dict[str, list[tuple[bytes, str]]] = defaultdict(list)
    for topic, value, member in feed.records:
        by_topic[topic].append((value, member))
    for topic, values in by_topic.items():  # a batch per topic, several members in each
        for start in range(0, len(values), 25):
            delivered = await harness.send(topic, *(v for v, _ in values[start:start + 25]), key=values[start][1])
            assert not delivered.dead, delivered.dead


def four(value: float | Decimal | None) -> str | None:
    if value is None:
        return None
    return str(Decimal(repr(value) if isinstance(value, float) else value).quantize(Decimal("0.0001"),
                                                                                    ROUND_HALF_UP))


async def test_the_arms_figures_are_the_ones_worked_out_from_the_feed(insight: ServiceHarness, clock: Clock) -> None:
    feed, arms = generate()
    await send(insight, feed)
    status, body = await insight.get(f"/v1/programs/{P}/experiments/referral-50")
    assert (status, body["status"]) == (200, "ended"), body
    clock.now = datetime(2026, 11, 20, tzinfo=UTC)
    status, body = await insight.get(f"/v1/programs/{P}/experiments/referral-50")
    assert (body["status"], body["control"], body["name"]) == ("running", "a", "Invite a friend: 20 or 50 points")
    members = {name: sorted(m for m in feed.seen if arms[m] == name) for name in ("a", "b")}
    assert "before" not in feed.seen and "after" not in feed.seen and len(feed.seen) == 40
    assert min(len(members["a"]), len(members["b"])) >= 10, "both arms have members to compare"
    assert {a["arm"]: (a["members"], a["overrides"]) for a in body["arms"]} == {
        "a": (len(members["a"]), []), "b": (len(members["b"]), ["referral"])}
    rows = await insight.query("SELECT member_id, arm FROM experiment_members WHERE program_id = $1", P)
    assert {r["member_id"]: r["arm"] for r in rows} == {m: arms[m] for m in feed.seen}

    metrics = {m["metric"]: {a["arm"]: a for a in m["arms"]} for m in body["metrics"]}
    assert set(metrics) == {m.metric for m in experiments.METRICS}
    means: dict[str, dict[str, int] | dict[str, Decimal]] = {
        "points_per_member": feed.earned, "spend_per_member": feed.spend, "orders_per_member": feed.orders,
        "referral_points_per_member": feed.referral_points, "points_redeemed_per_member": feed.redeemed}
    for metric, values in means.items():
        summaries = {arm: experiments.summarize(values.get(m, 0) for m in members[arm]) for arm in members}
        for arm, got in metrics[metric].items():
            exact = sum((Decimal(values.get(m, 0)) for m in members[arm]), Decimal(0)) / len(members[arm])
            assert (got["n"], got["value"]) == (len(members[arm]), four(exact)), (metric, arm)
            assert got["standard_error"] == four(summaries[arm].standard_error), (metric, arm)
        versus = experiments.welch(summaries["b"], summaries["a"])
        assert metrics[metric]["a"]["versus_control"] is None
        assert metrics[metric]["b"]["versus_control"] == {
            "difference": four(versus.difference), "ci_low": four(versus.low), "ci_high": four(versus.high),
            "lift": four(versus.lift), "significant": versus.significant}, metric

    judged = {arm: sum(feed.judged[m] for m in members[arm]) for arm in members}
    rewarded = {arm: sum(feed.rewarded[m] for m in members[arm]) for arm in members}
    conversion = metrics["referral_conversion"]
    assert {arm: (a["n"], a["successes"]) for arm, a in conversion.items()} == {
        arm: (judged[arm], rewarded[arm]) for arm in members}
    versus = experiments.newcombe(rewarded["b"], judged["b"], rewarded["a"], judged["a"])
    assert conversion["b"]["value"] == four(Decimal(rewarded["b"]) / judged["b"])
    assert conversion["b"]["versus_control"]["ci_low"] == four(versus.low)
    assert conversion["b"]["versus_control"]["significant"] is True, "b converts at 4 in 5, a at 1 in 3"
    redeemers = {arm: sum(1 for m in members[arm] if feed.redemptions[m] > 0) for arm in members}
    assert {arm: (a["n"], a["successes"]) for arm, a in metrics["redeemer_share"].items()} == {
        arm: (len(members[arm]), redeemers[arm]) for arm in members}
    # Arm b overrides the referral section: the referral metrics and the points are marked, spend is not.
    assert [m for m, by_arm in metrics.items() if by_arm["b"]["touched"]] == [
        "points_per_member", "referral_points_per_member", "referral_conversion"]
    assert not any(by_arm["a"]["touched"] for by_arm in metrics.values())

    split = experiments.sample_ratio([len(members["a"]), len(members["b"])], [0.5, 0.5])
    assert body["sample_ratio"]["observed"] == {"a": len(members["a"]), "b": len(members["b"])}
    assert body["sample_ratio"]["chi_square"] == four(split.chi_square)
    assert body["sample_ratio"]["flagged"] is False and body["sample_ratio"]["df"] == 1

    # `jifen report --experiment` prints this very answer: b's conversion row with its interval, marked.
    row = next(line for line in report.experiment_terminal(body).splitlines() if line.lstrip().startswith("b *")
               and "pp" in line)
    assert f"{Decimal(conversion['b']['value']) * 100:.1f}%" in row and row.rstrip().endswith("%") and "✔" in row

    clock.now = datetime(2026, 12, 10, tzinfo=UTC)
    await send(insight, feed)  # delivered again: the inbox knows every event
    clock.now = datetime(2026, 11, 20, tzinfo=UTC)
    assert (await insight.get(f"/v1/programs/{P}/experiments/referral-50"))[1] == body


async def test_unknown_experiments_and_programmes_are_answered(insight: ServiceHarness) -> None:
    status, body = await insight.get(f"/v1/programs/{P}/experiments/referral-51")
    assert (status, body["error"]) == (404, "unknown_experiment")
    assert "referral-50" in body["detail"]
    status, body = await insight.get("/v1/programs/nope/experiments/referral-50")
    assert (status, body["error"]) == (404, "unknown_program")
    status, body = await insight.get(f"/v1/programs/{P}/experiments/bad%20id")
    assert (status, body["error"]) == (422, "invalid_request")
    # Declared, nobody seen yet: the arms are there with no members and no figures.
    status, body = await insight.get(f"/v1/programs/{P}/experiments/referral-50")
    assert status == 200 and [a["members"] for a in body["arms"]] == [0, 0]
    assert body["sample_ratio"]["p_value"] is None and body["sample_ratio"]["flagged"] is False
    assert all(a["value"] is None and a["versus_control"] is None for m in body["metrics"] for a in m["arms"])
