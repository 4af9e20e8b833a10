"""`jifen simulate`: publish a simulated store feed to the running stack and summarise what it became."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime

import asyncpg

from deploy.local.stack import SERVICES
from services.ledger.verify import verify
from shared.contracts import topics
from shared.metrics import scrape
from shared.settings import Settings
from shared.simulation import build_feed, publish


def add_parser(sub: argparse._SubParsersAction) -> None:
    sim = sub.add_parser("simulate", help="publish a simulated store feed and summarise what it became")
    sim.add_argument("--count", type=int, default=2000, help="purchases to send (default 2000)")
    sim.add_argument("--rate", type=float, default=1000.0, help="messages per second (default 1000; 0 = flat out)")
    sim.add_argument("--members", type=int, default=300)
    sim.add_argument("--seed", type=int, default=7)
    sim.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for every purchase to settle")


def _delta(before: dict[str, float], after: dict[str, float], prefix: str) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if k.startswith(prefix) and v - before.get(k, 0.0)}


def _label(sample: str, label: str) -> str:
    return sample.split(f'{label}="', 1)[1].split('"', 1)[0] if f'{label}="' in sample else "?"


async def simulate(args: argparse.Namespace) -> int:
    settings = Settings()
    run_id = f"sim{uuid.uuid4().hex[:6]}"
    feed = build_feed(args.count, run_id=run_id, now=datetime.now(UTC), members=args.members, seed=args.seed)
    earn_port = next(s.port for s in SERVICES if s.name == "earn")
    before = scrape(earn_port)
    kinds = feed.kinds
    print(f"\nSimulating a store feed ({run_id}): {args.count:,} purchases, {kinds['duplicate']} exact duplicates, "
          f"{sum(v for k, v in kinds.items() if k not in ('valid', 'duplicate'))} malformed messages", flush=True)
    took = await publish(feed, settings.kafka_bootstrap, settings.topic(topics.PURCHASES), args.rate or None,
                         progress=True)
    print(f"  · sent {len(feed.messages):,} messages in {took:.1f}s", flush=True)

    conn = await asyncpg.connect(settings.asyncpg_dsn)
    deadline = time.monotonic() + args.timeout
    try:
        while True:
            credited = await conn.fetchrow(
                """SELECT count(*) AS entries, coalesce(sum(amount), 0) AS points,
                          count(DISTINCT account_id) AS members
                   FROM ledger.entries WHERE source_event_id LIKE $1""", f"sim://{run_id}/%")
            after = scrape(earn_port)
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
        # The whole ledger, not just this run: chains, sequences, zero-sum, lots, holds.
        await conn.execute("SET search_path = ledger")
        report = await verify(conn)
    finally:
        await conn.close()

    by_reason: Counter[str] = Counter()
    for sample, value in dlq.items():
        by_reason[_label(sample, "reason")] += int(value)
    reasons = "".join(f"\n    {reason:<20}{n:,}" for reason, n in sorted(by_reason.items()))
    ok = credited["points"] == feed.expected_points and credited["entries"] == feed.expected_credits and report.ok
    checks = report.checked[0].split(":")[0] if report.checked else "nothing"
    verified = f"✔ every rule holds ({checks})" if report.ok else f"✘ {report.problems[0]}"
    print(f"""
Summary {'✔' if ok else '✘'}
  purchases credited   {credited['entries']:,} (expected {feed.expected_credits:,})
  points credited      {credited['points']:,} (expected {feed.expected_points:,})
  members credited     {credited['members']:,}
  duplicates skipped   {int(duplicates):,}
  sent to DLQ          {sum(by_reason.values()):,}{reasons}
  ledger verify        {verified}

Where to look (every endpoint but health and metrics needs an API key: make up wrote an admin key to .run/api-key)
  balance    curl -H "Authorization: Bearer $(cat .run/api-key)" \\
               http://127.0.0.1:8102/v1/programs/default/members/{next(iter(sorted(feed.members)))}/balance
  entries    curl -H "Authorization: Bearer $(cat .run/api-key)" \\
               http://127.0.0.1:8102/v1/programs/default/members/<member>/entries
  keys       jifen keys create --name till-01 --scope read   (list, revoke KEY_ID)
  API docs   http://127.0.0.1:8102/docs (ledger), http://127.0.0.1:8101/docs (earn)
  metrics    http://127.0.0.1:8102/metrics, http://127.0.0.1:8101/metrics
  logs       .run/logs/ (JSON lines: ledger.log, earn.log, kafka.log, postgres.log)
  health     jifen stack status      stop everything: make down
""")
    return 0 if ok else 1


