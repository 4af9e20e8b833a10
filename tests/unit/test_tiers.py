"""The tier rules, pure: windows, upgrades (several levels at once), reviews (to the qualifying level, one step, after
grace), the reversal that undoes an upgrade, late events judged in their own window, manual tiers and their end,
and the warning before a drop."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from services.tiers import domain, windows
from services.tiers.domain import Contribution, Member
from services.tiers.programme import TierRules, TiersProgramme
from shared.programmes import Catalogue
from shared.settings import Settings

UTC_ZONE = ZoneInfo("UTC")
SHANGHAI = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 3, 10, 12, tzinfo=UTC)
LEVELS = [{"tier": "normal", "threshold": "0"}, {"tier": "silver", "threshold": "1000", "earn_multiplier": "1.25"},
          {"tier": "gold", "threshold": "5000", "earn_multiplier": "1.5"},
          {"tier": "diamond", "threshold": "20000", "earn_multiplier": "2"}]


def rules(**over: Any) -> TierRules:
    return TierRules.model_validate({"metric": "points_earned", "window": {"kind": "rolling", "months": 12},
                                     "levels": LEVELS, **over})


def earn(member: Member, r: TierRules, points: int, at: datetime, zone: ZoneInfo = UTC_ZONE,
         occurred_at: datetime | None = None) -> list[domain.Change]:
    return domain.contribute(member, r, zone, Contribution(occurred_at or at, points), at)


def tiers_of(changes: list[domain.Change]) -> list[tuple[str, str, str | None]]:
    return [(c.tier, c.reason, c.detail) for c in changes]


def test_an_upgrade_happens_as_soon_as_the_metric_crosses_and_may_skip_levels() -> None:
    r, m = rules(), Member.new(rules())
    assert earn(m, r, 999, T0) == []
    changes = earn(m, r, 1, T0 + timedelta(hours=1))
    assert tiers_of(changes) == [("silver", "upgrade", None)]
    assert (changes[0].previous, changes[0].qualifying_value, changes[0].at) == (
        "normal", 1000, T0 + timedelta(hours=1))
    # valid to the end of the next full window: 12 months on for a rolling window
    assert m.valid_until == datetime(2027, 3, 10, 13, tzinfo=UTC)
    jump = earn(m, r, 19_500, T0 + timedelta(days=1))  # silver → diamond in one purchase: one change
    assert tiers_of(jump) == [("diamond", "upgrade", None)] and jump[0].previous == "silver"


@pytest.mark.parametrize(("kind", "at", "valid_until"), [
    # a calendar year: a tier reached in 2026 is valid to the end of 2027, in the programme's time zone
    ({"kind": "calendar_year"}, datetime(2026, 3, 10, tzinfo=UTC), datetime(2027, 12, 31, 16, tzinfo=UTC)),
    # late on 31 December in UTC is already 2027 in Shanghai
    ({"kind": "calendar_year"}, datetime(2026, 12, 31, 17, tzinfo=UTC), datetime(2028, 12, 31, 16, tzinfo=UTC)),
    ({"kind": "rolling", "months": 6}, datetime(2026, 8, 31, tzinfo=UTC), datetime(2027, 2, 28, tzinfo=UTC)),
])
def test_the_tier_is_valid_to_the_end_of_the_next_full_window(kind: dict[str, Any], at: datetime,
                                                               valid_until: datetime) -> None:
    r, m = rules(window=kind), Member.new(rules())
    earn(m, r, 1000, at, SHANGHAI)
    assert m.valid_until == valid_until


def test_a_review_keeps_the_tier_when_the_period_supports_it_and_drops_to_what_it_supports() -> None:
    r, m = rules(), Member.new(rules())
    earn(m, r, 5000, T0)  # gold: the next 12 months are its period
    earn(m, r, 5000, T0 + timedelta(days=300))  # inside the period
    period_end = datetime(2027, 3, 10, 12, tzinfo=UTC)
    assert m.valid_until == period_end
    assert domain.advance(m, r, UTC_ZONE, period_end - timedelta(seconds=1)) == []  # not due yet
    # The review judges the 12 months ending at the period's end: the second 5000 keeps gold for another period.
    # (The 5000 that reached gold is exactly 12 months old: it bought the first period and has left the window.)
    assert domain.advance(m, r, UTC_ZONE, period_end + timedelta(days=1)) == []
    assert (m.tier, m.valid_until) == ("gold", datetime(2028, 3, 10, 12, tzinfo=UTC))
    # Nothing earned since: at the next review the window holds 0 and the member drops to normal.
    changes = domain.advance(m, r, UTC_ZONE, datetime(2029, 1, 1, tzinfo=UTC))
    assert tiers_of(changes) == [("normal", "downgrade", "review")]
    assert (changes[0].at, changes[0].qualifying_value, m.valid_until) == (datetime(2028, 3, 10, 12, tzinfo=UTC), 0,
                                                                          None)
    silver = Member.new(r)
    earn(silver, r, 5000, T0)
    earn(silver, r, 1500, T0 + timedelta(days=100))
    assert tiers_of(domain.advance(silver, r, UTC_ZONE, period_end)) == [("silver", "downgrade", "review")]


def test_one_step_drops_a_single_level_whatever_the_metric() -> None:
    r, m = rules(downgrade="one_step"), Member.new(rules())
    earn(m, r, 20_000, T0)
    changes = domain.advance(m, r, UTC_ZONE, T0 + timedelta(days=800))
    # Each review drops one level: diamond → gold (2027-03-10), gold → silver (2028), silver → normal would be 2029.
    assert tiers_of(changes) == [("gold", "downgrade", "review"), ("silver", "downgrade", "review")]
    assert [c.at.date().isoformat() for c in changes] == ["2027-03-10", "2028-03-10"]


def test_grace_days_put_the_drop_off_and_a_purchase_in_them_keeps_the_tier() -> None:
    levels = [*LEVELS[:2], {**LEVELS[2], "grace_days": 30}, LEVELS[3]]
    r = rules(levels=levels)
    m = Member.new(r)
    earn(m, r, 5000, T0)
    period_end = m.valid_until
    assert period_end is not None and m.due(r) == period_end + timedelta(days=30)
    assert domain.advance(m, r, UTC_ZONE, period_end + timedelta(days=29)) == []
    changes = domain.advance(m, r, UTC_ZONE, period_end + timedelta(days=31))
    assert tiers_of(changes) == [("normal", "downgrade", "review")] and changes[0].at == period_end + timedelta(days=30)
    # Another member requalifies inside the grace days: the rolling year then holds 5000 again.
    other = Member.new(r)
    earn(other, r, 5000, T0)
    assert earn(other, r, 5000, period_end + timedelta(days=10)) == []
    assert domain.advance(other, r, UTC_ZONE, period_end + timedelta(days=31)) == []
    assert other.tier == "gold"


def test_a_refund_in_the_same_window_undoes_the_upgrade_it_took_back_and_no_more() -> None:
    r, m = rules(window={"kind": "calendar_year"}), Member.new(rules())
    earn(m, r, 600, datetime(2026, 5, 1, tzinfo=UTC))
    crossing = datetime(2026, 6, 1, tzinfo=UTC)
    earn(m, r, 5000, crossing)  # 5600: gold (silver skipped)
    # The crossing purchase is refunded in part: 5600 - 800 = 4800 supports silver, which it also crossed.
    changes = domain.contribute(m, r, UTC_ZONE, Contribution(crossing, -800), datetime(2026, 6, 3, tzinfo=UTC))
    assert tiers_of(changes) == [("silver", "downgrade", "reversed")]
    # The rest comes back: 600 supports nothing, the member is back to what the upgrade replaced.
    changes = domain.contribute(m, r, UTC_ZONE, Contribution(crossing, -4200), datetime(2026, 6, 5, tzinfo=UTC))
    assert tiers_of(changes) == [("normal", "downgrade", "reversed")] and m.valid_until is None


def test_a_refund_after_the_window_closed_does_not_undo_the_upgrade() -> None:
    r, m = rules(window={"kind": "calendar_year"}), Member.new(rules())
    crossing = datetime(2026, 12, 20, tzinfo=UTC)
    earn(m, r, 1200, crossing)
    changes = domain.contribute(m, r, UTC_ZONE, Contribution(crossing, -1200), datetime(2027, 1, 5, tzinfo=UTC))
    assert changes == [] and m.tier == "silver"  # 2026 closed: its review (end of 2027) will judge 2027


def test_a_late_event_is_judged_in_the_window_it_belongs_to() -> None:
    r, m = rules(window={"kind": "calendar_year"}), Member.new(rules())
    earn(m, r, 900, datetime(2026, 12, 1, tzinfo=UTC))
    earn(m, r, 500, datetime(2027, 1, 10, tzinfo=UTC))  # 2027: 500, nothing
    assert m.tier == "normal"
    # A purchase of 20 December arrives in January: 2026 now holds 1100, silver, as of the purchase's own time.
    changes = earn(m, r, 200, datetime(2026, 12, 20, tzinfo=UTC))
    assert tiers_of(changes) == [("silver", "upgrade", None)] and changes[0].at == datetime(2026, 12, 20, tzinfo=UTC)
    assert m.valid_until == datetime(2028, 1, 1, tzinfo=UTC)


def test_a_late_event_never_rewrites_what_was_announced() -> None:
    r, m = rules(), Member.new(rules())
    earn(m, r, 1000, T0)  # silver since T0
    changes = earn(m, r, 4000, T0 - timedelta(days=3))  # happened before silver began: the rise dates from T0
    assert tiers_of(changes) == [("gold", "upgrade", None)] and changes[0].at == T0


def test_a_manual_tier_holds_until_its_end_and_is_not_a_floor_afterwards() -> None:
    r, m = rules(), Member.new(rules())
    earn(m, r, 1200, T0)  # silver
    until = T0 + timedelta(days=90)
    changes = domain.assign(m, r, "diamond", until, T0 + timedelta(days=1), UTC_ZONE)
    assert tiers_of(changes) == [("diamond", "manual", None)] and changes[0].valid_until == until
    assert earn(m, r, 100, T0 + timedelta(days=2)) == []  # the metric supports silver: diamond stays, by hand
    assert domain.advance(m, r, UTC_ZONE, until - timedelta(seconds=1)) == []
    ended = domain.advance(m, r, UTC_ZONE, until + timedelta(days=1))
    # At its end the member holds what the metric supports (silver), not diamond as a silent floor.
    assert tiers_of(ended) == [("silver", "expired_manual", None)] and ended[0].at == until
    assert not m.manual and m.valid_until == until + timedelta(days=365)


def test_the_metric_can_lift_a_member_above_a_manual_tier() -> None:
    r, m = rules(), Member.new(rules())
    domain.assign(m, r, "silver", T0 + timedelta(days=30), T0, UTC_ZONE)
    changes = earn(m, r, 6000, T0 + timedelta(days=1))
    assert tiers_of(changes) == [("gold", "upgrade", None)] and not m.manual


def test_a_warning_comes_warn_days_before_a_review_that_lowers_the_tier_once_per_period() -> None:
    r, m = rules(window={"kind": "calendar_year"}, warn_days=30), Member.new(rules())
    earn(m, r, 6000, datetime(2026, 4, 1, tzinfo=UTC))  # gold until the end of 2027; the review judges 2027
    earn(m, r, 1200, datetime(2027, 2, 1, tzinfo=UTC))  # 2027 so far supports silver
    review = datetime(2028, 1, 1, tzinfo=UTC)
    assert m.due(r) == review
    assert domain.expiring(m, r, UTC_ZONE, review - timedelta(days=31)) is None  # not yet
    warning = domain.expiring(m, r, UTC_ZONE, review - timedelta(days=29))
    assert warning == domain.Expiring("gold", "silver", review, Decimal(3800), review)
    m.warned_for = m.valid_until  # sent: once per period
    assert domain.expiring(m, r, UTC_ZONE, review - timedelta(days=2)) is None
    # A member whose year already supports the tier gets no warning.
    kept = Member.new(r)
    earn(kept, r, 6000, datetime(2026, 4, 1, tzinfo=UTC))
    earn(kept, r, 5000, datetime(2027, 2, 1, tzinfo=UTC))
    assert domain.expiring(kept, r, UTC_ZONE, review - timedelta(days=10)) is None


def test_anniversary_years_count_from_enrolment() -> None:
    r = rules(window={"kind": "anniversary"})
    m = Member.new(r)
    domain.enrol(m, datetime(2025, 7, 15, tzinfo=UTC))
    earn(m, r, 1000, datetime(2026, 8, 1, tzinfo=UTC))  # in the year from 2026-07-15
    assert m.valid_until == datetime(2028, 7, 15, tzinfo=UTC)  # the end of the next anniversary year
    span = windows.review_window(r, UTC_ZONE, datetime(2028, 7, 15, tzinfo=UTC), m.anchor)
    assert (span.start, span.end) == (datetime(2027, 7, 15, tzinfo=UTC), datetime(2028, 7, 15, tzinfo=UTC))


def test_levels_must_start_at_zero_and_rise() -> None:
    with pytest.raises(ValidationError, match="threshold must be 0"):
        rules(levels=[{"tier": "a", "threshold": "10"}])
    with pytest.raises(ValidationError, match="thresholds must rise"):
        rules(levels=[{"tier": "a", "threshold": "0"}, {"tier": "b", "threshold": "0"}])
    with pytest.raises(ValidationError, match="unique"):
        rules(levels=[{"tier": "a", "threshold": "0"}, {"tier": "a", "threshold": "5"}])


def test_the_shipped_programmes_have_the_documented_tiers() -> None:
    catalogue = Catalogue.load(Settings().programmes_dir, TiersProgramme)
    at = datetime(2026, 11, 24, tzinfo=UTC)
    default = catalogue.at("default", at)
    assert default is not None and default.tiers is not None
    assert [(lv.tier, lv.threshold, lv.earn_multiplier) for lv in default.tiers.levels] == [
        ("normal", 0, 1), ("silver", 1000, Decimal("1.25")), ("gold", 5000, Decimal("1.5")), ("diamond", 20000, 2)]
    assert (default.tiers.metric, default.tiers.window.kind, default.tiers.window.months) == (
        "points_earned", "rolling", 12)
    retail = catalogue.at("retail", at)
    assert retail is not None and retail.tiers is not None
    assert (retail.tiers.metric, retail.tiers.window.kind) == ("spend", "calendar_year")
    starbucks = catalogue.at("starbucks", at)
    assert starbucks is not None and starbucks.tiers is not None
    assert [lv.tier for lv in starbucks.tiers.levels] == ["green", "gold"]
