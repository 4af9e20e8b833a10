"""`jifen bench --mode insight`: the insight service beside the raw baselines of the same run.

1. Consume: `--insight-entries` ledger entries (earn, redeem and expire over many members and a year) preloaded on
   topics of the bench's own (prefix `bench.<run>.`), then an insight process of its own started on them (schema
   `bench_insight_<run>`, its own consumer group and port), timed from its first claimed event to the last; beside a
   bare consumer reading as many records in the same run.
2. Pipeline: purchases → earn → ledger through an earn and a ledger of the bench's own, `--insight-purchases` flat
   out with an insight process of its own consuming the same topics, then as many without it, back to back.
3. Report (`--mode insight-report`, or part of `insight` with `--report-entries N`): the projection seeded through
   insight's own handler with N entries (1,000,000 by default in that mode), then the five documents `jifen report`
   fetches, each timed over HTTP from an insight process on it, and the whole report's fetch.

Everything lives in the database `bench_insight` beside the one JIFEN_DATABASE_URL names (made if missing), one
schema per part and run, dropped afterwards unless `--keep`. The stack's services are not touched.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aiokafka import ConsumerRecord
from prometheus_client import CollectorRegistry

from bench.baselines import BenchError, kafka_baseline, line, machine, purchases, ratio, verdict
from bench.probes import PrivateService
from bench.tiers import _drop_topics, preload
from deploy.local.infra import REPO, create_topics
from shared import auth, db, envelope, keys
from shared.contracts import topics
from shared.contracts.base import Contract
from shared.contracts.ledger_entries import PointsEntryPosted
from shared.envelope import CloudEvent
from shared.settings import Settings
from shared.simulation import publish
from shared.subscription import Inbound, Rejections
from shared.uow import UnitOfWork

TARGET_PER_S = 10_000.0
TARGET_PIPELINE_COST = 0.10  # purchases/s with insight at most this much lower than without
TARGET_REPORT_S = 2.0
PARTITIONS = 6
TIMEOUT_S = 900.0
PROGRAM = "default"  # UTC, rewards (so balance bands), in force since 2020
SEED_BATCH = 2000  # the consumer's batch_max_records
READS = 5  # each read's timing is the median of this many


class PrivateInsight(PrivateService):
    service = "insight"


class PrivateEarn(PrivateService):
    service = "earn"


class PrivateLedgerService(PrivateService):
    service = "ledger"


# --- the entries ---------------------------------------------------------------------------------------------

@dataclass
class _Member:
    seq: int = 0
    balance: int = 0
    lots: list[tuple[int, int]] | None = None  # (lot id, points) still open, oldest first


def entries(count: int, members: int, seed: int, days: int = 365, now: datetime | None = None,
            program: str = PROGRAM) -> Iterator[dict[str, Any]]:
    """Ledger entries as `jifen.ledger.entry.posted.v1` data, in time order over the last `days`: about 70% earn
    credits (each a lot expiring a year on), 22% redemptions of part of the balance, 8% expiries of a member's oldest
    lot (the sweeper's key, so insight charges it to the lot's cohort). Per-member seq and balance_after as the ledger
    writes them. A redemption or expiry the member cannot cover is an earn instead."""
    rng = random.Random(seed)
    now = now or datetime.now(UTC)
    start = now - timedelta(days=days)
    step = timedelta(days=days) / max(count, 1)
    state: dict[str, _Member] = {}
    lot_id = 0
    for n in range(count):
        # Some members are far busier than others, as in a real programme.
        member = f"m-{int(members * rng.random() ** 2):07d}"
        s = state.get(member)
        if s is None:
            s = state[member] = _Member(lots=[])
        assert s.lots is not None
        at = start + step * n
        roll = rng.random()
        rule: str | None = "base"
        kind, key, lots = "earn", keys.earn_credit(f"bench|{n}", "base"), []
        if roll < 0.08 and s.lots:
            lid, amount = s.lots.pop(0)
            kind, key, amount, rule = "expire", keys.lot_expiry(lid), -amount, None
        elif roll < 0.30 and s.balance >= 100:
            amount = -rng.randint(100, max(100, min(s.balance, 2000)))
            kind, key, rule = "redeem", keys.bench_command("insight", "redeem", n), None
            left = -amount
            while left and s.lots:  # oldest lots first, as the ledger spends same-validity lots
                lid, open_ = s.lots[0]
                part = min(open_, left)
                left -= part
                if part == open_:
                    s.lots.pop(0)
                else:
                    s.lots[0] = (lid, open_ - part)
        else:
            amount = rng.randint(20, 600)
            lot_id += 1
            s.lots.append((lot_id, amount))
            lots = [{"lot_id": lot_id, "amount": amount, "available_at": at.isoformat(),
                     "expires_at": (at + timedelta(days=365)).isoformat()}]
        s.seq += 1
        s.balance += amount
        yield {"entry_id": n + 1, "program_id": program, "member_id": member, "seq": s.seq, "amount": amount,
               "balance_after": s.balance, "kind": kind, "idempotency_key": key,
               "cause": {"source_event_id": f"bench|{n}", "rule_id": rule},
               "occurred_at": at.isoformat(), "posted_at": at.isoformat(), "lots": lots, "hash": "00"}


def records(count: int, members: int, seed: int) -> list[tuple[bytes, bytes]]:
    now = datetime.now(UTC)
    return [(e["member_id"].encode(), envelope.encode(keys.posted_event(e["entry_id"]), "jifen.ledger",
                                                      PointsEntryPosted.TYPE, now, e))
            for e in entries(count, members, seed, now=now)]


def _inbound(data: dict[str, Any], n: int, now: datetime) -> Inbound[PointsEntryPosted]:
    entry = PointsEntryPosted.model_validate(data)
    event = CloudEvent(id=keys.posted_event(entry.entry_id), source="jifen.ledger", type=PointsEntryPosted.TYPE,
                       time=now, data=None)
    return Inbound(ConsumerRecord("bench", 0, n, 0, 0, None, b"", None, 0, 0, []), event, entry)


# --- where it runs -------------------------------------------------------------------------------------------

async def bench_database(settings: Settings) -> Settings:
    """Settings pointing at the database `bench_insight` beside the configured one, made if missing."""
    base, _, name = settings.asyncpg_dsn.rpartition("/")
    query = ""
    if "?" in name:
        name, query = name.split("?", 1)
        query = "?" + query
    admin = await db.connect(settings.asyncpg_dsn)
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = 'bench_insight'"):
            with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                await admin.execute("CREATE DATABASE bench_insight")
    finally:
        await admin.close()
    return settings.model_copy(update={"database_url": f"{base}/bench_insight{query}"})


async def _count(conn: asyncpg.Connection, sql: str) -> int:
    with contextlib.suppress(asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
        return int(await conn.fetchval(sql))
    return 0


async def _until(conn: asyncpg.Connection, sql: str, count: int, what: str, service: PrivateService,
                 *others: PrivateService) -> tuple[float, float]:
    """(first seen, all seen) monotonic times of `sql` counting up to `count`."""
    deadline = time.monotonic() + TIMEOUT_S
    first: float | None = None
    reported = time.monotonic()
    while True:
        for s in (service, *others):
            s.check_alive(f"while {what}")
        stored = await _count(conn, sql)
        now = time.monotonic()
        if stored and first is None:
            first = now
        if stored >= count:
            assert first is not None
            return first, now
        if now > deadline:
            raise BenchError(f"{stored:,} of {count:,} {what} in {TIMEOUT_S:.0f}s; see {service.log_file}")
        if now - reported > 5:
            reported = now
            rate = stored / (now - first) if first and now > first else 0
            print(f"    {stored:>9,}/{count:,} {what}  {rate:8,.0f}/s  load {os.getloadavg()[0]:.2f}", flush=True)
        await asyncio.sleep(0.25)


# --- 1. consume ----------------------------------------------------------------------------------------------

async def consume(settings: Settings, count: int, members: int, seed: int, keep: bool) -> float:
    run = uuid.uuid4().hex[:8]
    prefix, schema = f"bench.{run}.", f"bench_insight_{run}"
    await create_topics(settings.kafka, topics.all_topics(prefix), PARTITIONS)
    insight = PrivateInsight(settings, prefix, schema, REPO / ".run" / "logs" / f"bench-insight-{run}.log",
                             JIFEN_ABUSE_WATCH_INTERVAL_S="86400", JIFEN_GAUGE_INTERVAL_S="86400")
    conn = await db.connect(settings.asyncpg_dsn)
    try:
        print(f"  preloading {count:,} entries of {members:,} members onto {prefix}{topics.LEDGER_ENTRIES}",
              flush=True)
        await preload(settings.kafka, f"{prefix}{topics.LEDGER_ENTRIES}", records(count, members, seed))
        await insight.start()
        first, last = await _until(conn, f"SELECT count(*) FROM {schema}.inbox", count, "entries claimed", insight)
        # Timed from the first batch's commit to the last: the first batch's own work is not in the window, so
        # the rate counts the entries after the first batch.
        first_batch = await _count(conn, f"SELECT count(*) FROM {schema}.inbox WHERE received_at = "
                                         f"(SELECT min(received_at) FROM {schema}.inbox)")
        return (count - first_batch) / (last - first) if last > first else float("nan")
    finally:
        await insight.stop()
        if not keep:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            await _drop_topics(settings.kafka, topics.all_topics(prefix))
        await conn.close()


# --- 2. the pipeline with and without insight ---------------------------------------------------------------

async def pipeline(settings: Settings, count: int, keep: bool) -> tuple[float, float, float]:
    """(warm-up, with insight, without) purchases/s through a private earn → ledger."""
    run = uuid.uuid4().hex[:8]
    prefix = f"bench.{run}."
    schemas = {name: f"bench_{name}_{run}" for name in ("earn", "ledger", "insight")}
    logs = REPO / ".run" / "logs"
    await create_topics(settings.kafka, topics.all_topics(prefix), PARTITIONS)
    earn = PrivateEarn(settings, prefix, schemas["earn"], logs / f"bench-insight-earn-{run}.log")
    ledger = PrivateLedgerService(settings, prefix, schemas["ledger"], logs / f"bench-insight-ledger-{run}.log")
    insight = PrivateInsight(settings, prefix, schemas["insight"], logs / f"bench-insight-{run}.log",
                             JIFEN_ABUSE_WATCH_INTERVAL_S="86400", JIFEN_GAUGE_INTERVAL_S="86400")
    conn = await db.connect(settings.asyncpg_dsn)
    entries_sql = f"SELECT count(*) FROM {schemas['ledger']}.entries WHERE source_event_id LIKE '{{}}'"

    async def through(label: str, n: int, *watched: PrivateService) -> float:
        await _settled(conn, schemas)
        rid = f"b{uuid.uuid4().hex[:8]}"
        feed = purchases(n, rid)
        print(f"  {label}: {n:,} purchases flat out (run {rid}), {machine()}", flush=True)
        started = time.monotonic()
        sender = asyncio.create_task(publish(feed, settings.kafka, f"{prefix}{topics.PURCHASES}"))
        _, done = await _until(conn, entries_sql.format(f"sim://{rid}/%"), feed.expected_credits,
                               "ledger entries", ledger, earn, *watched)
        await sender
        rate = n / (done - started)
        print(f"    {rate:,.0f} purchases/s", flush=True)
        return rate

    try:
        await ledger.start()
        await earn.start()
        warm_n = max(count // 4, 2000)
        warm = await through("warm-up, without insight", warm_n)
        await insight.start()
        # It reads the topics from the start: the warm-up's purchases and entries first, not timed.
        await _until(conn, f"SELECT count(*) FROM {schemas['insight']}.inbox", 2 * warm_n,
                     "warm-up events claimed by insight", insight)
        with_rate = await through("with insight", count, insight)
        await insight.stop()
        without_rate = await through("without insight", count)
        return warm, with_rate, without_rate
    finally:
        for s in (insight, earn, ledger):
            await s.stop()
        if not keep:
            for schema in schemas.values():
                await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            await _drop_topics(settings.kafka, topics.all_topics(prefix))
        await conn.close()


async def _settled(conn: asyncpg.Connection, schemas: dict[str, str]) -> None:
    """Both outboxes empty and no autovacuum running, so a run does not queue behind the last one's tail."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        backlog = await _count(conn, f"SELECT (SELECT count(*) FROM {schemas['earn']}.outbox) + "
                                     f"(SELECT count(*) FROM {schemas['ledger']}.outbox)")
        vacuuming = await conn.fetchval("SELECT count(*) FROM pg_stat_progress_vacuum")
        if not backlog and not vacuuming:
            return
        await asyncio.sleep(0.5)


# --- 3. the report on a big programme -----------------------------------------------------------------------

@dataclass
class Read:
    what: str
    first_ms: float
    median_ms: float
    status: int


async def seed(settings: Settings, schema: str, count: int, members: int, seed_: int) -> float:
    """`count` entries through insight's own handler, SEED_BATCH per transaction as the consumer applies them;
    returns entries/s."""
    from services.insight.app import spec as insight_spec
    from services.insight.handlers import ProjectInsight
    from services.insight.metrics import InsightMetrics
    from services.insight.programme import InsightProgramme
    from services.insight.settings import InsightSettings
    from shared.programmes import Catalogue

    insight_settings = InsightSettings(database_url=settings.database_url, schema_name=schema)
    await db.migrate(settings.asyncpg_dsn, schema, insight_spec(insight_settings).migrations)
    engine = db.make_engine(insight_settings, schema, pool_size=2)
    handler = ProjectInsight(Catalogue.load(insight_settings.programmes_dir, InsightProgramme),
                             InsightMetrics(CollectorRegistry()))
    now = datetime.now(UTC)
    feed = entries(count, members, seed_, now=now)
    started = reported = time.monotonic()
    done = 0
    try:
        while done < count:
            items: list[Inbound[Contract]] = [_inbound(e, done + i, now)
                                              for i, e in zip(range(SEED_BATCH), feed, strict=False)]
            if not items:
                break
            async with UnitOfWork(engine, schema, "jifen.bench") as uow:
                await handler.apply(items, uow, Rejections())
                await uow.commit()
            done += len(items)
            if time.monotonic() - reported > 10:
                reported = time.monotonic()
                print(f"    seeded {done:>9,}/{count:,}  {done / (reported - started):8,.0f}/s  "
                      f"load {os.getloadavg()[0]:.2f}", flush=True)
    finally:
        await engine.dispose()
    return done / (time.monotonic() - started)


def _timed_get(url: str, key: str) -> tuple[float, int]:
    from cli import points

    started = time.perf_counter()
    status, _ = points.request_json(url, key)
    return (time.perf_counter() - started) * 1000, status


async def report(settings: Settings, count: int, members: int, seed_: int, keep: bool, reuse: str | None = None
                 ) -> tuple[float | None, list[Read], list[float]]:
    run = uuid.uuid4().hex[:8]
    schema = reuse or f"bench_insight_report_{run}"
    keep = keep or reuse is not None
    conn = await db.connect(settings.asyncpg_dsn)
    insight = PrivateInsight(settings, f"bench.{run}.", schema, REPO / ".run" / "logs" / f"bench-insight-{run}.log",
                             JIFEN_ABUSE_WATCH_INTERVAL_S="86400", JIFEN_GAUGE_INTERVAL_S="86400")
    try:
        seed_rate = None
        if reuse is None:
            print(f"  seeding {count:,} entries of {members:,} members over 12 months through insight's handler "
                  f"(schema {schema})", flush=True)
            seed_rate = await seed(settings, schema, count, members, seed_)
            print(f"    {seed_rate:,.0f} entries/s through the handler", flush=True)
        else:
            print(f"  reading the projection kept in schema {schema} (its newest migrations applied on start)")
        await conn.execute(f"ANALYZE {schema}.day_facts, {schema}.member_days, {schema}.members, "
                           f"{schema}.cohort_facts, {schema}.orders, {schema}.rule_baskets, {schema}.referees")
        rows = await conn.fetchrow(f"SELECT (SELECT count(*) FROM {schema}.member_days) AS days, "
                                   f"(SELECT count(*) FROM {schema}.members) AS members, "
                                   f"(SELECT count(*) FROM {schema}.day_facts) AS facts")
        print(f"    projection: {rows['days']:,} member-days, {rows['members']:,} members, {rows['facts']:,} day "
              "facts", flush=True)
        await db.migrate(settings.asyncpg_dsn, auth.SCHEMA, auth.MIGRATIONS, with_shared=False)
        api_key, token = await auth.create_key(conn, f"bench-insight-{run}", ["read"])
        # Topics of its own, empty: the process only serves reads here.
        await create_topics(settings.kafka, topics.all_topics(insight.prefix), 1)
        await insight.start()
        base = f"http://127.0.0.1:{insight.port}/v1/programs/{PROGRAM}"
        today = datetime.now(UTC).date()
        year = f"from={today - timedelta(days=364)}&to={today}"
        calls = [("GET /kpis (default: last 30 days)", f"{base}/kpis"),
                 ("GET /kpis (a full year)", f"{base}/kpis?{year}"),
                 ("GET /liability", f"{base}/liability"),
                 ("GET /cohorts", f"{base}/cohorts"),
                 ("GET /leaderboard (30 days, top 10)", f"{base}/leaderboard?limit=10"),
                 ("GET /leaderboard (a full year, top 10)", f"{base}/leaderboard?limit=10&{year}"),
                 ("GET /segments", f"{base}/segments")]
        reads = []
        for what, url in calls:
            timings = [await asyncio.to_thread(_timed_get, url, token) for _ in range(READS)]
            reads.append(Read(what, timings[0][0], statistics.median(t for t, _ in timings), timings[-1][1]))
        from cli.report import fetch

        totals = []
        for from_ in (None, today - timedelta(days=364)):
            started = time.perf_counter()
            await asyncio.to_thread(fetch, f"http://127.0.0.1:{insight.port}", token, PROGRAM, from_,
                                    today if from_ else None)
            totals.append(time.perf_counter() - started)
        with contextlib.suppress(Exception):
            await auth.revoke_key(conn, api_key.key_id)
        return seed_rate, reads, totals
    finally:
        await insight.stop()
        if not keep:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            await _drop_topics(settings.kafka, topics.all_topics(insight.prefix))
        await conn.close()


# --- the mode -----------------------------------------------------------------------------------------------

def add_arguments(bench: argparse.ArgumentParser) -> None:
    bench.add_argument("--insight-entries", type=int, default=200_000,
                       help="insight: ledger entries preloaded for the consume rate (default %(default)s)")
    bench.add_argument("--insight-members", type=int, default=50_000,
                       help="insight, insight-report: members the entries spread over (default %(default)s)")
    bench.add_argument("--insight-purchases", type=int, default=30_000,
                       help="insight: purchases of each pipeline run, with and without insight (default "
                            "%(default)s; 0 skips the pipeline part)")
    bench.add_argument("--report-schema", metavar="SCHEMA",
                       help="insight-report: time the reads on a projection an earlier run kept (--keep) instead of "
                            "seeding one; it is kept")
    bench.add_argument("--report-entries", type=int, default=None,
                       help="insight: also seed a programme with this many entries and time the report's reads "
                            "(insight-report: default 1,000,000)")


async def run_insight_bench(args: argparse.Namespace) -> int:
    settings = await bench_database(Settings())
    report_entries = args.report_entries
    if args.mode == "insight-report" and report_entries is None:
        report_entries = 1_000_000
    parts = args.mode == "insight"
    print(f"\nJifen bench, insight (database bench_insight)\n  start: {machine()}", flush=True)
    consume_rate = rate = None
    pipe = None
    if parts:
        print("\n1. Raw Kafka: publish then read a throwaway topic with a bare consumer", flush=True)
        _, consume_rate = await kafka_baseline(settings.kafka, args.insight_entries)
        print(f"  consumed {consume_rate:,.0f} records/s")
        print(f"\n2. Insight: {args.insight_entries:,} ledger entries through an insight process of its own",
              flush=True)
        rate = await consume(settings, args.insight_entries, args.insight_members, args.seed, args.keep)
        print(f"  {rate:,.0f} entries/s")
        if args.insight_purchases:
            print("\n3. Pipeline: purchases → earn → ledger, with an insight consuming the same topics and without",
                  flush=True)
            pipe = await pipeline(settings, args.insight_purchases, args.keep)
    big = None
    if report_entries:
        print(f"\n4. Report: a programme with {report_entries:,} entries", flush=True)
        big = await report(settings, report_entries, args.insight_members * 2, args.seed, args.keep,
                           args.report_schema)

    print("\nResults")
    checks = []
    if consume_rate is not None:
        line("raw Kafka consume (getmany ≤ 5,000)", f"{consume_rate:,.0f} records/s")
        line("insight: entries consumed and projected", f"{rate:,.0f} entries/s",
             f"{ratio(rate, consume_rate)} of raw consume")
        checks.append((rate is not None and rate >= TARGET_PER_S, f"insight >= {TARGET_PER_S:,.0f} entries/s"))
    if pipe is not None:
        _, with_rate, without_rate = pipe
        line("pipeline without insight", f"{without_rate:,.0f} purchases/s")
        line("pipeline with insight", f"{with_rate:,.0f} purchases/s",
             f"{ratio(with_rate, without_rate)} of without")
        checks.append((with_rate >= (1 - TARGET_PIPELINE_COST) * without_rate,
                       f"pipeline with insight >= {1 - TARGET_PIPELINE_COST:.0%} of without"))
    if big is not None:
        seed_rate, reads, totals = big
        if seed_rate is not None:
            line("seeding through the handler", f"{seed_rate:,.0f} entries/s")
        size = f"schema {args.report_schema}" if args.report_schema else f"{report_entries:,} entries"
        print(f"\n  {'read, ' + size:<44} {'first ms':>9} "
              f"{'median ms':>10} {'status':>7}")
        for r in reads:
            print(f"  {r.what:<44} {r.first_ms:>9.1f} {r.median_ms:>10.1f} {r.status:>7}")
        print(f"  {'jifen report: the five reads (30 days)':<44} {totals[0] * 1000:>9.1f}")
        print(f"  {'jifen report: the five reads (a full year)':<44} {totals[1] * 1000:>9.1f}")
        checks.append((totals[0] < TARGET_REPORT_S, f"jifen report's reads (its default 30 days) < "
                                                    f"{TARGET_REPORT_S:.0f} s"))
        checks.append((totals[1] < TARGET_REPORT_S, f"a full year's report < {TARGET_REPORT_S:.0f} s"))
    print("\nTargets")
    for ok, what in checks:
        print(f"  {verdict(ok)}  {what}")
    print(f"\n  end: {machine()}\n")
    return 0

