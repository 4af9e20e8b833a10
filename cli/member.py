"""`jifen member M [--program P]`: a member's balance and recent entries (the ledger's HTTP API) and tier (the tiers
service's), with a `read` key, times in the programme's time zone."""

from __future__ import annotations

import argparse
import os
import sys
import urllib.parse
from typing import Any

from cli import points
from cli.times import programme_zone, shown

TIERS_URL = "http://127.0.0.1:8104"


def add_parser(sub: argparse._SubParsersAction) -> None:
    member = sub.add_parser("member", help="a member's balance, recent entries and tier (the ledger's and the tiers "
                                           "service's HTTP APIs)")
    member.add_argument("member", help="the member id")
    member.add_argument("--program", default="default", help="the programme (default: default)")
    member.add_argument("--entries", type=int, default=10, metavar="N",
                        help="how many of the newest entries to show (1 to 500, default 10)")
    points.add_connection(member)
    member.add_argument("--tiers-url", default=os.environ.get("JIFEN_TIERS_URL", TIERS_URL),
                        help=f"the tiers service (default JIFEN_TIERS_URL or {TIERS_URL})")


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.entries <= 500:
        print("✘ --entries must be from 1 to 500", file=sys.stderr)
        return 2
    zone = programme_zone(args.program)
    base = (f"/v1/programs/{urllib.parse.quote(args.program, safe='')}/members/"
            f"{urllib.parse.quote(args.member, safe='')}")
    status, balance = points.call(args, "GET", f"{base}/balance", None, None)
    if status >= 400:
        print(f"✘ {balance.get('error', status)}: {balance.get('detail', '')}", file=sys.stderr)
        return 1
    expiry = balance.get("next_expiry")
    print(f"member {args.member} of programme {args.program}   (times in {zone})")
    print(f"  available      {balance['available']:>12,}" + ("   (owes points: redemption is blocked)"
                                                           if balance["available"] < 0 else ""))
    print(f"  pending        {balance['pending']:>12,}   (return windows still open)")
    print(f"  held           {balance['held']:>12,}   (open redemptions and payments)")
    print(f"  lifetime       {balance['lifetime_earned']:>12,}   earned")
    print("  next expiry    " + (f"{expiry['points']:>12,}   on {shown(expiry['date'], zone)}" if expiry
                                 else f"{'none':>12}"))
    _tier(args, base, zone)
    status, page = points.call(args, "GET", f"{base}/entries?limit={args.entries}", None, None)
    if status >= 400:
        print(f"  entries        not known: {page.get('error', status)}: {page.get('detail', '')}")
        return 1
    entries = page["entries"]
    print(f"  newest {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}"
          + (" (more: GET …/entries?before_seq=N)" if page.get("next_before_seq") else "") if entries
          else "  no entries yet")
    for e in entries:
        why = " ".join(str(x) for x in (e.get("rule_id"), e.get("reason")) if x)
        print(f"    #{e['seq']:<5} {shown(e['occurred_at'], zone)}  {e['kind']:<12} {e['amount']:>+9,}  "
              f"balance {e['balance_after']:>9,}  {why}")
    return 0


def _tier(args: argparse.Namespace, base: str, zone: Any) -> None:
    status, tier = points.call(args, "GET", f"{base}/tier", None, None, base=args.tiers_url)
    if status != 200:
        print(f"  tier           not known: {tier.get('error', status)}: {tier.get('detail', '')}")
        return
    until = f", until {shown(tier['valid_until'], zone)}" if tier.get("valid_until") else ""
    print(f"  tier           {tier['tier']:>12}   since {shown(tier.get('since'), zone, 'enrolment')}{until}")
    qualifying, up, keep = tier.get("qualifying"), tier.get("next"), tier.get("keep")
    if qualifying:
        print(f"                 {qualifying['metric']} {qualifying['value']} from "
              f"{shown(qualifying['window_start'], zone)} to {shown(qualifying['window_end'], zone)}")
    if up:
        print(f"                 {up['needed']} more for {up['tier']}")
    if keep:
        print(f"                 {keep['needed']} more by {shown(keep['by'], zone)} keeps it")
