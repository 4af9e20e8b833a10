"""The windows a member's metric is measured over, in the programme's time zone: rolling N months back from a moment,
the calendar year, or the year from the member's enrolment anniversary; and the tier periods they give. Pure: no
I/O, no clock."""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from services.tiers.programme import TierRules

TICK = timedelta(microseconds=1)  # rolling windows hold their end and not their start


@dataclass(frozen=True, slots=True)
class Span:
    """A window: from `start` (included) to `end` (excluded)."""

    start: datetime
    end: datetime

    def holds(self, at: datetime) -> bool:
        return self.start <= at < self.end


def add_months(at: datetime, months: int, zone: ZoneInfo) -> datetime:
    """`at` moved by whole months in local time, the day clamped to the month's last (31 Jan + 1 = 28/29 Feb)."""
    local = at.astimezone(zone)
    month = local.month - 1 + months
    year, month = local.year + month // 12, month % 12 + 1
    day = min(local.day, calendar.monthrange(year, month)[1])
    return local.replace(year=year, month=month, day=day).astimezone(UTC)


def _new_year(year: int, zone: ZoneInfo) -> datetime:
    return datetime.combine(datetime(year, 1, 1).date(), time.min, tzinfo=zone).astimezone(UTC)


def _anniversary(anchor: datetime, years: int, zone: ZoneInfo) -> datetime:
    return add_months(anchor, 12 * years, zone)


def _anniversaries_around(anchor: datetime, at: datetime, zone: ZoneInfo) -> tuple[int, datetime, datetime]:
    """k, A_k, A_{k+1}: the anniversary year of `anchor` that holds `at` (k may be negative before enrolment)."""
    years = at.astimezone(zone).year - anchor.astimezone(zone).year
    k = years - 1
    while _anniversary(anchor, k + 1, zone) <= at:
        k += 1
    while _anniversary(anchor, k, zone) > at:
        k -= 1
    return k, _anniversary(anchor, k, zone), _anniversary(anchor, k + 1, zone)


def window(rules: TierRules, zone: ZoneInfo, at: datetime, anchor: datetime | None) -> Span:
    """The window a member is measured over at `at`: rolling back from it (it included), or the year holding it."""
    kind = rules.window.kind
    if kind == "rolling":
        # The last N months up to `at` included: what was earned exactly N months before has left it.
        return Span(add_months(at, -rules.window.months, zone) + TICK, at + TICK)
    if kind == "calendar_year":
        year = at.astimezone(zone).year
        return Span(_new_year(year, zone), _new_year(year + 1, zone))
    _, start, end = _anniversaries_around(anchor or at, at, zone)
    return Span(start, end)


def period_end(rules: TierRules, zone: ZoneInfo, at: datetime, anchor: datetime | None) -> datetime:
    """When a tier reached at `at` is next reviewed: the end of the next full window (the calendar year after this
    one, the anniversary year after this one, or N months on for a rolling window)."""
    kind = rules.window.kind
    if kind == "rolling":
        return add_months(at, rules.window.months, zone)
    if kind == "calendar_year":
        return _new_year(at.astimezone(zone).year + 2, zone)
    base = anchor or at
    k, _, _ = _anniversaries_around(base, at, zone)
    return _anniversary(base, k + 2, zone)


def next_period(rules: TierRules, zone: ZoneInfo, valid_until: datetime, anchor: datetime | None) -> datetime:
    """The end of the tier period after the one ending at `valid_until`."""
    if rules.window.kind == "rolling":
        return add_months(valid_until, rules.window.months, zone)
    if rules.window.kind == "calendar_year":
        return _new_year(valid_until.astimezone(zone).year + 1, zone)
    base = anchor or valid_until
    k, _, _ = _anniversaries_around(base, valid_until, zone)
    return _anniversary(base, k + 1, zone)


def review_window(rules: TierRules, zone: ZoneInfo, valid_until: datetime, anchor: datetime | None) -> Span:
    """The full window that ends at a tier period's end: what a review judges."""
    if rules.window.kind == "rolling":
        return Span(add_months(valid_until, -rules.window.months, zone) + TICK, valid_until + TICK)
    if rules.window.kind == "calendar_year":
        return Span(_new_year(valid_until.astimezone(zone).year - 1, zone), valid_until)
    base = anchor or valid_until
    k, start, _ = _anniversaries_around(base, valid_until - timedelta(microseconds=1), zone)
    return Span(start, _anniversary(base, k + 1, zone))
