"""`jifen simulate`: publish a simulated store feed to the running stack and summarise what it became: points
credited, members per tier, redemptions and a points payment made over HTTP, referrals judged, the ledger's
invariants, and the insight service's health indicators with their verdicts once it has caught up, with the HTML
report (`jifen report`) written to the run folder."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import textwrap
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from cli import report as reports
from cli.dlq import Refused, refused_in
from cli.points import request_json
from deploy.local.stack import SERVICES, Stack
from services.ledger.verify import verify
from services.redemption.simulation import RedemptionRun, run_redemptions
from services.referral import simulation as referrals
from shared import db
from shared.contracts import topics
from shared.metrics import scrape
from shared.settings import Settings
from shared.simulation import Feed, build_feed, publish

VIPS = 8  # regulars with big baskets: they reach gold
# The programmes the simulated feed reaches: its purchases name none (so the default programme's), and its referrals,
# redemptions and points payment are the default programme's.
PROGRAMMES = ("default",)
# What the ledger's summary and insight's liability roll-forward both count, all time: equal once insight caught up.
CAUGHT_UP = ("issued", "redeemed", "expired", "adjusted")
VERDICT_MARK = {"ok": "✔ ok", "watch": "! watch", "act": "✘ act"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    sim = sub.add_parser("simulate", help="publish a simulated store feed and summarise what it became")
    sim.add_argument("--count", type=int, default=2000, help="purchases to send (default 2000)")
    sim.add_argument("--rate", type=float, default=1000.0, help="messages per second (default 1000; 0 = flat out)")
    sim.add_argument("--members", type=int, default=300,
                     help="distinct members buying, besides the regulars with big baskets (default 300)")
    sim.add_argument("--seed", type=int, default=7,
                     help="seed of the simulated feed: the same seed sends the same baskets (default 7)")
    sim.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for every purchase to settle")


def port(name: str) -> int:
    return next((s.port for s in SERVICES if s.name == name), {"insight": 8106}.get(name, 0))


@dataclass
class Api:
    """The stack's HTTP side, with the admin key `make up` wrote."""

    token: str

    def get(self, service: str, path: str) -> Any:
        request = urllib.request.Request(f"http://127.0.0.1:{port(service)}{path}",
                                         headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    def call(self, method: str, path: str, body: dict[str, Any] | None, idempotency_key: str | None,
             service: str = "redemption") -> tuple[int, Any]:
        """One request; the status and the JSON body, refusals (4xx) included."""
        return request_json(f"http://127.0.0.1:{port(service)}{path}", self.token, method, body, idempotency_key)


async def simulate(args: argparse.Namespace) -> int:
    if args.count < 1 or args.members < 1:
        print("✘ --count and --members must be at least 1", file=sys.stderr)
        return 2
    settings = Settings()
    stack = Stack()
    api = Api(stack.api_key_file.read_text().strip()) if stack.api_key_file.exists() else None
    run_id = f"sim{uuid.uuid4().hex[:6]}"
    feed = build_feed(args.count, run_id=run_id, now=datetime.now(UTC), members=args.members, seed=args.seed,
                      vips=VIPS)
    before = scrape(port("earn"))
    started = datetime.now(UTC)
    kinds = feed.kinds
    print(f"\nSimulating a store feed ({run_id}): {args.count:,} purchases by {args.members:,} members and "
          f"{VIPS} regulars with big baskets, {kinds['duplicate']} exact duplicates, "
          f"{sum(v for k, v in kinds.items() if k not in ('valid', 'duplicate'))} malformed messages", flush=True)
    took = await publish(feed, settings.kafka, settings.topic(topics.PURCHASES), args.rate or None,
                         progress=True)
    print(f"  · sent {len(feed.messages):,} messages in {took:.1f}s", flush=True)

    conn = await db.connect(settings.asyncpg_dsn)
    deadline = time.monotonic() + args.timeout
    try:
        while True:
            # Base points are the feed's own (floor of each total); tier bonuses depend on when each member's
            # tier was announced, so they are counted apart.
            credited = await conn.fetchrow(
                """SELECT count(*) FILTER (WHERE rule_id = 'base') AS entries,
                          coalesce(sum(amount) FILTER (WHERE rule_id = 'base'), 0) AS points,
                          coalesce(sum(amount) FILTER (WHERE rule_id = 'tier'), 0) AS bonus,
                          count(DISTINCT account_id) AS members
                   FROM ledger.entries WHERE source_event_id LIKE $1""", f"sim://{run_id}/%")
            after = scrape(port("earn"))
            handled = sum(_delta(before, after, "jifen_events_processed_total").values())
            dlq = _delta(before, after, "jifen_dlq_messages_total")
            duplicates = sum(_delta(before, after, "jifen_duplicates_skipped_total").values())
            settled = handled + sum(dlq.values()) + duplicates >= len(feed.messages)
            if settled and credited["entries"] >= feed.expected_credits:
                break
            if time.monotonic() > deadline:
                print(f"\n✘ not settled after {args.timeout:.0f}s: {credited['entries']:,} of "
                      f"{feed.expected_credits:,} credits posted; see the logs in .run/logs/", file=sys.stderr)
                return 1
            await asyncio.sleep(0.5)
        tiers = await _tiers_settled(api, deadline)
        judged = await _referrals(conn, settings, run_id, deadline)
        redeemed = await asyncio.to_thread(_redemptions, api, run_id)
        # The whole ledger, not just this run: chains, sequences, zero-sum, lots, holds.
        await conn.execute("SET search_path = ledger")
        report = await verify(conn)
    finally:
        await conn.close()

    # Counted as `jifen dlq list` counts: records, not the copies each service that reads the topic makes.
    refused = await _dead_lettered(settings, started, int(sum(dlq.values())), deadline)
    insight = [line for p in PROGRAMMES
               for line in await _insight(api, p, stack.run_dir, max(deadline, time.monotonic() + 60))]
    by_reason = Counter(record.reason for record in refused)
    by = sorted({service for record in refused for service in record.services})
    reasons = "".join(f"\n    {reason:<20}{n:,}" for reason, n in sorted(by_reason.items()))
    dead = f"{len(refused):,} records" + (f" (refused by {', '.join(by)}; `jifen dlq list` shows them)" if by else "")
    ok = (credited["points"] == feed.expected_points and credited["entries"] == feed.expected_credits and report.ok
          and judged[1] and not redeemed.problems)
    checks = report.checked[0].split(":")[0] if report.checked else "nothing"
    verified = f"✔ every rule holds ({checks})" if report.ok else f"✘ {report.problems[0]}"
    member = next(iter(sorted(feed.members)))
    print(f"""
Summary {'✔' if ok else '✘'}
  purchases credited   {credited['entries']:,} (expected {feed.expected_credits:,})
  points credited      {credited['points']:,} (expected {feed.expected_points:,})
  tier bonus points    {credited['bonus']:,} (×1.25 silver, ×1.5 gold, ×2 diamond, once the tier is announced)
  members credited     {credited['members']:,}
  duplicates skipped   {int(duplicates):,}
  sent to DLQ          {dead}{reasons}
  members per tier     {tiers}
  redemptions          {redeemed.line()}
                       {redeemed.points_redeemed:,} points redeemed, {redeemed.points_returned:,} returned by the cancel
  points payment       {redeemed.payment}{''.join(f"{chr(10)}    ✘ {p}" for p in redeemed.problems)}
  referrals            {judged[0]}
  ledger verify        {verified}
{chr(10).join(insight)}

Where to look (every endpoint but health and metrics needs an API key: make up wrote an admin key to .run/api-key)
  balance    curl -H "Authorization: Bearer $(cat .run/api-key)" \\
               http://127.0.0.1:8102/v1/programs/default/members/{member}/balance
  tier       curl -H "Authorization: Bearer $(cat .run/api-key)" \\
               http://127.0.0.1:8104/v1/programs/default/members/vip-0/tier
  rewards    curl -H "Authorization: Bearer $(cat .run/api-key)" \\
               "http://127.0.0.1:8103/v1/programs/default/rewards?member_id=vip-0"
  redeem     curl -H "Authorization: Bearer $(cat .run/api-key)" -H "Idempotency-Key: try-$RANDOM" \\
               -H "Content-Type: application/json" -d '{{"member_id": "vip-0", "reward_id": "coupon-5"}}' \\
               "http://127.0.0.1:8103/v1/programs/default/redemptions?wait=5"
  referrals  curl -H "Authorization: Bearer $(cat .run/api-key)" \\
               http://127.0.0.1:8105/v1/programs/default/referrals/stats
  levels     curl -H "Authorization: Bearer $(cat .run/api-key)" http://127.0.0.1:8104/v1/programs/default/tiers
  KPIs       curl -H "Authorization: Bearer $(cat .run/api-key)" http://127.0.0.1:8106/v1/programs/default/kpis
  report     jifen report default --html .run/report-default.html   (docs/insight.md: every KPI)
  entries    curl -H "Authorization: Bearer $(cat .run/api-key)" \\
               http://127.0.0.1:8102/v1/programs/default/members/<member>/entries
  keys       jifen keys create --name till-01 --scope read   (list, revoke KEY_ID)
  API docs   http://127.0.0.1:8102/docs (ledger), :8101 (earn), :8103 (redemption), :8104 (tiers), :8105 (referral),
             :8106 (insight)
  metrics    http://127.0.0.1:8102/metrics (and each service's port); Prometheus http://127.0.0.1:9090
  logs       .run/logs/ (JSON lines: one per service, kafka.log, postgres.log)
  health     jifen stack status      stop everything: make down
""")
    return 0 if ok else 1


async def _tiers_settled(api: Api | None, deadline: float) -> str:
    """Members per tier of the default programme, once the tiers service has caught up with the ledger's entries
    (no consumer lag, and two equal readings)."""
    if api is None:
        return "(no API key in .run/api-key: run `jifen stack up` first)"
    last: dict[str, int] | None = None
    while time.monotonic() < deadline:
        try:
            lag = sum(v for k, v in scrape(port("tiers")).items() if k.startswith("jifen_consumer_lag_records{"))
            levels = api.get("tiers", "/v1/programs/default/tiers")["levels"]
        except (OSError, urllib.error.URLError, KeyError, ValueError) as exc:
            return f"(the tiers service did not answer: {exc})"
        counts = {level["tier"]: level["members"] for level in levels}
        if counts == last and lag == 0:
            return ", ".join(f"{tier} {n:,}" for tier, n in counts.items())
        last = counts
        await asyncio.sleep(1.0)
    return ", ".join(f"{tier} {n:,}" for tier, n in (last or {}).items()) + " (still catching up)"


async def _referrals(conn: asyncpg.Connection, settings: Settings, run_id: str, deadline: float
                     ) -> tuple[str, bool]:
    """Send referrals (honest ones, self-referrals, a refunded qualifying order) and wait for the referral service's
    verdicts; the line for the summary and whether they are the expected ones."""
    feed = referrals.build_referral_feed(run_id, datetime.now(UTC))
    for topic in (topics.MEMBERS, topics.REFERRALS, topics.PURCHASES):  # members first: a referral names them
        await publish(Feed(feed.messages[topic]), settings.kafka, settings.topic(topic))
    got: Counter[str] = Counter()
    while time.monotonic() < deadline:
        got = await referrals.summary(conn, run_id)
        if got == feed.expected:
            break
        await asyncio.sleep(0.5)
    line = ", ".join(f"{n} {what.replace('rejected:', 'refused: ')}" for what, n in sorted(got.items())) or "none"
    if got != feed.expected:
        wanted = ", ".join(f"{n} {what}" for what, n in sorted(feed.expected.items()))
        return f"✘ {line} (expected {wanted})", False
    return f"{line} (self-referrals refused; a refunded first order revoked)", True


async def _dead_lettered(settings: Settings, since: datetime, earn_refused: int, deadline: float) -> list[Refused]:
    """This run's records in the purchases' dead-letter topic, once every one earn refused is there (its outbox
    relay sends them after the commit that counted them)."""
    name = settings.topic(topics.dlq(topics.PURCHASES))
    while True:
        try:
            found = [r for r in await refused_in(settings.kafka, name) if r.at is not None and r.at >= since]
        except LookupError:
            found = []
        if len(found) >= earn_refused or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.5)


async def _insight(api: Api | None, program_id: str, run_dir: Path, deadline: float) -> list[str]:
    """The summary's lines for one programme: its KPIs with a verdict once insight has caught up with the ledger, and
    the HTML report written to the run folder (or the command that writes it, when it could not be)."""
    if api is None:
        return [f"  insight {program_id:<12} (no API key in .run/api-key: run `jifen stack up` first)"]
    caught_up, note = await _insight_caught_up(api, program_id, deadline)
    if not caught_up:
        return [f"  insight {program_id:<12} ✘ {note}"]
    status, kpis = api.call("GET", f"/v1/programs/{program_id}/kpis", None, None, service="insight")
    if status != 200 or not isinstance(kpis, dict):
        return [f"  insight {program_id:<12} ✘ {_refusal(status, kpis)}"]
    path = run_dir / f"report-{program_id}.html"
    try:
        doc = reports.fetch(f"http://127.0.0.1:{port('insight')}", api.token, program_id, None, None)
        path.write_text(reports.html(doc), encoding="utf-8")
        written = f"{_shown(path)}   (`jifen report {program_id}` prints it)"
    except (reports.ReportError, OSError) as exc:
        written = f"✘ not written ({exc}): jifen report {program_id} --html {_shown(path)}"
    return [*kpi_lines(program_id, kpis, note), f"  report {program_id:<13}{written}"]


async def _insight_caught_up(api: Api, program_id: str, deadline: float) -> tuple[bool, str]:
    """Whether insight's projection reflects the feed, and the line that says so: its liability roll-forward adds up
    to the ledger's summary (issued, redeemed, expired, adjusted, and the closing is the outstanding) and its
    consumers have no lag; polled until both hold or `deadline`."""
    while True:
        try:
            status, summary = api.call("GET", f"/v1/programs/{program_id}/summary", None, None, service="ledger")
            got, liability = api.call("GET", f"/v1/programs/{program_id}/liability", None, None, service="insight")
            lag = sum(v for k, v in scrape(port("insight")).items() if k.startswith("jifen_consumer_lag_records{"))
        except (OSError, urllib.error.URLError, ValueError) as exc:
            return False, f"the insight service did not answer: {exc}"
        if status != 200 or got != 200:
            return False, _refusal(status, summary) if status != 200 else _refusal(got, liability)
        ledger = {k: summary[k] for k in CAUGHT_UP} | {"outstanding": summary["outstanding"]}
        projected = {k: sum(m[k] for m in liability["months"]) for k in CAUGHT_UP}
        projected["outstanding"] = liability["closing"]
        if projected == ledger and lag == 0:
            return True, f"as the ledger: {ledger['issued']:,} points issued, {ledger['outstanding']:,} held"
        if time.monotonic() > deadline:
            behind = ", ".join(f"{k} {projected[k]:,} of {v:,}" for k, v in ledger.items() if projected[k] != v)
            return False, f"still catching up with the ledger ({behind or f'{lag:.0f} records of lag'}); see " \
                          ".run/logs/insight.log"
        await asyncio.sleep(0.5)


def kpi_lines(program_id: str, kpis: dict[str, Any], note: str = "") -> list[str]:
    """The KPIs of an insight `GET …/kpis` answer that have a verdict, one line each (value, verdict, healthy range)
    with the advice under each that is not ok, after a heading line; those the period gives nothing to measure by
    are named on one line."""
    items = kpis.get("kpis") or []
    judged = [k for k in items if k.get("verdict")]
    unknown = [str(k.get("kpi")) for k in items if k.get("healthy") and not k.get("verdict")]
    period = f"{kpis.get('from')} to {kpis.get('to')} ({kpis.get('timezone')})"
    lines = [f"  insight {program_id:<12} {period}" + (f", {note}" if note else "")]
    width = max((len(str(k.get("kpi"))) for k in judged), default=0)
    values = [reports.value_text(k.get("value"), str(k.get("unit")), kpis.get("currency")) for k in judged]
    value_width = max((len(v) for v in values), default=0)
    for k, value in zip(judged, values, strict=True):
        verdict = str(k["verdict"])
        lines.append(f"    {k.get('kpi')!s:<{width}}  {value:>{value_width}}  {VERDICT_MARK.get(verdict, verdict):<7}  "
                     f"healthy: {k.get('healthy')}")
        if verdict != "ok" and k.get("advice"):
            lines += textwrap.wrap(str(k["advice"]), 112, initial_indent="      → ", subsequent_indent="        ")
    if unknown:
        lines.append(f"    no data yet for {', '.join(unknown)}")
    return lines


def _refusal(status: int, body: Any) -> str:
    body = body if isinstance(body, dict) else {}
    return f"{body.get('error', f'HTTP {status}')}: {body.get('detail', '')}".rstrip(": ")


def _shown(path: Path) -> str:
    """A path as the reader can use it from here: relative to the working folder when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _redemptions(api: Api | None, run_id: str) -> RedemptionRun:
    if api is None:
        run = RedemptionRun()
        run.problems.append("no API key in .run/api-key: run `jifen stack up` first")
        return run
    return run_redemptions(api.call, run_id, [f"vip-{n}" for n in range(min(4, VIPS))])


def _delta(before: dict[str, float], after: dict[str, float], prefix: str) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if k.startswith(prefix) and v - before.get(k, 0.0)}
