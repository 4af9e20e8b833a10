"""Check-ins with streaks, and tasks with caps per period."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.earn.activity import (
    Cap,
    Checkin,
    ManualAwards,
    Streak,
    Task,
    award_refusal,
    checkin_awards,
    period_of,
    streak_length,
    task_award,
)
from services.earn.programme import Programme
from shared.programmes import Catalogue
from shared.settings import Settings

DAY = date(2026, 11, 23)
RULE = Checkin(points=1, streaks=[Streak(days=7, bonus=10)])


def days_before(n: int) -> set[date]:
    return {DAY - timedelta(days=k) for k in range(1, n + 1)}


@pytest.mark.parametrize(("earlier", "streak", "points"), [
    (set(), 1, [1]),
    (days_before(5), 6, [1]),
    (days_before(6), 7, [1, 10]),  # the 7th day in a row pays the bonus
    (days_before(7), 8, [1]),  # once, not every day after
    (days_before(6) - {DAY - timedelta(days=3)}, 3, [1]),  # a missed day starts the run again
])
def test_checkin_streaks(earlier: set[date], streak: int, points: list[int]) -> None:
    assert streak_length(DAY, earlier) == streak
    assert [a.points for a in checkin_awards(RULE, streak)] == points


def test_a_repeating_streak_pays_every_n_days() -> None:
    rule = Checkin(points=2, streaks=[Streak(days=7, bonus=10, repeat=True)])
    assert [sum(a.points for a in checkin_awards(rule, n)) for n in (7, 8, 14, 21)] == [12, 2, 12, 12]


SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.mark.parametrize(("per", "at", "period"), [
    ("day", datetime(2026, 11, 23, 17, tzinfo=UTC), "2026-11-24"),  # 01:00 the next day in Shanghai
    ("week", datetime(2026, 11, 26, 3, tzinfo=UTC), "2026-11-23"),  # weeks start on Monday
    ("month", datetime(2026, 11, 30, 17, tzinfo=UTC), "2026-12"),
    ("year", datetime(2026, 6, 1, tzinfo=UTC), "2026"),
    ("ever", datetime(2026, 6, 1, tzinfo=UTC), "ever"),
])
def test_cap_periods_follow_the_programmes_time_zone(per: str, at: datetime, period: str) -> None:
    assert period_of(per, at, SHANGHAI) == period  # type: ignore[arg-type]


def test_a_task_earns_until_its_cap_is_full_and_then_says_why_not() -> None:
    review = Task(rule_id="review", task_type="review", points=5, cap=Cap(per="day", count=3))
    awards = [task_award(review, used) for used in range(4)]
    assert [(a.points, a.capped) for a in awards] == [(5, False), (5, False), (5, False), (0, True)]
    assert awards[-1].why == "cap reached: 3 per day"


MANUAL = ManualAwards(sources=frozenset({"crm://service-desk", "hr://portal"}), max_points=500)


@pytest.mark.parametrize(("source", "points", "refusal"), [
    ("crm://service-desk", 500, None),
    ("hr://portal", 1, None),
    ("pos://store-1", 10, "untrusted_source"),  # a till may not hand out points by hand
    ("crm://service-desk-2", 10, "untrusted_source"),  # sources match exactly, not by prefix
    ("crm://service-desk", 501, "award_too_large"),
])
def test_manual_awards_are_paid_only_from_trusted_sources_within_the_limit(source: str, points: int,
                                                                            refusal: str | None) -> None:
    refused = award_refusal(MANUAL, source, points)
    assert (refused[0] if refused else None) == refusal
    if refused:
        assert source in refused[1] or str(MANUAL.max_points) in refused[1]


def test_a_manual_award_rule_must_trust_some_source() -> None:
    with pytest.raises(ValueError, match="sources"):
        ManualAwards(sources=frozenset(), max_points=10)


def test_the_default_programme_rewards_the_documented_activity() -> None:
    default = Catalogue.load(Settings().programmes_dir, Programme).at("default", datetime(2026, 11, 23, tzinfo=UTC))
    assert default is not None and default.activity.checkin is not None
    assert (default.activity.checkin.points, default.activity.checkin.streaks) == (1, [Streak(days=7, bonus=10)])
    tasks = {t.task_type: (t.points, t.cap) for t in default.activity.tasks}
    assert tasks == {"profile": (20, Cap(per="ever", count=1)), "review": (5, Cap(per="day", count=3))}
