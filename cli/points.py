"""`jifen points adjust|award|reverse|transfer|block|unblock` and `jifen programme summary`: the ledger's admin API
over HTTP, with an `admin` key (`--api-key`, else JIFEN_API_KEY, else the key `make up` wrote to .run/api-key).
Each prints the entries the command posted, or the reason it was refused."""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any

from cli.times import programme_zone, shown
from deploy.local.stack import Stack

DEFAULT_URL = "http://127.0.0.1:8102"


def add_connection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=os.environ.get("JIFEN_LEDGER_URL", DEFAULT_URL),
                        help=f"the ledger's HTTP address (default JIFEN_LEDGER_URL or {DEFAULT_URL})")
    parser.add_argument("--api-key", help="an API key with the admin scope (default JIFEN_API_KEY, or .run/api-key)")


def add_parser(sub: argparse._SubParsersAction) -> None:
    points = sub.add_parser("points", help="adjust, award, reverse, transfer points; block or unblock a member "
                                           "(the ledger's admin API)").add_subparsers(dest="points_command",
                                                                                     required=True)

    def command(name: str, help_: str) -> argparse.ArgumentParser:
        parser = points.add_parser(name, help=help_)
        parser.add_argument("--program", default="default", help="the programme (default: default)")
        add_connection(parser)
        parser.add_argument("--idempotency-key", help="the same key again is the same command (default: a new one)")
        return parser

    adjust = command("adjust", "credit or debit a member's points by hand, with a reason")
    adjust.add_argument("member")
    adjust.add_argument("points", type=int, help="positive to credit, negative to debit")
    adjust.add_argument("--reason", required=True)
    award = command("award", "award goodwill points")
    award.add_argument("member")
    award.add_argument("points", type=int)
    award.add_argument("--reason", required=True)
    reverse = command("reverse", "reverse an entry of a member's (all of it, or --points of it)")
    reverse.add_argument("member")
    reverse.add_argument("entry_id", type=int)
    reverse.add_argument("--points", type=int)
    reverse.add_argument("--reason", required=True)
    transfer = command("transfer", "move points from one member to another")
    transfer.add_argument("from_member")
    transfer.add_argument("to_member")
    transfer.add_argument("points", type=int)
    transfer.add_argument("--reason", required=True)
    for name in ("block", "unblock"):
        blocking = command(name, f"{name} a member (redemption honours it when the programme trusts jifen.admin)")
        blocking.add_argument("member")
        blocking.add_argument("--reason", required=True)


def run(args: argparse.Namespace) -> int:
    member = urllib.parse.quote(getattr(args, "member", "") or "", safe="")
    base = f"/v1/programs/{urllib.parse.quote(args.program, safe='')}"
    match args.points_command:
        case "adjust":
            if args.points == 0:
                return _fail("points must not be 0: positive credits, negative debits")
            body: dict[str, Any] = {"direction": "credit" if args.points > 0 else "debit",
                                    "points": abs(args.points), "reason": args.reason}
            path = f"{base}/members/{member}/adjustments"
        case "award":
            body, path = {"points": args.points, "reason": args.reason}, f"{base}/members/{member}/awards"
        case "reverse":
            body = {"reason": args.reason, **({"points": args.points} if args.points is not None else {})}
            path = f"{base}/members/{member}/entries/{args.entry_id}/reversal"
        case "transfer":
            body = {"from_member_id": args.from_member, "to_member_id": args.to_member, "points": args.points,
                    "reason": args.reason}
            path = f"{base}/transfers"
        case _:
            body, path = {"reason": args.reason}, f"{base}/members/{member}/{args.points_command}"
    key = args.idempotency_key or f"cli-{uuid.uuid4().hex[:12]}"
    status, answer = call(args, "POST", f"{path}?wait=5" if args.points_command not in ("block", "unblock") else path,
                          body, key)
    if status >= 400:
        return _refused(status, answer)
    if answer.get("status") == "sent":
        print(f"✔ {args.points_command} sent (event {answer['event_id']})")
        return 0
    if answer.get("status") == "pending":
        print(f"… sent, not answered yet: GET {base}/commands/{answer['idempotency_key']} tells what became of it")
        return 0
    print(f"✔ posted ({answer['idempotency_key']})")
    for e in answer["entries"]:
        print(f"  entry {e['entry_id']}  {e['member_id']}  #{e['seq']}  {e['kind']:<12} {e['amount']:+,}  "
              f"balance {e['balance_after']:,}")
    return 0


def summary(args: argparse.Namespace) -> int:
    status, s = call(args, "GET", f"/v1/programs/{urllib.parse.quote(args.program, safe='')}/summary", None, None)
    if status >= 400:
        return _refused(status, s)
    currency = f" {s['currency']}" if s["currency"] else ""
    money = f"{s['liability']}{currency} at {s['point_value']}{currency} a point" if s["liability"] is not None \
        else "none (the programme gives its points no money value)"
    reload = s["last_reload"]
    print(f"""programme {s['program_id']}, version {s['version']} in force
  issued        {s['issued']:>14,}
  redeemed      {s['redeemed']:>14,}
  expired       {s['expired']:>14,}
  adjusted      {s['adjusted']:>14,}
  outstanding   {s['outstanding']:>14,}   held by {s['members']:,} members ({s['entries']:,} entries)
  pending       {s['pending']:>14,}   (return windows still open)
  liability     {money}""")
    for month in s["expiring"]:
        worth = f"   {month['value']} {month['currency'] or ''}".rstrip() if month.get("value") is not None else ""
        print(f"  expiring {month['month']}  {month['points']:>10,}{worth}")
    if s.get("without_expiry"):
        print(f"  never expiring {s['without_expiry']:>10,}")
    if reload:
        print(f"  last reload   {shown(reload['at'], programme_zone(args.program))}  "
              f"{'✔' if reload['ok'] else '✘ refused: ' + reload['detail']}")
    _members_by_tier(args)
    return 0


def _members_by_tier(args: argparse.Namespace) -> None:
    """From the tiers service (the ledger knows no tiers): its levels in force and the members at each."""
    program = urllib.parse.quote(args.program, safe="")
    status, levels = call(args, "GET", f"/v1/programs/{program}/tiers", None, None, base=args.tiers_url)
    if status == 200:
        counts = ", ".join(f"{lv['tier']} {lv['members']:,}" for lv in levels["levels"])
        print(f"  members by tier  {counts}   ({levels['metric']}, {levels['window']})")
    elif levels.get("error") == "no_tiers":
        print("  members by tier  (the programme has no tiers)")
    else:
        print(f"  members by tier  not known: {levels.get('error', status)}: {levels.get('detail', '')}")


def call(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None,
         idempotency_key: str | None, base: str | None = None) -> tuple[int, Any]:
    token = api_key(args.api_key)
    return request_json((base or args.url).rstrip("/") + path, token, method, body, idempotency_key)


def request_json(url: str, token: str, method: str = "GET", body: dict[str, Any] | None = None,
                 idempotency_key: str | None = None) -> tuple[int, Any]:
    """One request with an API key: the status and the JSON body, refusals (4xx) included; 599 when nothing
    answered. The CLI's one HTTP client (`jifen points`, `programme summary`, `simulate`)."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    request = urllib.request.Request(url, method=method, headers=headers,
                                     data=json.dumps(body).encode() if body is not None else None)
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, {"error": f"http_{exc.code}", "detail": raw.decode(errors="replace")[:300]}
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return 599, {"error": "unreachable", "detail": f"no answer from {url}: {reason}"}


def api_key(given: str | None) -> str:
    """The key a command uses: the one given, else JIFEN_API_KEY, else the one `make up` wrote (empty: none)."""
    if given or os.environ.get("JIFEN_API_KEY"):
        return given or os.environ["JIFEN_API_KEY"]
    path = Stack().api_key_file
    return path.read_text().strip() if path.exists() else ""


def _refused(status: int, answer: dict[str, Any]) -> int:
    print(f"✘ {answer.get('error', status)}: {answer.get('detail', '')}", file=sys.stderr)
    return 1


def _fail(message: str) -> int:
    print(f"✘ {message}", file=sys.stderr)
    return 2
