"""`jifen whatif`: replay a programme's real history under the version in force and under a draft, side by side.

The replay is cli/whatif/engine.py's; the history comes from cli/whatif/history.py (the inbound topics by time, or
insight's archive), or for a programme with no history from cli/whatif/forecast.py (another programme's events, or a
generated feed). This module reads the options, shows progress on stderr and prints the comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import AsyncIterable, Iterable
from datetime import date, datetime, timedelta
from datetime import time as clock_time
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import yaml

from cli import points
from cli.report import _int, _money, _share, _table
from cli.whatif import forecast
from cli.whatif.result import COST_BAND, Comparison, Side, verdict
from shared.envelope import CloudEvent
from shared.programmes import Catalogue, ProgrammeError, ProgrammeVersion
from shared.settings import Settings

DEFAULT_DAYS = 30
DEFAULT_INSIGHT = "http://127.0.0.1:8106"


def add_parser(sub: argparse._SubParsersAction) -> None:
    whatif = sub.add_parser(
        "whatif", help="replay a programme's history under a draft version beside the version in force, in memory",
        description="Replays the programme's inbound events (from its first, so caps, budgets, streaks and tiers "
                    "start the period as they were) through earn's own rules, with the tiers and referral "
                    "services simulated, under the version in force and under the draft; counts what falls in "
                    "the period and prints both side by side. Nothing is written (docs/whatif.md).")
    whatif.add_argument("program", help="the programme")
    whatif.add_argument("--draft", type=Path, required=True, metavar="FILE",
                        help="the draft version: a full programme file or a delta (based_on: N and what changes)")
    whatif.add_argument("--from", dest="from_", type=date.fromisoformat, metavar="YYYY-MM-DD",
                        help=f"the period's first local day (default: {DEFAULT_DAYS} days before --to)")
    whatif.add_argument("--to", type=date.fromisoformat, metavar="YYYY-MM-DD",
                        help="the period's last local day (default: today in the programme's time zone, so far)")
    whatif.add_argument("--source", choices=["auto", "topics", "archive"], default="auto",
                        help="where the history comes from: the inbound topics, insight's archive, or auto (the "
                             "topics while their retention holds, the archive before; default)")
    whatif.add_argument("--html", type=Path, metavar="FILE", help="also write the comparison as one offline page")
    whatif.add_argument("--programmes", type=Path, default=None, metavar="DIR",
                        help="the programme folder (default JIFEN_PROGRAMMES_DIR or programmes/)")
    whatif.add_argument("--kafka", default=None, help="Kafka bootstrap servers (default JIFEN_KAFKA_BOOTSTRAP)")
    whatif.add_argument("--url", default=os.environ.get("JIFEN_INSIGHT_URL", DEFAULT_INSIGHT),
                        help=f"the insight service, for its archive (default JIFEN_INSIGHT_URL or {DEFAULT_INSIGHT})")
    whatif.add_argument("--key", "--api-key", dest="key",
                        help="an API key with the read scope, for the archive (default JIFEN_API_KEY, or "
                             ".run/api-key)")
    forecast.add_arguments(whatif)


def run(args: argparse.Namespace) -> int:
    refused = forecast.refusal(args)
    if refused is None and not args.draft.is_file():
        refused = f"--draft {args.draft}: no such file"
    if refused is None and args.from_ and args.to and args.from_ > args.to:
        refused = f"--from {args.from_} is after --to {args.to}"
    if refused is not None:
        print(f"✘ {refused}", file=sys.stderr)
        return 2
    settings = Settings()
    folder = args.programmes or settings.programmes_dir
    try:
        comparison = asyncio.run(_compare(args, settings, folder))
    except (ProgrammeError, ValueError) as exc:
        print(f"✘ {exc}", file=sys.stderr)
        return 1
    rate, where = None, ""
    if args.history_of or args.synthetic:
        # A forecast is costed at its expected rate on both sides, in the table and on the page alike.
        rate, where = forecast.expected_rate(args, comparison.draft.redemption_rate)
        if rate is not None:
            comparison = forecast.priced(comparison, rate, where)
    print(terminal(comparison))
    if rate is not None:
        print()
        print(forecast.render_cost_table(forecast.cost_table(comparison.draft, rate, where)))
    if args.html:
        from cli.report import write_page
        from cli.whatif.html import render

        return write_page(args.html, lambda: render(comparison), "HTML page")
    return 0


def _zone(folder: Path, program_id: str, draft: Path) -> tuple[ZoneInfo, datetime | None]:
    """The programme's time zone and when its first version took effect (None: a programme with no version yet,
    the zone then the draft's)."""
    versions = Catalogue.load(folder, ProgrammeVersion).versions.get(program_id, [])
    if versions:
        return versions[-1].zone, versions[0].effective_from
    raw = yaml.safe_load(draft.read_text())
    return ZoneInfo(str(raw.get("timezone", "UTC")) if isinstance(raw, dict) else "UTC"), None


def period(args: argparse.Namespace, zone: ZoneInfo, today: date) -> tuple[datetime, datetime]:
    """[start, end) of the period: local midnights of --from and of the day after --to."""
    last = args.to or today  # so far today: what `make up` just sent is in the period
    first = args.from_ or last - timedelta(days=DEFAULT_DAYS - 1)
    if args.synthetic:
        first = args.from_ or today - timedelta(days=args.days)
        last = first + timedelta(days=args.days - 1)
    start = datetime.combine(first, clock_time(), zone)
    return start, datetime.combine(last + timedelta(days=1), clock_time(), zone)


class Progress:
    """Events replayed and the rate, on stderr, once the run is long enough to need it."""

    def __init__(self) -> None:
        self.shown = False
        self.began = time.monotonic()

    def __call__(self, replayed: int, seconds: float) -> None:
        rate = replayed / seconds if seconds > 0 else 0.0
        print(f"\r  replayed {replayed:,} events ({rate:,.0f}/s)", end="", file=sys.stderr, flush=True)
        self.shown = True

    def done(self) -> None:
        if self.shown:
            print(file=sys.stderr)


async def _compare(args: argparse.Namespace, settings: Settings, folder: Path) -> Comparison:
    from cli.whatif import engine

    program_id = args.program
    zone, _ = _zone(folder, program_id, args.draft)
    start, end = period(args, zone, datetime.now(zone).date())
    events: Iterable[CloudEvent] | AsyncIterable[CloudEvent]
    if args.synthetic:
        currency = _currency(folder, program_id, args.draft)
        events = forecast.synthetic_events(program_id, args.members, args.spend, args.frequency, args.days,
                                           args.seed, start, timezone=str(zone), currency=currency)
        source = "synthetic"
    else:
        from cli.whatif.history import HistoryError, history

        of = args.history_of or program_id
        key = points.api_key(args.key)
        try:
            # From the beginning: the warm-up before the period builds the state the period starts with.
            found = await history(of, None, end, source=args.source, kafka=args.kafka or settings.kafka_bootstrap,
                                  insight_url=args.url, api_key=key, prefix=settings.topic_prefix)
        except HistoryError as exc:
            raise ValueError(str(exc)) from exc
        events = forecast.readdress(found, program_id) if args.history_of else found
        source = f"history of {args.history_of} ({found.source})" if args.history_of else found.source
    shown = Progress()
    try:
        return await engine.run(events, program_id=program_id, folder=folder, draft=args.draft, start=start,
                                end=end, source=source, progress=shown, borrowed=bool(args.history_of))
    finally:
        shown.done()


def _currency(folder: Path, program_id: str, draft: Path) -> str:
    versions = Catalogue.load(folder, ProgrammeVersion).versions.get(program_id, [])
    if versions and versions[-1].currency:
        return versions[-1].currency
    raw = yaml.safe_load(draft.read_text())
    return str(raw.get("currency") or "CNY") if isinstance(raw, dict) else "CNY"


# --- the terminal's table ------------------------------------------------------------------------------------------


def _signed(n: int) -> str:
    return "0" if n == 0 else f"{n:+,}"


def _row(label: str, live: int, draft: int) -> list[str]:
    return [label, _int(live), _int(draft), _signed(draft - live)]


def _cost_rows(side: Side) -> tuple[str, str]:
    expected, gross = side.cost_share(), side.gross_share()

    def judged(share: Decimal | None) -> str:
        found = verdict(share)
        return f"{_share(share)} {found}" if found else "—"

    return judged(expected), judged(gross)


def terminal(c: Comparison) -> str:
    live, draft = c.live, c.draft
    low, high = COST_BAND
    local = c.start.tzinfo
    out = [f"What-if for {c.program_id}: {c.start.isoformat()} to {c.end.astimezone(local).isoformat()} "
           f"({c.source}, {c.events:,} events replayed)", ""]
    head = ["", f"in force (v{live.version})" if live.version else "in force", f"draft (v{draft.version})"
            if draft.version else "draft", "difference"]
    rows: list[list[str]] = []
    rules = sorted(set(live.issued_by_rule) | set(draft.issued_by_rule))
    rows.append(["points issued, by rule", "", "", ""])
    rows += [_row(f"  {rule}", live.issued_by_rule[rule], draft.issued_by_rule[rule]) for rule in rules]
    rows.append(_row("points issued", live.issued, draft.issued))
    rows.append(_row("taken back (refunds)", live.issued - live.net_issued, draft.issued - draft.net_issued))
    rows.append(_row("net points issued", live.net_issued, draft.net_issued))
    rows.append(["revenue", _money(live.revenue, live.currency), _money(draft.revenue, draft.currency), ""])
    rate = live.redemption_rate
    expected = [_cost_rows(live)[0], _cost_rows(draft)[0]]
    gross = [_cost_rows(live)[1], _cost_rows(draft)[1]]
    rows.append([f"cost share, expected (redemption rate {_share(rate)})", *expected, ""])
    rows.append(["cost share, gross (every point redeemed)", *gross, ""])
    rows.append(_row("liability at the end, points", live.liability, draft.liability))
    lv, dv = live.liability_value(), draft.liability_value()
    rows.append(["liability at the end, money", _money(lv, live.currency), _money(dv, draft.currency),
                 _money(dv - lv, draft.currency) if lv is not None and dv is not None else "—"])
    tiers = sorted(set(live.members_by_tier) | set(draft.members_by_tier))
    if tiers:
        rows.append(["members per tier, at the end", "", "", ""])
        rows += [_row(f"  {tier}", live.members_by_tier[tier], draft.members_by_tier[tier]) for tier in tiers]
    rows.append(_row("referrals rewarded", live.referrals_rewarded, draft.referrals_rewarded))
    rows.append(_row("referral points", live.referral_points, draft.referral_points))
    out += _table(head, rows)
    out.append(f"  (cost share judged against the seed's band of {_share(low)}–{_share(high)} of revenue)")
    for title, found in (("rules that differ most", c.rules_differing()),
                         ("members that differ most", c.members_differing())):
        out += ["", title.capitalize()]
        if not found:
            out.append("  none: both sides gave the same points")
            continue
        out += _table([title.split()[0][:-1], "in force", "draft", "difference"],
                      [[name, _int(a), _int(b), _signed(b - a)] for name, a, b in found])
    out += ["", f"Assumption: {c.assumption}."]
    if c.notes:
        out += ["", "Notes:", *(f"  · {note}" for note in c.notes)]
    return "\n".join(out)
