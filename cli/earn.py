"""`jifen earn explain EVENT`: the earn rules, without posting anything.

Explain judges one event by the rules alone: what depends on a member's history (a task's cap, a check-in
streak, points caps and the budget) is named, not computed."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path

from pydantic import ValidationError

from cli.times import shown
from services.earn.activity import Award, award_refusal, checkin_awards, task_award
from services.earn.domain import (
    MemberTier,
    credits_for_purchase,
    expires_at,
    purchase_refusal,
    rule_points,
)
from services.earn.programme import Programme
from shared.contracts.checkins import CheckinRecorded
from shared.contracts.purchases import PurchaseCompleted
from shared.contracts.tasks import PointsAwarded, TaskCompleted
from shared.envelope import BadMessage, CloudEvent, parse
from shared.programmes import Catalogue, ProgrammeError
from shared.settings import Settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    earn = sub.add_parser("earn", help="earn tools").add_subparsers(dest="earn_command", required=True)
    explain = earn.add_parser("explain", help="print what a purchase, task, check-in or manual award would earn, rule "
                                              "by rule, without posting it")
    explain.add_argument("event", type=Path, help="a CloudEvent JSON file (structured mode)")
    explain.add_argument("--programmes", type=Path,
                         help="programme folder (default: JIFEN_PROGRAMMES_DIR or programmes/)")
    explain.add_argument("--tier", type=_tier, metavar="NAME[:MULTIPLIER]",
                         help="judge it as for a member of this tier, e.g. gold:1.5 (default: no tier)")


def _tier(value: str) -> MemberTier:
    name, _, multiplier = value.partition(":")
    try:
        tier = MemberTier(name, Decimal(multiplier or "1"))
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{multiplier!r} is not a multiplier; write e.g. gold:1.5") from None
    if not name or not tier.multiplier.is_finite() or tier.multiplier < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: give a tier name and a multiplier of at least 1, e.g. gold:1.5")
    return tier


Explained = PurchaseCompleted | TaskCompleted | CheckinRecorded | PointsAwarded
EXPLAINED: dict[str, type[Explained]] = {t.TYPE: t for t in (PurchaseCompleted, TaskCompleted, CheckinRecorded,
                                                             PointsAwarded)}


def explain(args: argparse.Namespace) -> int:
    try:
        event = parse(args.event.read_bytes(), [("content-type", b"application/cloudevents+json")])
        contract = EXPLAINED.get(event.type)
        if contract is None:
            raise BadMessage("unsupported_type", f"explain knows {', '.join(EXPLAINED)}; not {event.type!r}")
        data = contract.model_validate(event.data)
        catalogue = Catalogue.load(args.programmes or Settings().programmes_dir, Programme)
    except (OSError, BadMessage, ValidationError, ProgrammeError) as exc:
        print(f"✘ {exc}", file=sys.stderr)
        return 1
    programme = catalogue.at(data.program_id, event.time)
    refused = _refusal(programme, catalogue, event, data)
    if programme is None or refused is not None:
        reason, detail = refused or ("unknown_program", data.program_id)
        print(f"✘ earns nothing: the event would go to the DLQ as {reason}: {detail}")
        return 1
    zone = programme.zone
    print(f"{event.event_id} at {shown(event.time, zone)}: programme {programme.program_id} "
          f"version {programme.version} (in effect from {shown(programme.effective_from, zone)})")
    if isinstance(data, PurchaseCompleted):
        return _purchase(programme, event, data, args.tier)
    awards, refusal = _activity(programme, event, data)
    if refusal is not None:
        print(f"  ✘ earns nothing: the event would go to the DLQ as {refusal[0]}: {refusal[1]}")
        return 1
    for award in awards:
        print(f"  ✔ {award.rule_id:<20} {award.points:>8} points   {award.why}")
    expiry = expires_at(programme, event.time)
    print(f"  = {sum(a.points for a in awards)} points in {len(awards)} credit(s), available at once, expiring "
          f"{shown(expiry, programme.zone, 'never')}")
    _limits(programme, [a.rule_id for a in awards])
    return 0


def _refusal(programme: Programme | None, catalogue: Catalogue[Programme], event: CloudEvent,
             data: Explained) -> tuple[str, str] | None:
    """The checks earn makes before any rule, with its reasons: the event's time, the version in force, and for a
    purchase whether the programme rewards purchases in that currency."""
    tolerance = timedelta(seconds=Settings().future_tolerance_s)
    if event.time > datetime.now(UTC) + tolerance:
        return "future_event", (f"time {shown(event.time)} is more than {tolerance.total_seconds():.0f}s ahead "
                                "of this clock")
    if programme is None:
        return "unknown_program", catalogue.why_not(data.program_id, event.time)
    if isinstance(data, PurchaseCompleted):
        return purchase_refusal(programme, data)
    return None


def _purchase(programme: Programme, event: CloudEvent, purchase: PurchaseCompleted, tier: MemberTier | None) -> int:
    print(f"  order {purchase.order_id}, {purchase.total} {purchase.currency}, {purchase.channel}, "
          f"{len(purchase.lines)} line(s)" + (f", tier {tier.tier} ×{tier.multiplier}" if tier else ""))
    for r in rule_points(programme, event.time, purchase, tier):
        mark = "✔" if r.points else "·"
        print(f"  {mark} {r.rule_id:<20} {r.kind:<10} {r.points:>8} points   {r.note}")
    credits = credits_for_purchase(programme, event.event_id, event.time, purchase, tier)
    total = sum(c.amount for c in credits)
    first = credits[0] if credits else None
    print(f"  = {total} points in {len(credits)} credit(s)"
          + (f", available {shown(first.available_at, programme.zone, 'at once')}, expiring "
             f"{shown(first.expires_at, programme.zone, 'never')}" if first else ""))
    _limits(programme, [c.cause.rule_id or "" for c in credits])
    return 0


def _activity(programme: Programme, event: CloudEvent,
              data: TaskCompleted | CheckinRecorded | PointsAwarded) -> tuple[list[Award], tuple[str, str] | None]:
    """What a task, check-in or manual award earns by the rules alone, or why it would be refused."""
    activity = programme.activity
    if isinstance(data, TaskCompleted):
        task = next((t for t in activity.tasks if t.task_type == data.task_type), None)
        if task is None:
            return [], ("no_rule", f"no rule for tasks of type {data.task_type!r}")
        if task.cap is not None:
            print(f"  (at most {task.cap.count} per member per {task.cap.per}: earlier tasks are not known here)")
        return [task_award(task, used=0)], None
    if isinstance(data, CheckinRecorded):
        if activity.checkin is None:
            return [], ("no_rule", "the programme does not reward check-ins")
        for streak in activity.checkin.streaks:
            again = f", and every {streak.days} days after" if streak.repeat else ""
            print(f"  (+{streak.bonus} on day {streak.days} in a row{again}: earlier check-ins are not known here)")
        return checkin_awards(activity.checkin, streak=1), None
    if activity.manual is None:
        return [], ("no_rule", "the programme takes no manual awards")
    refused = award_refusal(activity.manual, event.source, data.points)
    if refused is not None:
        return [], refused
    return [Award(activity.manual.rule_id, data.points, data.reason)], None


def _limits(programme: Programme, rule_ids: list[str]) -> None:
    for cap in programme.caps:
        if cap.rule_id in rule_ids:
            print(f"  (capped at {cap.points} points per member per {cap.per} from {cap.rule_id}: usage is not known "
                  "here)")
    if programme.budget is not None:
        print(f"  (the programme's budget is {programme.budget.points} points per {programme.budget.per}: usage is "
              "not known here)")
