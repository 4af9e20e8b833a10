"""`jifen earn explain EVENT`: the earn rules, without posting anything.

Explain judges one event by the rules alone: what depends on a member's history (a task's cap, a check-in
streak, points caps and the budget) is named, not computed. A refund is judged against the purchase it refunds
(and the refunds of it earn took before), given as files, since explain reads no database.

Time is earn's: an event is judged by the version in force at its own time, and one dated ahead of the clock is
refused as `future_event`, unless `--at` moves the clock or `--preview` takes the future event as a preview."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation, localcontext
from fractions import Fraction
from pathlib import Path
from typing import TypeVar, cast

import orjson
from pydantic import ValidationError

from cli.times import shown
from services.earn.activity import Award, award_refusal, checkin_awards, task_award
from services.earn.domain import (
    MemberTier,
    credits_for_purchase,
    credits_from,
    expires_at,
    fired_rules,
    lines_of,
    purchase_refusal,
    rule_points,
)
from services.earn.programme import Programme
from services.earn.refunds import Earned, Order, RefundRefused, points_to_take_back, refunded_shares
from shared.contracts.checkins import CheckinRecorded
from shared.contracts.purchases import PurchaseCompleted, PurchaseRefunded
from shared.contracts.tasks import PointsAwarded, TaskCompleted
from shared.envelope import BadMessage, CloudEvent, parse, parse_time
from shared.programmes import Catalogue, ProgrammeError
from shared.refusal import Refusal
from shared.settings import Settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    earn = sub.add_parser("earn", help="earn tools").add_subparsers(dest="earn_command", required=True)
    explain = earn.add_parser("explain", help="print what a purchase, task, check-in or manual award would earn, or "
                                              "what a refund would take back, rule by rule, without posting it")
    explain.add_argument("event", type=Path, help="a CloudEvent JSON file (structured mode)")
    explain.add_argument("--programmes", type=Path,
                         help="programme folder (default: JIFEN_PROGRAMMES_DIR or programmes/)")
    explain.add_argument("--tier", type=_tier, metavar="NAME[:MULTIPLIER]",
                         help="judge a purchase (or a refund's purchase) as for a member of this tier, e.g. gold:1.5 "
                              "(default: no tier)")
    when = explain.add_mutually_exclusive_group()
    when.add_argument("--at", type=_time, metavar="TIME",
                      help="judge it as if the time now were TIME (ISO 8601 with an offset, e.g. "
                           "2026-11-07T12:00:00+08:00): an event dated up to TIME is taken")
    when.add_argument("--preview", action="store_true",
                      help="take an event dated in the future and judge it under the version that will be in force "
                           "at its time (earn itself refuses it as future_event until then)")
    explain.add_argument("--order", type=Path, metavar="PURCHASE.json",
                         help="for a refund: the purchase event it refunds")
    explain.add_argument("--earlier", type=Path, action="append", default=[], metavar="REFUND.json",
                         help="for a refund: a refund of the same order earn took before it (repeat, in the order "
                              "earn took them)")


def _tier(value: str) -> MemberTier:
    name, _, multiplier = value.partition(":")
    try:
        tier = MemberTier(name, Decimal(multiplier or "1"))
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{multiplier!r} is not a multiplier; write e.g. gold:1.5") from None
    if not name or not tier.multiplier.is_finite() or tier.multiplier < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: give a tier name and a multiplier of at least 1, e.g. gold:1.5")
    return tier


def _time(value: str) -> datetime:
    try:
        return parse_time(value)
    except BadMessage as exc:
        raise argparse.ArgumentTypeError(f"{exc.detail}; write e.g. 2026-11-07T12:00:00+08:00") from None


Explained = PurchaseCompleted | TaskCompleted | CheckinRecorded | PointsAwarded | PurchaseRefunded
EXPLAINED: dict[str, type[Explained]] = {t.TYPE: t for t in (PurchaseCompleted, TaskCompleted, CheckinRecorded,
                                                             PointsAwarded, PurchaseRefunded)}
E = TypeVar("E", bound=Explained)


class Refused(Refusal):
    """What earn would answer with a DLQ record: the reason code and its detail."""


@dataclass(frozen=True)
class Clock:
    """The time earn would judge by: this clock, or `--at`; with `--preview`, none (a future event is taken)."""

    at: datetime | None
    preview: bool

    def now(self) -> datetime:
        return self.at or datetime.now(UTC)

    def check(self, event: CloudEvent) -> None:
        """Earn's consumer refuses an event dated further ahead of its clock than the tolerance."""
        tolerance = timedelta(seconds=Settings().future_tolerance_s)
        if self.preview or event.time <= self.now() + tolerance:
            return
        clock = "this clock" if self.at is None else f"--at {shown(self.at)}"
        raise Refused("future_event", f"time {shown(event.time)} is more than {tolerance.total_seconds():.0f}s ahead "
                                      f"of {clock}; --preview judges it under the version that will be in force "
                                      "then, --at TIME as if the time were TIME")


@dataclass(frozen=True)
class Judged:
    """The version an event is judged by: in force at its time, with the member's experiment arms laid over it."""

    programme: Programme
    arms: dict[str, str]


def explain(args: argparse.Namespace) -> int:
    clock = Clock(args.at, args.preview)
    try:
        event, data = _read(args.event, EXPLAINED)
        catalogue = Catalogue.load(args.programmes or Settings().programmes_dir, Programme)
    except (OSError, BadMessage, ValidationError, ProgrammeError) as exc:
        print(f"✘ {exc}", file=sys.stderr)
        return 1
    if isinstance(data, PurchaseRefunded):
        return _refund(args, catalogue, clock, event, data)
    if args.order is not None or args.earlier:
        print(f"✘ --order and --earlier are for a refund; {args.event} is a {event.type}", file=sys.stderr)
        return 2
    try:
        judged = _judge(catalogue, clock, event, data)
    except Refused as refused:
        print(f"✘ earns nothing: the event would go to the DLQ as {refused.reason}: {refused.detail}")
        return 1
    programme = judged.programme
    print(f"{event.event_id} at {shown(event.time, programme.zone)}: programme {programme.program_id} "
          f"version {programme.version} (in effect from {shown(programme.effective_from, programme.zone)})")
    _when(catalogue, clock, event, programme)
    _arms(judged)
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


def _read(path: Path, contracts: dict[str, type[E]]) -> tuple[CloudEvent, E]:
    event = parse(path.read_bytes(), [("content-type", b"application/cloudevents+json")])
    contract = contracts.get(event.type)
    if contract is None:
        raise BadMessage("unsupported_type", f"{path}: explain takes {', '.join(contracts)} here; not {event.type!r}")
    return event, cast(E, contract.model_validate(event.data))  # mypy takes Self as E's bound, not E


def _judge(catalogue: Catalogue[Programme], clock: Clock, event: CloudEvent,
           data: PurchaseCompleted | TaskCompleted | CheckinRecorded | PointsAwarded) -> Judged:
    """The checks earn makes before any rule, with its reasons (the event's time, the version in force, and for a
    purchase whether the programme rewards purchases in that currency), and the version it judges by."""
    clock.check(event)
    if catalogue.at(data.program_id, event.time) is None:
        raise Refused("unknown_program", catalogue.why_not(data.program_id, event.time))
    programme, arms = catalogue.for_member(data.program_id, data.member_id, event.time)
    if isinstance(data, PurchaseCompleted):
        refused = purchase_refusal(programme, data)
        if refused is not None:
            raise Refused(*refused)
    return Judged(programme, arms)


def _when(catalogue: Catalogue[Programme], clock: Clock, event: CloudEvent, programme: Programme,
          indent: str = "  ") -> None:
    """Say when the event is judged from, if not now: as at `--at`, or as a preview of the version in force then."""
    zone, now = programme.zone, datetime.now(UTC)
    if clock.at is not None:
        print(f"{indent}as at {shown(clock.at, zone)}: judged as if the time now were that")
    elif clock.preview and event.time > now:
        current = catalogue.at(programme.program_id, now)
        then = (f"version {programme.version}, the version in force now too"
                if current is not None and current.version == programme.version
                else f"version {programme.version}, in force from {shown(programme.effective_from, zone)}")
        print(f"{indent}preview: the event is dated {_ahead(event.time - now)} ahead of this clock; judged under "
              f"{then}, as the folder stands; earn refuses it as future_event until then")


def _arms(judged: Judged, indent: str = "  ") -> None:
    """The member's arm in each experiment running at the event's time, and what the arm changes."""
    experiments = {e.experiment_id: e for e in judged.programme.experiments}
    for experiment_id, arm in sorted(judged.arms.items()):
        found = experiments.get(experiment_id)
        overrides = found.arm(arm).overrides if found is not None else {}
        changes = f"changes {orjson.dumps(overrides).decode()}" if overrides else "no changes"
        print(f"{indent}experiment {experiment_id}: arm {arm} ({changes})")


def _ahead(delta: timedelta) -> str:
    """How far ahead, to the nearest day, hour or minute."""
    if delta >= timedelta(days=2):
        return f"{round(delta / timedelta(days=1))} days"
    if delta >= timedelta(hours=2):
        return f"{round(delta / timedelta(hours=1))} hours"
    return f"{round(delta / timedelta(minutes=1))} minutes"


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


# Refunds ------------------------------------------------------------------------------------------------------------

PURCHASE = {PurchaseCompleted.TYPE: PurchaseCompleted}
REFUND = {PurchaseRefunded.TYPE: PurchaseRefunded}


@dataclass(frozen=True)
class Purchased:
    """The order as earn would have recorded it: the purchase, the version that judged it and what each rule gave."""

    event: CloudEvent
    purchase: PurchaseCompleted
    judged: Judged
    order: Order


def _refund(args: argparse.Namespace, catalogue: Catalogue[Programme], clock: Clock, event: CloudEvent,
            refund: PurchaseRefunded) -> int:
    if args.order is None:
        print(f"✘ a refund takes back what its order earned: give the purchase of order {refund.order_id!r} with "
              "--order PURCHASE.json (and the refunds of it earn took before with --earlier REFUND.json)",
              file=sys.stderr)
        return 2
    try:
        order_event, purchase = _read(args.order, PURCHASE)
        earlier = [_read(path, REFUND) for path in args.earlier]
    except (OSError, BadMessage, ValidationError) as exc:
        print(f"✘ {exc}", file=sys.stderr)
        return 1
    try:
        clock.check(event)
        programme = catalogue.at(refund.program_id, event.time)
        if programme is None:
            raise Refused("unknown_program", catalogue.why_not(refund.program_id, event.time))
        bought = _order(catalogue, clock, order_event, purchase, refund, args.tier)
        taken: list[PurchaseRefunded] = []
        for path, (_, before) in zip(args.earlier, earlier, strict=True):
            try:
                _take_back(bought.order, taken, before)
            except Refused as refused:
                raise Refused(refused.reason, f"--earlier {path} would have been refused itself ({refused.detail}), "
                                              "so earn never took it") from None
            taken.append(before)
        back = _take_back(bought.order, taken, refund)
    except Refused as refused:
        print(f"✘ takes back nothing: the refund would go to the DLQ as {refused.reason}: {refused.detail}")
        return 1
    _show_refund(event, refund, bought, taken, back, programme, catalogue, clock, args.tier)
    return 0


def _order(catalogue: Catalogue[Programme], clock: Clock, order_event: CloudEvent, purchase: PurchaseCompleted,
           refund: PurchaseRefunded, tier: MemberTier | None) -> Purchased:
    """The order the refund refunds, with the credits earn would have made for it under the version (and arms) in
    force at the purchase's time; `unknown_order` when it is another order or its purchase would have earned
    nothing (earn keeps no order it refused)."""
    if (purchase.program_id, purchase.order_id) != (refund.program_id, refund.order_id):
        raise Refused("unknown_order", f"no order {refund.order_id!r} in programme {refund.program_id!r} earned points "
                                       f"here (--order is order {purchase.order_id!r} of programme "
                                       f"{purchase.program_id!r})")
    try:
        judged = _judge(catalogue, clock, order_event, purchase)
    except Refused as refused:
        raise Refused("unknown_order", f"order {purchase.order_id!r} earned nothing here: its purchase would go to "
                                       f"the DLQ as {refused.reason}: {refused.detail}") from None
    fired = fired_rules(judged.programme, order_event.time, purchase, tier)
    credits = credits_from(judged.programme, order_event.event_id, order_event.time, purchase, fired, tier)
    earned = [Earned(r.rule_id, c.idempotency_key, c.amount, r.lines) for r, c in zip(fired, credits, strict=True)]
    order = Order(purchase.order_id, purchase.member_id, purchase.total,
                  [(line.sku, line.total) for line in lines_of(purchase)], earned)
    return Purchased(order_event, purchase, judged, order)


def _take_back(order: Order, earlier: list[PurchaseRefunded], refund: PurchaseRefunded) -> dict[str, int]:
    """Earn's checks of a refund against its order, in earn's order, and the points per rule it takes back."""
    if refund.order_id != order.order_id:
        raise Refused("unknown_order", f"refund {refund.refund_id!r} is of order {refund.order_id!r}, not "
                                       f"{order.order_id!r}")
    if refund.member_id != order.member_id:
        raise Refused("member_mismatch", f"order {order.order_id!r} belongs to another member")
    try:
        return points_to_take_back(order, earlier, refund)
    except RefundRefused as refused:
        raise Refused(refused.reason, refused.detail) from None


def _show_refund(event: CloudEvent, refund: PurchaseRefunded, bought: Purchased, earlier: list[PurchaseRefunded],
                 back: dict[str, int], programme: Programme, catalogue: Catalogue[Programme], clock: Clock,
                 tier: MemberTier | None) -> None:
    zone, order, purchase = programme.zone, bought.order, bought.purchase
    bought_by = bought.judged.programme
    print(f"{event.event_id} at {shown(event.time, zone)}: refund {refund.refund_id} of order {order.order_id}, "
          f"programme {programme.program_id}")
    _when(catalogue, clock, event, programme)
    print(f"  order {order.order_id}: event {bought.event.event_id} at {shown(bought.event.time, zone)}, "
          f"{purchase.total} {purchase.currency}, {len(order.lines)} line(s), judged by version {bought_by.version}"
          + (f", tier {tier.tier} ×{tier.multiplier}" if tier else ""))
    if clock.preview:
        _when(catalogue, clock, bought.event, bought_by, indent="    ")
    _arms(bought.judged, indent="    ")
    if earlier:
        print(f"  refunded before: {sum(r.total for r in earlier)} {purchase.currency} in {len(earlier)} refund(s) "
              f"({', '.join(r.refund_id for r in earlier)})")
    what = (", ".join(f"{line.sku} {line.total}" for line in refund.lines) if refund.lines
            else "a total, spread over what is not refunded yet, in proportion")
    print(f"  this refund: {refund.total} {refund.currency}: {what}")
    before = refunded_shares(order, earlier)
    after = refunded_shares(order, [*earlier, refund])
    for earned in order.earned:
        points = back.get(earned.rule_id, 0)
        mark = "↩" if points else "·"
        per_line = ", ".join(f"{order.lines[i][0]}: {_number(Fraction(p) * (after[i] - before[i]))} of its {_number(p)}"
                             for i, p in sorted(earned.line_points.items()) if p and after[i] != before[i])
        print(f"  {mark} {earned.rule_id:<20} {points:>8} points of {earned.points:<8} "
              + (f"reverses {earned.credit_key}" if points else "nothing to take back")
              + (f"   lines: {per_line}" if per_line else ""))
    print(f"  = {sum(back.values())} points taken back in {len(back)} reversal(s); in all "
          f"{_number(sum((r.total for r in [*earlier, refund]), Decimal(0)))} of {_number(order.total)} "
          f"{purchase.currency} refunded")
    print("  (the ledger cancels points still pending and claws back matured ones; spent points become debt)")
    for cap in bought_by.caps:
        if cap.rule_id in back:
            print(f"  (the purchase's {cap.rule_id} credit may have been cut by a cap of {cap.points} per member per "
                  f"{cap.per}: usage is not known here; earn takes back no more than the credit was)")
    if bought_by.budget is not None and back:
        print(f"  (the purchase's credits may have been cut by the budget of {bought_by.budget.points} points per "
              f"{bought_by.budget.per}: usage is not known here)")


def _number(value: Fraction | Decimal) -> str:
    """An exact number as a decimal when it is one, else to two places, marked ≈."""
    exact = Fraction(value)
    with localcontext() as ctx:
        ctx.prec = 40
        shown_ = Decimal(exact.numerator) / Decimal(exact.denominator)
    if Fraction(shown_) == exact:
        text = f"{shown_.normalize():f}"
        return text if "." not in text else text.rstrip("0").rstrip(".")
    return f"≈{shown_.quantize(Decimal('0.01'))}"

