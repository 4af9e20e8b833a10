"""A member's tier, as a state machine: what a contribution, a reversal, a review or a manual assignment changes, and
when a tier is reviewed. Pure: no I/O, no clock. (The `tiers` section it follows is programme.py's; the windows it
measures over are windows.py's.)

A member's metric is the sum of their contributions (an earn credit's points, a purchase's spend and count, less
reversals and refunds, each attributed to the time of what it corrects) inside a window of the programme's time
zone: rolling N months back from a moment, the calendar year, or the year from the member's enrolment
anniversary. A member rises as soon as the metric crosses a threshold; the tier then holds to the end of the next
full window, when the window that ends there is reviewed. The member falls only at such a review (or when a
reversal in the same window undoes the rise), after the level's grace days, in which qualifying again keeps the
tier. Reviews are scheduled, not polled: they happen at their own time (the end of the tier period plus the grace
days), whether the review job or a later event of the member's reaches them first, so the result depends on event
times, not on when the job ran.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Literal
from zoneinfo import ZoneInfo

from services.tiers.programme import Metric, TierRules
from services.tiers.windows import TICK, Span, next_period, period_end, review_window, window

Reason = Literal["upgrade", "downgrade", "manual", "expired_manual"]


@dataclass(frozen=True, slots=True)
class Contribution:
    """What one event adds to a member's metrics, attributed to `occurred_at` (a reversal or refund carries the time
    of what it corrects, so it leaves the window that thing counted in)."""

    occurred_at: datetime
    points: int = 0
    spend: Decimal = Decimal(0)
    purchases: int = 0

    def value(self, metric: Metric) -> Decimal:
        if metric == "points_earned":
            return Decimal(self.points)
        return self.spend if metric == "spend" else Decimal(self.purchases)


def metric(contributions: Iterable[Contribution], span: Span, which: Metric) -> Decimal:
    start, end = span.start, span.end
    if which == "spend":
        return sum((c.spend for c in contributions if start <= c.occurred_at < end), Decimal(0))
    counted = (c.points if which == "points_earned" else c.purchases
               for c in contributions if start <= c.occurred_at < end)
    return Decimal(sum(counted))  # whole numbers: summed as ints, made a Decimal once


# --- a member's tier --------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Change:
    at: datetime
    tier: str
    previous: str
    reason: Reason
    valid_until: datetime | None
    qualifying_value: Decimal
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class Expiring:
    """A warning before a review will lower the tier, unless `needed` more is reached by `on`'s review window."""

    tier: str
    drops_to: str
    on: datetime
    needed: Decimal
    period_end: datetime  # the tier period it is about (warned once per period)


@dataclass(frozen=True, slots=True)
class Before:
    """What an upgrade replaced, so a reversal in the same window can undo it."""

    tier: str
    since: datetime | None
    valid_until: datetime | None


@dataclass(slots=True)
class Member:
    tier: str
    since: datetime | None = None
    valid_until: datetime | None = None  # the end of the tier period (None: never reviewed)
    anchor: datetime | None = None  # the enrolment the anniversary years count from
    manual: bool = False  # set by hand until valid_until (None: until set otherwise)
    before: Before | None = None  # the tier the last upgrade replaced
    upgraded_in: Span | None = None  # the window in which the last upgrade was crossed
    warned_for: datetime | None = None  # the period end a warning was sent for
    announced: int = 0  # changes announced so far: the next one is number announced + 1
    contributions: list[Contribution] = field(default_factory=list)

    @classmethod
    def new(cls, rules: TierRules) -> Member:
        return cls(tier=rules.base.tier)

    def due(self, rules: TierRules) -> datetime | None:
        """When the next scheduled transition happens: a manual tier's end, or the end of the tier period plus the
        current level's grace days."""
        if self.valid_until is None:
            return None
        if self.manual:
            return self.valid_until
        return self.valid_until + timedelta(days=rules.level(self.tier).grace_days)


RECHECK = timedelta(days=1)  # a member inside the warning window is looked at again daily


def reach(rules: TierRules) -> timedelta:
    """How far back from a moment a change can look: a window, and a month to spare."""
    months = rules.window.months if rules.window.kind == "rolling" else 12
    return timedelta(days=31 * (months + 1))


def wake_at(member: Member, rules: TierRules, now: datetime | None = None) -> datetime | None:
    """When the review job must look at a member next: the start of the warning window while a warning may still
    be due (then daily, from `now`, until the review), else the scheduled transition itself."""
    due = member.due(rules)
    if due is None:
        return None
    if member.manual or not rules.warn_days or member.warned_for == member.valid_until:
        return due
    warn = due - timedelta(days=rules.warn_days)
    return warn if now is None or warn > now else min(due, now + RECHECK)


def _set(member: Member, rules: TierRules, at: datetime, tier: str, reason: Reason, value: Decimal,
         valid_until: datetime | None, detail: str | None = None) -> Change:
    change = Change(at, tier, member.tier, reason, valid_until, value, detail)
    member.tier, member.since, member.valid_until = tier, at, valid_until
    member.warned_for = None
    return change


def advance(member: Member, rules: TierRules, zone: ZoneInfo, until: datetime) -> list[Change]:
    """Apply every scheduled transition up to `until`, in time order: reviews and the end of manual tiers."""
    changes: list[Change] = []
    while (due := member.due(rules)) is not None and due <= until:
        if member.manual:
            changes.append(_manual_ends(member, rules, zone, due))
        else:
            changes += _review(member, rules, zone, due)
    return changes


def _manual_ends(member: Member, rules: TierRules, zone: ZoneInfo, at: datetime) -> Change:
    """A manual tier ends: the member holds exactly what the metric supports then; never the manual tier as a
    silent floor."""
    member.manual, member.before, member.upgraded_in = False, None, None
    value = metric(member.contributions, window(rules, zone, at, member.anchor), rules.metric)
    level = rules.supported(value)
    until = None if level is rules.base else period_end(rules, zone, at, member.anchor)
    return _set(member, rules, at, level.tier, "expired_manual", value, until)


def _review(member: Member, rules: TierRules, zone: ZoneInfo, at: datetime) -> list[Change]:
    """The tier period ended (and its grace days passed): keep the tier if the period's window supports it, else
    drop to what it supports, or one step down, by the programme's choice."""
    assert member.valid_until is not None
    ended = member.valid_until
    value = metric(member.contributions, review_window(rules, zone, ended, member.anchor), rules.metric)
    current = rules.index(member.tier)
    supported = rules.index(rules.supported(value).tier)
    member.before, member.upgraded_in = None, None
    if supported >= current:
        member.valid_until = next_period(rules, zone, ended, member.anchor)  # kept for another period
        member.warned_for = None
        return []
    target = rules.levels[supported if rules.downgrade == "to_qualifying" else current - 1]
    until = None if target is rules.base else next_period(rules, zone, ended, member.anchor)
    return [_set(member, rules, at, target.tier, "downgrade", value, until, "review")]


def contribute(member: Member, rules: TierRules, zone: ZoneInfo, added: Contribution, at: datetime) -> list[Change]:
    """A contribution arrived, made by an event at `at` (a reversal's own time; its `occurred_at` is what it
    corrects). Scheduled transitions up to then happen first. A rise takes effect at the event's time, or when the
    current tier began if that is later, so what was announced is never rewritten."""
    when = max(at, member.since) if member.since is not None else at
    changes = advance(member, rules, zone, when)
    member.contributions.append(added)
    value = added.value(rules.metric)
    if value > 0:
        changes += _rise(member, rules, zone, when)
    elif value < 0:
        changes += _undo(member, rules, zone, added, at, when)
    return changes


def _rise(member: Member, rules: TierRules, zone: ZoneInfo, when: datetime) -> list[Change]:
    span = window(rules, zone, when, member.anchor)
    value = metric(member.contributions, span, rules.metric)
    reached = rules.supported(value)
    current = rules.index(member.tier)
    if rules.index(reached.tier) > current:
        before = Before(member.tier, member.since, member.valid_until)
        change = _set(member, rules, when, reached.tier, "upgrade", value,
                      period_end(rules, zone, when, member.anchor))
        member.manual, member.before, member.upgraded_in = False, before, span
        return [change]
    in_grace = member.valid_until is not None and when >= member.valid_until
    if rules.index(reached.tier) == current and in_grace and not member.manual:
        # Qualifying again in the grace days after a tier period: the tier is kept, for a new period from now.
        member.valid_until, member.warned_for = period_end(rules, zone, when, member.anchor), None
    return []


def _undo(member: Member, rules: TierRules, zone: ZoneInfo, taken: Contribution, at: datetime,
          when: datetime) -> list[Change]:
    """A refund or reversal in the window where the current tier was crossed, taking the metric back below it,
    undoes that upgrade: back to the tier it replaced, or to what the metric still supports if that is higher."""
    span, before = member.upgraded_in, member.before
    if span is None or before is None or not span.holds(taken.occurred_at):
        return []
    # A calendar or anniversary year closes: a refund after it no longer undoes a rise in it (its review judges
    # the next year). A rolling window moves with the member: until the tier period's review, it is the same one.
    if rules.window.kind != "rolling" and not span.holds(at):
        return []
    value = metric(member.contributions, span, rules.metric)
    if rules.index(rules.supported(value).tier) >= rules.index(member.tier):
        return []
    target = max(rules.index(before.tier), rules.index(rules.supported(value).tier))
    tier = rules.levels[target].tier
    if tier == before.tier:
        until = before.valid_until
        member.before, member.upgraded_in = None, None
    else:
        until = member.valid_until  # still a rise, to a lower level, in the same window
    return [_set(member, rules, when, tier, "downgrade", value, until, "reversed")]


def assign(member: Member, rules: TierRules, tier: str, until: datetime | None, at: datetime,
           zone: ZoneInfo) -> list[Change]:
    """A tier set by hand from `at` until `until` (None: until set otherwise). Scheduled transitions before it
    happen first; after `until` the metric alone decides."""
    changes = advance(member, rules, zone, at)
    value = metric(member.contributions, window(rules, zone, at, member.anchor), rules.metric)
    member.manual, member.before, member.upgraded_in = True, None, None
    changes.append(_set(member, rules, at, tier, "manual", value, until))
    return changes


def expiring(member: Member, rules: TierRules, zone: ZoneInfo, now: datetime) -> Expiring | None:
    """A warning due now: within `warn_days` of a review that, as things stand, lowers the tier; once per period."""
    due = member.due(rules)
    if member.manual or due is None or member.valid_until is None or member.warned_for == member.valid_until:
        return None
    if now < due - timedelta(days=rules.warn_days) or now >= due:
        return None
    value = metric(member.contributions, review_window(rules, zone, member.valid_until, member.anchor),
                   rules.metric)
    current = rules.index(member.tier)
    supported = rules.index(rules.supported(value).tier)
    if supported >= current:
        return None
    target = rules.levels[supported if rules.downgrade == "to_qualifying" else current - 1]
    needed = rules.levels[current].threshold - value
    return Expiring(member.tier, target.tier, due, needed, member.valid_until)


def enrol(member: Member, at: datetime) -> None:
    """The anniversary years count from the first enrolment known."""
    if member.anchor is None or at < member.anchor:
        member.anchor = at


@dataclass(frozen=True, slots=True)
class Standing:
    """A member's tier as the HTTP side shows it: where they stand, what the next level needs, what keeping the
    tier needs by the next review."""

    tier: str
    since: datetime | None
    valid_until: datetime | None
    metric: Metric
    value: Decimal
    window: Span
    next_tier: str | None
    next_needed: Decimal | None
    keep_needed: Decimal | None
    keep_by: datetime | None
    manual: bool


def standing(member: Member, rules: TierRules, zone: ZoneInfo, now: datetime) -> Standing:
    """`member` as of `now` (after any transition due by then, applied to a copy)."""
    seen = replace(member, contributions=list(member.contributions))
    advance(seen, rules, zone, now)
    span = window(rules, zone, now, seen.anchor)
    value = metric(seen.contributions, span, rules.metric)
    index = rules.index(seen.tier)
    above = rules.levels[index + 1] if index + 1 < len(rules.levels) else None
    keep_needed = keep_by = None
    if seen.valid_until is not None and not seen.manual and index > 0:
        kept = metric(seen.contributions, review_window(rules, zone, seen.valid_until, seen.anchor), rules.metric)
        keep_needed, keep_by = max(Decimal(0), rules.levels[index].threshold - kept), seen.valid_until
    shown = Span(span.start - TICK, now) if rules.window.kind == "rolling" else span
    return Standing(seen.tier, seen.since, seen.valid_until, rules.metric, value, shown,
                    above.tier if above else None, max(Decimal(0), above.threshold - value) if above else None,
                    keep_needed, keep_by, seen.manual)

