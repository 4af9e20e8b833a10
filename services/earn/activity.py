"""Earning from activity: daily check-ins with streak bonuses, and tasks or behaviours from a catalogue with caps
per period. Pure: no I/O, no clock; what a member did before comes in as `Usage` and `streak`."""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, model_validator

Period = Literal["day", "week", "month", "year", "ever"]


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Streak(Rule):
    """`bonus` points on the `days`-th consecutive day of checking in (and every `days` days after, if `repeat`)."""

    days: int = Field(ge=2, le=366)
    bonus: int = Field(gt=0)
    repeat: bool = False


class Checkin(Rule):
    rule_id: str = "checkin"
    points: int = Field(gt=0)
    streaks: list[Streak] = Field(default_factory=list)


class Cap(Rule):
    """At most `count` credits per member per `per` period (`ever`: once in a lifetime when count is 1)."""

    per: Period
    count: int = Field(gt=0)


class Task(Rule):
    """Points for a completed task or behaviour of one `task_type` (kpi, training, survey, share, profile,
    review, …), with an optional cap."""

    rule_id: str
    task_type: str
    points: int = Field(gt=0)
    cap: Cap | None = None


class ManualAwards(Rule):
    """Points awarded by hand (goodwill from customer service, a manager's bonus): paid only when the event's
    CloudEvents `source` is one of `sources`, and at most `max_points` per award."""

    rule_id: str = "manual"
    sources: frozenset[str] = Field(min_length=1)
    max_points: int = Field(gt=0)


def award_refusal(rule: ManualAwards, source: str, points: int) -> tuple[str, str] | None:
    """Why a manual award may not be paid (a DLQ reason and detail), or None when it may."""
    if source not in rule.sources:
        return "untrusted_source", (f"source {source!r} may not award points here; the programme trusts "
                                    f"{', '.join(sorted(rule.sources))}")
    if points > rule.max_points:
        return "award_too_large", f"{points} points is more than the {rule.max_points} one award may give"
    return None


class Activity(Rule):
    checkin: Checkin | None = None
    tasks: list[Task] = Field(default_factory=list)
    birthday: Birthday | None = None
    manual: ManualAwards | None = None  # None: manual awards are refused

    @model_validator(mode="after")
    def _one_rule_per_task_type(self) -> Activity:
        types = [t.task_type for t in self.tasks]
        repeated = sorted({t for t in types if types.count(t) > 1})
        if repeated:
            raise ValueError(f"one rule per task type: {', '.join(repeated)} repeated")
        return self


def period_of(per: Period, at: datetime, zone: ZoneInfo) -> str:
    """The period (of a cap or budget) an event falls in, in the programme's time zone; weeks start on Monday."""
    local = at.astimezone(zone).date()
    if per == "day":
        return local.isoformat()
    if per == "week":
        return (local - timedelta(days=local.weekday())).isoformat()
    if per == "month":
        return f"{local.year}-{local.month:02d}"
    if per == "year":
        return str(local.year)
    return "ever"


@dataclass(frozen=True)
class Award:
    """What an activity earns: a rule id, the points, and why (or why not: `capped`)."""

    rule_id: str
    points: int
    why: str
    capped: bool = False


def checkin_awards(rule: Checkin, streak: int) -> list[Award]:
    """The check-in's points, plus each streak bonus due on this day of a `streak`-day run (1 = today only)."""
    awards = [Award(rule.rule_id, rule.points, "daily check-in")]
    for s in rule.streaks:
        if streak == s.days or (s.repeat and streak > 0 and streak % s.days == 0):
            awards.append(Award(f"{rule.rule_id}-streak-{s.days}", s.bonus, f"{streak} days in a row"))
    return awards


def streak_length(day: date, earlier_days: set[date]) -> int:
    """How many consecutive days end with `day`, given the member's earlier check-in days."""
    length, current = 1, day - timedelta(days=1)
    while current in earlier_days:
        length += 1
        current -= timedelta(days=1)
    return length


def task_award(task: Task, used: int) -> Award:
    """The task's points, or a capped award of none once `used` credits fill the cap's period."""
    if task.cap is not None and used >= task.cap.count:
        return Award(task.rule_id, 0, f"cap reached: {task.cap.count} per {task.cap.per}", capped=True)
    return Award(task.rule_id, task.points, f"task {task.task_type}")


class Birthday(Rule):
    """`points` once a year on the member's birthday (in the programme's time zone). A birthday set less than
    `min_days_since_set` days before does not pay that year, so changing it to today earns nothing."""

    rule_id: str = "birthday"
    points: int = Field(gt=0)
    min_days_since_set: int = Field(default=30, ge=0, le=366)


def birthday_today(birthday: str, today: date) -> bool:
    """Whether a birthday ("MM-DD") falls on `today`; 29 February is kept on 28 February in other years."""
    month, day = (int(part) for part in birthday.split("-"))
    if (month, day) == (2, 29) and not calendar.isleap(today.year):
        return (today.month, today.day) == (2, 28)
    return (today.month, today.day) == (month, day)


def birthday_days(today: datetime) -> list[str]:
    """The MM-DD birthdays due on `today`: 29 February birthdays are kept on 28 February in years without one."""
    day = today.strftime("%m-%d")
    return [day] + (["02-29"] if day == "02-28" and not calendar.isleap(today.year) else [])


def birthday_pays(rule: Birthday, birthday: str, set_at: datetime, now: datetime, zone: ZoneInfo) -> bool:
    today = now.astimezone(zone).date()
    return birthday_today(birthday, today) and now - set_at >= timedelta(days=rule.min_days_since_set)


Activity.model_rebuild()


class PointsCap(Rule):
    """At most `points` per member per period from one rule; what goes over is cut, and the credit says so."""

    rule_id: str
    per: Period
    points: int = Field(gt=0)


class Budget(Rule):
    """At most `points` per period for the whole programme, all members and rules together."""

    per: Period
    points: int = Field(gt=0)


def granted(wanted: int, used: int, limit: int) -> int:
    """What a limit still lets through of `wanted`, given what was `used` in the period."""
    return max(0, min(wanted, limit - used))
