"""The `jifen` command line: the local stack, the simulated store feed, the benchmark."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import urllib.request
import uuid
from collections import Counter
from datetime import UTC, datetime

import asyncpg

from cli import asyncapi
from cli import earn as earn_cli
from cli import ledger as ledger_cli
from cli.simulate import build_feed, publish
from deploy.local.infra import StackError
from deploy.local.stack import SERVICES, Stack
from services.ledger.verify import verify
from shared import topics
from shared.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jifen", description="Jifen points platform tools")
    sub = parser.add_subparsers(dest="command", required=True)
    stack = sub.add_parser("stack", help="run Kafka, PostgreSQL and the services locally")
    stack.add_argument("action", choices=["up", "down", "status"])
    sim = sub.add_parser("simulate", help="publish a simulated store feed and summarise what it became")
    sim.add_argument("--count", type=int, default=2000, help="purchases to send (default 2000)")
    sim.add_argument("--rate", type=float, default=1000.0, help="messages per second (default 1000; 0 = flat out)")
    sim.add_argument("--members", type=int, default=300)
    sim.add_argument("--seed", type=int, default=7)
    sim.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for every purchase to settle")
    bench = sub.add_parser("bench", help="throughput (and latency) against raw baselines: the pipeline or the ledger")
    bench.add_argument("--mode", choices=["pipeline", "ledger", "history", "rules", "all"], default="pipeline",
                       help="pipeline: purchases → earn → ledger (default); ledger: the ledger alone on preloaded "
                            "commands; history: balance and entry pages of a member with a long history; rules: "
                            "the pipeline under the base rule alone, the default programme and every purchase "
                            "rule (restarts the stack's earn); all: every mode")
    bench.add_argument("--history-entries", type=int, default=100_000,
                       help="history: entries of the member (default %(default)s)")
    bench.add_argument("--count", type=int, default=200_000,
                       help="pipeline, rules: purchases for each throughput run (default %(default)s)")
    bench.add_argument("--rate", type=float, default=1000.0, help="pipeline: offered rate for the latency run")
    bench.add_argument("--latency-count", type=int, default=30_000, help="pipeline: purchases for the latency run")
    bench.add_argument("--credits", type=int, default=100_000,
                       help="ledger: credits of phase (a) (default %(default)s)")
    bench.add_argument("--mixed", type=int, default=100_000,
                       help="ledger: commands of the mixed phase (b) (default %(default)s)")
    bench.add_argument("--members", type=int, default=20_000,
                       help="ledger: members the commands spread over (default %(default)s)")
    bench.add_argument("--partitions", type=int, default=int(os.environ.get("JIFEN_PARTITIONS", "6")),
                       help="ledger: partitions of the bench's commands topic (default %(default)s, as the stack's)")
    bench.add_argument("--ledgers", type=int, default=os.cpu_count() or 1,
                       help="ledger: ledger processes sharing the partitions, one consumer group (default: one per "
                            "core, %(default)s)")
    bench.add_argument("--seed", type=int, default=7, help="ledger: seed of the planned commands")
    bench.add_argument("--timeout", type=float, default=900.0,
                       help="ledger: seconds a phase may take (default %(default)s)")
    bench.add_argument("--profile", metavar="DIR",
                       help="ledger: record the ledger with py-spy during each phase, write the stacks to DIR and "
                            "print its hot spots (slows the ledger a little)")
    bench.add_argument("--keep", action="store_true", help="ledger: keep the bench's schema and topics")
    ledger_cli.add_parser(sub)
    earn_cli.add_parsers(sub)
    asyncapi.add_parser(sub)
    args = parser.parse_args(argv)
    try:
        if args.command == "ledger":
            return asyncio.run(ledger_cli.run(args))
        if args.command == "earn":
            return earn_cli.explain(args)
        if args.command == "programme":
            return earn_cli.check(args)
        if args.command == "asyncapi":
            return asyncapi.run(args)
        if args.command == "stack":
            return _stack(args.action)
        if args.command == "simulate":
            return asyncio.run(simulate(args))
        from cli.bench import run_bench

        return asyncio.run(run_bench(args))
    except StackError as exc:
        print(f"\n✘ {exc}", file=sys.stderr)
        return 1


def _stack(action: str) -> int:
    stack = Stack()
    if action == "up":
        stack.up()
        return 0
    if action == "down":
        stack.down()
        return 0
    return 0 if stack.status() else 1


def scrape(port: int) -> dict[str, float]:
    """The service's Prometheus samples, by full sample line name (labels included)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


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

Where to look
  balances   curl http://127.0.0.1:8102/v1/programs/default/members/{next(iter(sorted(feed.members)))}/balance
  entries    curl http://127.0.0.1:8102/v1/programs/default/members/<member>/entries
  API docs   http://127.0.0.1:8102/docs (ledger), http://127.0.0.1:8101/docs (earn)
  metrics    http://127.0.0.1:8102/metrics, http://127.0.0.1:8101/metrics
  logs       .run/logs/ (JSON lines: ledger.log, earn.log, kafka.log, postgres.log)
  health     jifen stack status      stop everything: make down
""")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
