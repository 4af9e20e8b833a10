"""`jifen earn explain EVENT` and `jifen programme check FILE`: the earn rules, without posting anything."""

from __future__ import annotations

import argparse
import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path

from pydantic import ValidationError

from services.earn.domain import MemberTier, credits_for_purchase, rule_points
from services.earn.programmes import Catalogue, ProgrammeError, load_file
from services.earn.settings import EarnSettings
from shared.contracts import PurchaseCompleted
from shared.envelope import BadMessage, parse

PURCHASE = "jifen.purchase.completed.v1"


def add_parsers(sub: argparse._SubParsersAction) -> None:
    earn = sub.add_parser("earn", help="earn tools").add_subparsers(dest="earn_command", required=True)
    explain = earn.add_parser("explain", help="print what an event would earn, rule by rule, without posting it")
    explain.add_argument("event", type=Path, help="a CloudEvent JSON file (structured mode)")
    explain.add_argument("--programmes", type=Path, help="programme folder (default: earn's own)")
    explain.add_argument("--tier", type=_tier, metavar="NAME[:MULTIPLIER]",
                         help="judge it as for a member of this tier, e.g. gold:1.5 (default: no tier)")
    programme = sub.add_parser("programme", help="programme tools").add_subparsers(dest="programme_command",
                                                                                    required=True)
    check = programme.add_parser("check", help="validate programme files; exits 1 naming file, line and field")
    check.add_argument("files", type=Path, nargs="+")


def _tier(value: str) -> MemberTier:
    name, _, multiplier = value.partition(":")
    try:
        tier = MemberTier(name, Decimal(multiplier or "1"))
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{multiplier!r} is not a multiplier; write e.g. gold:1.5") from None
    if not name or not tier.multiplier.is_finite() or tier.multiplier < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: give a tier name and a multiplier of at least 1, e.g. gold:1.5")
    return tier


def explain(args: argparse.Namespace) -> int:
    try:
        event = parse(args.event.read_bytes(), [("content-type", b"application/cloudevents+json")])
        if event.type != PURCHASE:
            raise BadMessage("unsupported_type", f"explain knows {PURCHASE}, not {event.type!r}")
        purchase = PurchaseCompleted.model_validate(event.data)
        catalogue = Catalogue.load(args.programmes or EarnSettings().programmes_dir)
    except (OSError, BadMessage, ValidationError, ProgrammeError) as exc:
        print(f"✘ {exc}", file=sys.stderr)
        return 1
    programme = catalogue.at(purchase.program_id, event.time)
    if programme is None:
        print(f"✘ no version of programme {purchase.program_id!r} was in effect at {event.time.isoformat()}",
              file=sys.stderr)
        return 1
    print(f"{event.event_id} at {event.time.isoformat()}: programme {programme.program_id} "
          f"version {programme.version} (in effect from {programme.effective_from.isoformat()})")
    print(f"  order {purchase.order_id}, {purchase.total} {purchase.currency}, {purchase.channel}, "
          f"{len(purchase.lines)} line(s)" + (f", tier {args.tier.tier} ×{args.tier.multiplier}" if args.tier else ""))
    for r in rule_points(programme, event.time, purchase, args.tier):
        mark = "✔" if r.points else "·"
        print(f"  {mark} {r.rule_id:<20} {r.kind:<10} {r.points:>8} points   {r.note}")
    credits = credits_for_purchase(programme, event.event_id, event.time, purchase, args.tier)
    total = sum(c.amount for c in credits)
    first = credits[0] if credits else None
    print(f"  = {total} points in {len(credits)} credit(s)"
          + (f", available {first.available_at.isoformat() if first.available_at else 'at once'}, expiring "
             f"{first.expires_at.isoformat() if first.expires_at else 'never'}" if first else ""))
    return 0


def check(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.files:
        try:
            programme = load_file(path)
        except ProgrammeError as exc:
            print(f"✘ {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"✔ {path}: programme {programme.program_id} version {programme.version}, in effect from "
              f"{programme.effective_from.isoformat()}")
    return 1 if failed else 0
