"""The forecast for a programme with no history: the generated feed has the stated members, spend and frequency
(and refunds, check-ins and referrals, every event valid under its contract); re-addressing another programme's
events changes only their programme; the seed's cost table's arithmetic and verdict on numbers made here."""

from __future__ import annotations

import argparse
import asyncio
import statistics
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from cli.whatif import forecast
from cli.whatif.forecast import cost_table, readdress, render_cost_table, synthetic_events
from cli.whatif.result import Comparison, Side
from shared.contracts.checkins import CheckinRecorded
from shared.contracts.members import MemberEnrolled
from shared.contracts.purchases import PurchaseCompleted, PurchaseRefunded
from shared.contracts.referrals import ReferralAccepted
from shared.contracts.topics import contracts
from shared.envelope import CloudEvent

START = datetime(2026, 9, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def feed() -> list[CloudEvent]:
    # 1,000 members buying 4 times a month at 80 on average, for 90 days: about 12,000 purchases.
    return synthetic_events("fresh", 1_000, Decimal("80"), 4, 90, 11, START, timezone="Asia/Shanghai")


def of(events: list[CloudEvent], type_: str) -> list[CloudEvent]:
    return [e for e in events if e.type == type_]


def test_the_feed_has_the_stated_members_spend_and_frequency(feed: list[CloudEvent]) -> None:
    enrolled = [e.data["member_id"] for e in of(feed, MemberEnrolled.TYPE)]
    purchases = of(feed, PurchaseCompleted.TYPE)
    assert len(enrolled) == len(set(enrolled)) == 1_000
    assert {p.data["member_id"] for p in purchases} <= set(enrolled)
    # A Poisson process of 4 a month: 1,000 × 4 × 90/30 = 12,000 expected (its standard deviation is about 110).
    assert abs(len(purchases) - 12_000) < 12_000 * 0.03, len(purchases)
    totals = [Decimal(p.data["total"]) for p in purchases]
    assert abs(statistics.fmean(totals) - 80) < 80 * 0.03, statistics.fmean(totals)
    assert 0.5 < float(statistics.pstdev(totals)) / statistics.fmean(totals) < 0.7  # SPEND_CV, stated
    # Each basket's lines add up to its total.
    assert all(sum(Decimal(line["total"]) for line in p.data["lines"]) == Decimal(p.data["total"]) for p in purchases)


def test_the_feed_has_refunds_check_ins_and_referrals_as_stated(feed: list[CloudEvent]) -> None:
    purchases = {p.data["order_id"]: p for p in of(feed, PurchaseCompleted.TYPE)}
    refunds = of(feed, PurchaseRefunded.TYPE)
    assert 0.02 < len(refunds) / len(purchases) < 0.04
    for refund in refunds:  # in full, days after the purchase it refunds
        bought = purchases[refund.data["order_id"]]
        assert refund.data["total"] == bought.data["total"] and refund.data["member_id"] == bought.data["member_id"]
        assert timedelta(days=1) <= refund.time - bought.time <= timedelta(days=7)
    checkins = of(feed, CheckinRecorded.TYPE)
    members = Counter(c.data["member_id"] for c in checkins)
    assert 0.25 < len(members) / 1_000 < 0.35
    assert len(checkins) == len({(c.data["member_id"], c.data["day"]) for c in checkins})  # once a day
    for c in checkins[:500]:  # the day is the programme's local day of the check-in
        assert c.time.astimezone(forecast.ZoneInfo("Asia/Shanghai")).date() == date.fromisoformat(c.data["day"])
    referrals = of(feed, ReferralAccepted.TYPE)
    assert 0.03 < len(referrals) / 1_000 < 0.07
    assert all(r.data["referrer_member_id"] != r.data["referee_member_id"] for r in referrals)


def test_the_feed_is_valid_in_time_order_and_the_same_for_a_seed(feed: list[CloudEvent]) -> None:
    types = contracts()
    for event in feed:
        types[event.type].model_validate(event.data)
        assert event.data["program_id"] == "fresh"
    times = [e.time for e in feed]
    assert times == sorted(times) and times[0] >= START and times[-1] < START + timedelta(days=90)
    assert len({e.event_id for e in feed}) == len(feed)
    small = synthetic_events("fresh", 50, Decimal("80"), 4, 30, 11, START)
    assert small == synthetic_events("fresh", 50, Decimal("80"), 4, 30, 11, START)
    assert small != synthetic_events("fresh", 50, Decimal("80"), 4, 30, 12, START)
    with pytest.raises(ValueError):
        synthetic_events("fresh", 0, Decimal("80"), 4, 30, 11, START)


def test_readdress_changes_only_the_programme() -> None:
    others = synthetic_events("retail", 40, Decimal("60"), 6, 30, 3, START)
    # A default-programme purchase may name no programme at all: re-addressed, it names the new one.
    unnamed = CloudEvent("p-1", "till://1", PurchaseCompleted.TYPE, START, {
        "member_id": "m-1", "order_id": "o-1", "channel": "pos", "currency": "CNY", "total": "10.00", "lines": []})
    events = [*others, unnamed, CloudEvent("x", "till://1", PurchaseCompleted.TYPE, START, "not an object")]
    moved = list(readdress(events, "fresh"))
    assert len(moved) == len(events)
    for before, after in zip(events, moved, strict=True):
        assert (after.id, after.source, after.type, after.time, after.subject) == \
               (before.id, before.source, before.type, before.time, before.subject)
        if isinstance(before.data, dict):
            assert after.data == {**before.data, "program_id": "fresh"}
            assert before.data.get("program_id") in ("retail", None)  # the original is not changed
        else:
            assert after.data == before.data
    assert {e.data["member_id"] for e in moved if e.type == MemberEnrolled.TYPE} == \
           {e.data["member_id"] for e in others if e.type == MemberEnrolled.TYPE}


def test_readdress_of_an_async_history_answers_in_kind() -> None:
    events = synthetic_events("retail", 10, Decimal("60"), 6, 30, 3, START)

    async def history() -> AsyncIterator[CloudEvent]:
        for event in events:
            yield event

    async def collect() -> list[CloudEvent]:
        return [e async for e in readdress(history(), "fresh")]

    moved = asyncio.run(collect())
    assert [e.id for e in moved] == [e.id for e in events]
    assert {e.data["program_id"] for e in moved} == {"fresh"}


def side(issued: int, revenue: str, point_value: str | None = "0.01", taken_back: int = 0) -> Side:
    return Side("draft", 1, Decimal(point_value) if point_value else None, "CNY",
                issued_by_rule=Counter({"base": issued}), taken_back_by_rule=Counter({"base": taken_back}),
                revenue=Decimal(revenue))


def values(rows: list[forecast.CostRow]) -> dict[str, object]:
    return {row.item: row.value for row in rows}


def test_the_cost_table_of_the_seed() -> None:
    # 1,000,000 points × 0.6 × 0.01 = 6,000.00 of 1,200,000.00 revenue: 0.5%, inside the band.
    rows = cost_table(side(1_000_000, "1200000.00"), Decimal("0.6"), "given")
    got = values(rows)
    assert got["net points issued"] == 1_000_000
    assert got["expected cost"] == Decimal("6000.00")
    assert got["cost share of revenue"] == Decimal("0.005")
    assert got["verdict"] == "ok"
    text = render_cost_table(rows)
    assert "6,000.00 CNY" in text and "0.50%" in text and "60.0% (given)" in text
    assert "ok (band 0.30%–0.80%)" in text


def test_the_cost_table_counts_refunds_and_judges_both_sides_of_the_band() -> None:
    # Refunds take back 200,000 of 1,200,000: 1,000,000 net, the same 0.5%.
    assert values(cost_table(side(1_200_000, "1200000", taken_back=200_000), Decimal("0.6")))["verdict"] == "ok"
    high = values(cost_table(side(2_000_000, "1200000"), Decimal("0.6")))  # 12,000 of 1.2 m: 1%
    assert (high["cost share of revenue"], high["verdict"]) == (Decimal("0.01"), "above")
    low = values(cost_table(side(1_000_000, "1200000"), Decimal("0.3")))  # 3,000: 0.25%
    assert (low["cost share of revenue"], low["verdict"]) == (Decimal("0.0025"), "below")
    edge = values(cost_table(side(1_600_000, "1200000"), Decimal("0.6")))  # 9,600: 0.8%, the band's top, ok
    assert edge["verdict"] == "ok"
    unvalued = values(cost_table(side(1_000_000, "1200000", point_value=None), Decimal("0.6")))
    assert unvalued["expected cost"] is None and unvalued["verdict"] is None
    no_revenue = values(cost_table(side(1_000_000, "0"), Decimal("0.6")))
    assert no_revenue["cost share of revenue"] is None and no_revenue["verdict"] is None


def parsed(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(exit_on_error=False)
    forecast.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_the_options_say_what_is_missing_or_wrong() -> None:
    assert forecast.refusal(parsed()) is None
    assert forecast.refusal(parsed("--history-of", "retail")) is None
    assert forecast.refusal(parsed("--synthetic", "--members", "500", "--spend", "80", "--frequency", "4")) is None
    assert forecast.refusal(parsed("--synthetic", "--members", "500")) == "--synthetic needs --spend, --frequency"
    assert forecast.refusal(parsed("--members", "500")) == "--members goes with --synthetic"
    assert forecast.refusal(parsed("--synthetic", "--members", "0", "--spend", "80", "--frequency", "4")) == \
        "--members, --days, --frequency and --spend must be above 0"
    assert forecast.refusal(parsed("--history-of", "retail", "--redemption-rate", "1.5")) == \
        "--redemption-rate 1.5 is not a share between 0 and 1"
    with pytest.raises(argparse.ArgumentError):
        parsed("--synthetic", "--spend", "eighty")
    with pytest.raises(argparse.ArgumentError):
        parsed("--synthetic", "--history-of", "retail")  # one stand-in or the other


def test_the_rate_is_given_observed_or_the_synthetic_default() -> None:
    assert forecast.expected_rate(parsed("--history-of", "retail", "--redemption-rate", "0.55"), Decimal("0.3")) \
        == (Decimal("0.55"), "given")
    assert forecast.expected_rate(parsed("--history-of", "retail"), Decimal("0.3125")) == \
        (Decimal("0.3125"), "observed in retail's history")
    assert forecast.expected_rate(parsed("--synthetic"), None) == (Decimal("0.4"), "default for a generated feed")


def test_a_priced_forecast_costs_both_sides_at_the_rate() -> None:
    comparison = Comparison("fresh", START, START + timedelta(days=30), "synthetic", 10,
                            Side("in force", None, None, None), side(1_000_000, "1200000"),
                            notes=["the history has no ledger entries"])
    got = forecast.priced(comparison, Decimal("0.4"), "default for a generated feed")
    assert got.draft.cost() == Decimal("4000.000")  # 1,000,000 × 0.4 × 0.01
    assert got.draft.cost_share() == Decimal(4000) / Decimal(1_200_000)
    assert got.live.redemption_rate == Decimal("0.4")
    assert got.notes[-1] == "expected redemption rate 0.4 (default for a generated feed), the same for both sides"
    assert comparison.draft.redemption_rate is None and len(comparison.notes) == 1  # the original kept
