"""A forecast for a programme with no history: the draft replayed over another programme's history re-addressed to
it (`--history-of OTHER`: the other's members and events, only `program_id` rewritten), or over a generated feed
(`--synthetic`: members who enrol, buy, get refunds, check in and refer as stated); then the seed's cost table,
*net points issued × expected redemption rate × point value ÷ revenue*, judged against 0.3%–0.8% of revenue.

The generated feed is the simulator's (shared/simulation.py's purchase events and catalogue), with what a forecast
must control stated here: every member enrols in the first hour; each buys as a Poisson process of `frequency`
purchases a month (30 days), each basket's total drawn from a log-normal of mean `spend` and coefficient of variation
`SPEND_CV`; `REFUND_SHARE` of purchases are refunded in full one to seven days later; `CHECKIN_MEMBERS` of members
check in, each on a day with chance `CHECKIN_DAYS`; `REFERRED` of members were invited by another member, whose
invitation they accept as they enrol. The same seed gives the same feed.
"""

from __future__ import annotations

import argparse
import math
import random
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import overload
from zoneinfo import ZoneInfo

from cli.report import _int, _money, _share, _table
from cli.whatif.result import COST_BAND, Comparison, Side, verdict
from shared.contracts.checkins import CheckinRecorded
from shared.contracts.members import MemberEnrolled
from shared.contracts.purchases import PurchaseRefunded
from shared.contracts.referrals import ReferralAccepted
from shared.envelope import CloudEvent
from shared.simulation import CATALOGUE, purchase_event

SPEND_CV = 0.6          # a basket's spread: the standard deviation of its total is 60% of the mean
REFUND_SHARE = 0.03     # purchases refunded in full
CHECKIN_MEMBERS = 0.3   # members who check in at all ...
CHECKIN_DAYS = 0.5      # ... and the chance each of them checks in on a day
REFERRED = 0.05         # members who enrol on another member's invitation
MONTH_DAYS = 30         # `frequency` is purchases per 30 days
# A synthetic feed has no redemptions to observe: the default rate is the one whose issue:redeem ratio (2.5:1) is
# the edge of what insight's indicator calls healthy (the seed: above 3:1 the rules need adjusting).
DEFAULT_REDEMPTION_RATE = Decimal("0.4")
CENT = Decimal("0.01")


# --- a generated feed ---------------------------------------------------------------------------------------------


def _total(rng: random.Random, spend: Decimal) -> Decimal:
    """A basket's total: log-normal with mean `spend` and coefficient of variation SPEND_CV, at least 1.00."""
    sigma = math.sqrt(math.log(1 + SPEND_CV ** 2))
    mu = math.log(float(spend)) - sigma ** 2 / 2
    return max(Decimal(str(rng.lognormvariate(mu, sigma))).quantize(CENT, ROUND_HALF_UP), Decimal("1.00"))


def _lines(rng: random.Random, total: Decimal) -> list[dict[str, str]]:
    """The basket as one to three catalogue lines whose totals add up to `total` exactly."""
    items = rng.sample(CATALOGUE, rng.randint(1, 3))
    weights = [rng.random() + 0.2 for _ in items]
    shares = [(total * Decimal(w) / Decimal(sum(weights))).quantize(CENT, ROUND_HALF_UP) for w in weights[:-1]]
    shares = [s if s > 0 else CENT for s in shares]
    shares.append(total - sum(shares, Decimal(0)))
    if shares[-1] <= 0:  # a tiny basket: one line takes it all
        items, shares = items[:1], [total]
    return [{"sku": sku, "category": category, "quantity": "1", "unit_price": str(share), "total": str(share)}
            for (sku, category, _), share in zip(items, shares, strict=True)]


def _event(event_id: str, source: str, type_: str, time: datetime, data: dict[str, object]) -> CloudEvent:
    return CloudEvent(id=event_id, source=source, type=type_, time=time, data=data)


def synthetic_events(program_id: str, members: int, spend: Decimal, frequency: float, days: int, seed: int,
                     start: datetime, *, timezone: str = "UTC", currency: str = "CNY") -> list[CloudEvent]:
    """A generated feed of `days` from `start` for `members` members who each buy `frequency` times a month at an
    average `spend` (the model is the module's docstring), as CloudEvents in time order, their data as the topics
    carry it (money as decimal strings). `timezone` is the programme's, for the check-ins' local days."""
    if members < 1 or days < 1 or frequency <= 0 or spend <= 0:
        raise ValueError("members, days, frequency and spend must be above 0")
    rng = random.Random(seed)
    zone = ZoneInfo(timezone)
    end = start + timedelta(days=days)
    source = f"sim://synthetic/{program_id}"
    events: list[CloudEvent] = []
    serial = 0

    def add(type_: str, time: datetime, data: dict[str, object]) -> None:
        nonlocal serial
        serial += 1
        events.append(_event(f"syn-{seed}-{serial}", source, type_, time, data))

    ids = [f"syn-{n:06d}" for n in range(members)]
    rate_per_second = frequency / (MONTH_DAYS * 86_400)
    for n, member in enumerate(ids):
        enrolled = start + timedelta(seconds=rng.uniform(0, 3600))
        add(MemberEnrolled.TYPE, enrolled, {
            "program_id": program_id, "member_id": member, "enrolled_at": enrolled.isoformat(),
            "fingerprints": {"device": f"device-{seed}-{member}", "payment": f"card-{seed}-{member}"}})
        if members > 1 and rng.random() < REFERRED:
            referrer = ids[(n + rng.randrange(1, members)) % members]
            add(ReferralAccepted.TYPE, enrolled + timedelta(seconds=1), {
                "program_id": program_id, "referrer_member_id": referrer, "referee_member_id": member})
        at = enrolled
        while True:
            at += timedelta(seconds=rng.expovariate(rate_per_second))
            if at >= end:
                break
            serial += 1
            order = f"syn-{seed}-order-{serial}"
            total = _total(rng, spend)
            lines = _lines(rng, total)
            channel = rng.choice(["pos", "pos", "pos", "online", "app"])
            store = f"store-{rng.randint(1, 12):03d}" if channel == "pos" else None
            envelope = purchase_event(f"syn-{seed}-{serial}", source, at, member, order, total, lines, channel,
                                      store, program_id)
            data = dict(envelope["data"])  # type: ignore[call-overload]
            data["currency"] = currency
            events.append(_event(str(envelope["id"]), source, str(envelope["type"]), at, data))
            if rng.random() < REFUND_SHARE:
                refunded = at + timedelta(days=rng.uniform(1, 7))
                if refunded < end:
                    add(PurchaseRefunded.TYPE, refunded, {
                        "program_id": program_id, "member_id": member, "order_id": order,
                        "refund_id": f"{order}-refund", "currency": currency, "total": str(total), "lines": lines})
        if rng.random() < CHECKIN_MEMBERS:
            day = enrolled.astimezone(zone).date()
            while True:
                # Some time in the member's local day, no earlier than they enrolled.
                local = datetime.combine(day, datetime.min.time(), zone) + timedelta(hours=rng.uniform(7, 22))
                when = max(local.astimezone(start.tzinfo), enrolled + timedelta(seconds=2))
                if when >= end:
                    break
                if rng.random() < CHECKIN_DAYS and when.astimezone(zone).date() == day:
                    add(CheckinRecorded.TYPE, when, {"program_id": program_id, "member_id": member,
                                                     "day": day.isoformat(), "channel": "app"})
                day += timedelta(days=1)
    events.sort(key=lambda e: e.time)
    return events


# --- another programme's history, re-addressed ---------------------------------------------------------------------


def _readdressed(event: CloudEvent, to_program: str) -> CloudEvent:
    # Every inbound contract names its programme in `data.program_id` (absent: "default"); no id of theirs embeds
    # it (member, order, refund, task and referral ids are the sender's; referral codes are random), so nothing
    # else changes. Data that is not an object is left as it was, for the replay to refuse as the service would.
    if not isinstance(event.data, dict):
        return event
    return replace(event, data={**event.data, "program_id": to_program})


@overload
def readdress(events: AsyncIterable[CloudEvent], to_program: str) -> AsyncIterator[CloudEvent]: ...
@overload
def readdress(events: Iterable[CloudEvent], to_program: str) -> Iterator[CloudEvent]: ...
def readdress(events: Iterable[CloudEvent] | AsyncIterable[CloudEvent], to_program: str
              ) -> Iterator[CloudEvent] | AsyncIterator[CloudEvent]:
    """The events as if sent to `to_program`: `data.program_id` rewritten, everything else (members, times, ids)
    kept. Takes a list or an async iterator (history()'s) and answers in kind."""
    if isinstance(events, AsyncIterable):
        async def rewritten() -> AsyncIterator[CloudEvent]:
            async for event in events:
                yield _readdressed(event, to_program)
        return rewritten()
    return (_readdressed(event, to_program) for event in events)


# --- the seed's cost table -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CostRow:
    """One line of the cost table: what it is, its value (points, a rate, money, a share; None: not known) and how
    it reads."""

    item: str
    value: int | Decimal | str | None
    text: str


def cost_table(side: Side, rate: Decimal, source: str = "given") -> list[CostRow]:
    """The seed's table for one side: net issued × `rate` (observed, given or the synthetic default, as `source`
    says) × point value ÷ revenue, and the verdict against the band (None without a point value or revenue)."""
    priced = replace(side, redemption_rate=rate)
    currency = side.currency
    cost, share = priced.cost(), priced.cost_share()
    judged = verdict(share)
    low, high = COST_BAND
    return [
        CostRow("points issued", side.issued, _int(side.issued)),
        CostRow("taken back (refunds)", side.issued - side.net_issued, _int(side.issued - side.net_issued)),
        CostRow("net points issued", side.net_issued, _int(side.net_issued)),
        CostRow("expected redemption rate", rate, f"{_share(rate)} ({source})"),
        CostRow("point value", side.point_value,
                "—" if side.point_value is None else f"{side.point_value}" + (f" {currency}" if currency else "")),
        CostRow("expected cost", cost, "—" if cost is None else _money(cost, currency)),
        CostRow("revenue", side.revenue, _money(side.revenue, currency)),
        CostRow("cost share of revenue", share, _share(share)),
        CostRow("verdict", judged, f"{judged or '—'} (band {_share(low)}–{_share(high)})"),
    ]


def priced(comparison: Comparison, rate: Decimal, source: str) -> Comparison:
    """The comparison with `rate` as both sides' expected redemption rate and a note saying where it comes from, so
    the table, the terminal and the HTML page cost the forecast alike."""
    return replace(comparison, live=replace(comparison.live, redemption_rate=rate),
                   draft=replace(comparison.draft, redemption_rate=rate),
                   notes=[*comparison.notes, f"expected redemption rate {rate} ({source}), the same for both sides"])


def render_cost_table(rows: list[CostRow], title: str = "Cost forecast") -> str:
    """The cost table as the terminal shows it, the formula under the title."""
    head = [title, "  net points issued × expected redemption rate × point value ÷ revenue"]
    return "\n".join([*head, *_table(["figure", "value"], [[row.item, row.text] for row in rows])])



# --- the command line's options --------------------------------------------------------------------------------------


def _decimal(value: str) -> Decimal:
    try:
        number = Decimal(value)
    except ArithmeticError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not number.is_finite():
        raise argparse.ArgumentTypeError(f"{value!r} is not a finite number")
    return number


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`jifen whatif`'s options for a programme with no history (the CLI adds them to its parser)."""
    group = parser.add_argument_group("a forecast for a programme with no history")
    source = group.add_mutually_exclusive_group()
    source.add_argument("--history-of", metavar="OTHER",
                        help="replay OTHER's events of the period as if sent to the programme (its members kept)")
    source.add_argument("--synthetic", action="store_true",
                        help="replay a generated feed (--members, --spend, --frequency; docs/whatif.md)")
    group.add_argument("--members", type=int, metavar="N", help="--synthetic: members who enrol")
    group.add_argument("--spend", type=_decimal, metavar="X", help="--synthetic: a basket's average total")
    group.add_argument("--frequency", type=float, metavar="F", help="--synthetic: purchases per member a month")
    group.add_argument("--days", type=int, default=30, metavar="D", help="--synthetic: days of the feed (default 30)")
    group.add_argument("--seed", type=int, default=7, metavar="S",
                       help="--synthetic: the same seed generates the same feed (default 7)")
    group.add_argument("--redemption-rate", type=_decimal, metavar="R",
                       help="the expected share of points redeemed, 0–1, for the cost table (default: observed in "
                            f"OTHER's history; {DEFAULT_REDEMPTION_RATE} for --synthetic)")


def refusal(args: argparse.Namespace) -> str | None:
    """What is wrong with the forecast's options, in one line (None: nothing)."""
    rate = args.redemption_rate
    if rate is not None and not 0 <= rate <= 1:
        return f"--redemption-rate {rate} is not a share between 0 and 1"
    if not args.synthetic:
        given = [name for name in ("members", "spend", "frequency") if getattr(args, name) is not None]
        return f"--{given[0]} goes with --synthetic" if given else None
    missing = [f"--{name}" for name in ("members", "spend", "frequency") if getattr(args, name) is None]
    if missing:
        return f"--synthetic needs {', '.join(missing)}"
    if args.members < 1 or args.days < 1 or args.frequency <= 0 or args.spend <= 0:
        return "--members, --days, --frequency and --spend must be above 0"
    return None


def expected_rate(args: argparse.Namespace, observed: Decimal | None) -> tuple[Decimal | None, str]:
    """The redemption rate of the cost table and where it comes from: given, observed in OTHER's history (the
    replay's `redemption_rate`: OTHER's ledger entries, points redeemed ÷ net issued in the period; None when it
    issued nothing), or the synthetic default."""
    if args.redemption_rate is not None:
        return args.redemption_rate, "given"
    if args.synthetic:
        return DEFAULT_REDEMPTION_RATE, "default for a generated feed"
    return observed, f"observed in {args.history_of}'s history"
