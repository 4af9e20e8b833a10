"""`jifen bench` (pipeline mode): the purchase → earn → ledger pipeline's throughput and latency, set against raw
Kafka and raw PostgreSQL baselines measured on the same machine in the same run."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer

from bench.baselines import (
    CONSUME_MAX_RECORDS,
    INSERT_BATCH,
    RUN_TIMEOUT_S,
    kafka_baseline,
    line,
    machine,
    postgres_baseline,
    purchases,
    ratio,
    verdict,
)
from shared import db
from shared.contracts import topics
from shared.kafka import Cluster, client_options
from shared.settings import Settings
from shared.simulation import Feed, publish

POLL_S = 0.5
PROGRESS_S = 5.0
SETTLE_TIMEOUT_S = 300.0

TARGET_E2E_PER_S = 5000.0
TARGET_P99_MS = 250.0
TARGET_P99_RATE = 1000.0
TARGET_LEDGER_SHARE = 0.40




@dataclass
class Throughput:
    purchases: int
    entries: int
    seconds: float
    send_seconds: float
    ledger_span_s: float  # max(posted_at) - min(posted_at)
    ledger_batches: int  # distinct posted_at stamps: one per ledger batch

    @property
    def per_s(self) -> float:
        """Purchases per second, end to end."""
        return self.purchases / self.seconds

    @property
    def entries_per_s(self) -> float:
        return self.entries / self.seconds

    @property
    def ledger_per_s(self) -> float | None:
        return self.entries / self.ledger_span_s if self.ledger_span_s > 0 else None


@dataclass
class Latency:
    entries: int
    offered: float
    achieved: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    min_ms: float


async def last_entry_id(conn: asyncpg.Connection) -> int:
    # Polls look only above this id: a range scan on the PK instead of a scan of the whole ledger every 0.5 s.
    return int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM ledger.entries"))


async def wait_for_entries(conn: asyncpg.Connection, run_id: str, after_id: int, expected: int,
                           started: float, sender: asyncio.Task[float]) -> float | None:
    """Seconds from `started` until the ledger holds `expected` entries for the run; None on timeout."""
    pattern = f"sim://{run_id}/%"
    last_print, last_count = started, 0
    while True:
        count = await conn.fetchval(
            "SELECT count(*) FROM ledger.entries WHERE id > $1 AND source_event_id LIKE $2",
            after_id, pattern)
        now = time.monotonic()
        if count >= expected:
            return now - started
        if sender.done():
            sender.result()  # a failed send would otherwise look like a slow pipeline until the timeout
        if now - started > RUN_TIMEOUT_S:
            print(f"    ✘ timed out after {RUN_TIMEOUT_S:.0f}s with {count:,} of {expected:,} entries; "
                  "see .run/logs/")
            return None
        if now - last_print >= PROGRESS_S:
            recent = (count - last_count) / (now - last_print)
            overall = count / (now - started)
            print(f"    {now - started:6.1f}s  {count:>9,}/{expected:,} entries  {overall:8,.0f}/s overall  "
                  f"{recent:8,.0f}/s last {now - last_print:.0f}s  load {os.getloadavg()[0]:.2f}", flush=True)
            last_print, last_count = now, count
        await asyncio.sleep(POLL_S)


async def settle(conn: asyncpg.Connection) -> None:
    """Wait for both services' outboxes to empty, so a run does not queue behind the previous run's tail, and
    for autovacuum to finish the tables the previous run filled: on 2 cores a vacuum of the ledger's tables
    takes a core for a minute or more, which a latency run would otherwise measure."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    said: set[str] = set()
    while time.monotonic() < deadline:
        backlog = await conn.fetchval(
            "SELECT (SELECT count(*) FROM earn.outbox) + (SELECT count(*) FROM ledger.outbox)")
        vacuuming = {r["name"] for r in await conn.fetch(
            """SELECT n.nspname || '.' || c.relname AS name FROM pg_stat_progress_vacuum v
               JOIN pg_class c ON c.oid = v.relid JOIN pg_namespace n ON n.oid = c.relnamespace""")}
        if not backlog and not vacuuming:
            return
        if vacuuming - said:
            print(f"    waiting for autovacuum of {', '.join(sorted(vacuuming - said))}", flush=True)
            said |= vacuuming
        await asyncio.sleep(POLL_S)
    print(f"    (outboxes or autovacuum still busy after {SETTLE_TIMEOUT_S:.0f}s; carrying on)")


async def throughput(settings: Settings, conn: asyncpg.Connection, count: int,
                     entries_of: Callable[[Feed], int] | None = None) -> Throughput | None:
    """Send `count` purchases flat out and time them until the ledger holds every entry they cause: one each
    (the base rule), or `entries_of(feed)` when the programme pays several credits per purchase."""
    run_id = f"bench{uuid.uuid4().hex[:8]}"
    feed = purchases(count, run_id)
    expected = entries_of(feed) if entries_of else feed.expected_credits
    print(f"  run {run_id}: {count:,} purchases ({expected:,} ledger entries expected), sent flat out", flush=True)
    after_id = await last_entry_id(conn)
    # The clock includes the producer's connection (tens of ms), which publish opens before its first send.
    started = time.monotonic()
    sender = asyncio.create_task(publish(feed, settings.kafka, settings.topic(topics.PURCHASES)))
    took = await wait_for_entries(conn, run_id, after_id, expected, started, sender)
    if took is None:
        sender.cancel()
        return None
    send_s = await sender
    row = await conn.fetchrow(
        """SELECT count(*) AS n, min(posted_at) AS first, max(posted_at) AS last,
                  count(DISTINCT posted_at) AS batches
           FROM ledger.entries WHERE id > $1 AND source_event_id LIKE $2""", after_id, f"sim://{run_id}/%")
    return Throughput(len(feed.messages), row["n"], took, send_s, (row["last"] - row["first"]).total_seconds(),
                      row["batches"])


async def publish_stamped(feed: Feed, bootstrap: Cluster | str, topic: str, rate: float) -> float:
    """shared.simulation.publish at a rate, except that each event's `time` is the moment it is handed to the
    producer, so posted_at - occurred_at is the pipeline's latency. Returns the seconds sending took."""
    producer = AIOKafkaProducer(**client_options(bootstrap), enable_idempotence=True, acks="all", linger_ms=5)
    await producer.start()
    try:
        started = time.monotonic()
        pending = []
        for i, message in enumerate(feed.messages):
            ahead = started + i / rate - time.monotonic()
            if ahead > 0.001:
                await asyncio.sleep(ahead)
            event = orjson.loads(message.value)
            event["time"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            pending.append(await producer.send(topic, orjson.dumps(event), key=message.key,
                                               headers=message.headers))
        await asyncio.gather(*pending)
        return time.monotonic() - started
    finally:
        await producer.stop()


async def latency(settings: Settings, conn: asyncpg.Connection, count: int, rate: float) -> Latency | None:
    run_id = f"bench{uuid.uuid4().hex[:8]}"
    feed = purchases(count, run_id)
    print(f"  run {run_id}: {count:,} purchases at {rate:,.0f}/s offered", flush=True)
    after_id = await last_entry_id(conn)
    # The sender stamps each event as it hands it over: a full collection in this process (which holds the feeds
    # of the earlier runs) would hold stamped events back and count as the pipeline's latency.
    gc.collect()
    gc.freeze()
    try:
        started = time.monotonic()
        sender = asyncio.create_task(
            publish_stamped(feed, settings.kafka, settings.topic(topics.PURCHASES), rate))
        if await wait_for_entries(conn, run_id, after_id, feed.expected_credits, started, sender) is None:
            sender.cancel()
            return None
        send_s = await sender
    finally:
        gc.unfreeze()
    row = await conn.fetchrow(
        """SELECT count(*) AS n, percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY lag_ms) AS pct,
                  max(lag_ms) AS worst, min(lag_ms) AS best
           FROM (SELECT extract(epoch FROM posted_at - occurred_at)::float8 * 1000 AS lag_ms
                 FROM ledger.entries WHERE id > $1 AND source_event_id LIKE $2) AS run""",
        after_id, f"sim://{run_id}/%")
    p50, p90, p99 = row["pct"]
    return Latency(row["n"], rate, len(feed.messages) / send_s, p50, p90, p99, row["worst"], row["best"])


async def run_pipeline_bench(args: argparse.Namespace) -> int:
    settings = Settings()
    print(f"\nJifen bench: {args.count:,} purchases for throughput, {args.latency_count:,} at "
          f"{args.rate:,.0f}/s for latency")
    print(f"  start: {machine()}", flush=True)

    print("\n1. Raw Kafka: publish then read a throwaway topic with a bare consumer", flush=True)
    produce_rate, consume_rate = await kafka_baseline(settings.kafka, args.count)
    print(f"  produced {produce_rate:,.0f} records/s (simulator publish), "
          f"consumed {consume_rate:,.0f} records/s")

    print(f"\n2. Raw PostgreSQL: {INSERT_BATCH:,}-row inserts into a copy of ledger.entries "
          "(no FKs, no triggers)", flush=True)
    insert_rate = await postgres_baseline(settings.asyncpg_dsn, args.count)
    print(f"  inserted {insert_rate:,.0f} rows/s")

    conn = await db.connect(settings.asyncpg_dsn)
    try:
        await settle(conn)
        print("\n3. End to end: purchases → earn → ledger, from the first send to the last entry", flush=True)
        e2e = await throughput(settings, conn, args.count)
        if e2e is not None:
            print(f"  {e2e.entries:,} entries in {e2e.seconds:.1f}s ({e2e.per_s:,.0f} purchases/s); sending "
                  f"took {e2e.send_seconds:.1f}s; the ledger applied them in {e2e.ledger_batches:,} batches")
        await settle(conn)
        print("\n4. Latency: each event's time is its send time; latency is posted_at - occurred_at",
              flush=True)
        lat = await latency(settings, conn, args.latency_count, args.rate)
    finally:
        await conn.close()

    ledger_rate = e2e.ledger_per_s if e2e else None
    print("\nResults")
    line(f"raw Kafka consume (getmany ≤ {CONSUME_MAX_RECORDS:,})", f"{consume_rate:,.0f} records/s")
    line("raw Kafka produce (simulator publish)", f"{produce_rate:,.0f} records/s")
    line(f"raw PostgreSQL insert ({INSERT_BATCH:,}-row statements)", f"{insert_rate:,.0f} rows/s")
    if e2e is not None:
        line("end to end", f"{e2e.per_s:,.0f} purchases/s",
             f"{ratio(e2e.per_s, consume_rate)} of raw consume")
        line("ledger apply (entries / posted_at span)",
             f"{ledger_rate:,.0f} entries/s" if ledger_rate else "n/a (one batch)",
             f"{ratio(ledger_rate, insert_rate)} of raw insert")
        print("    (what the ledger achieved in this run, so it understates its capacity when earn is the\n"
              "     bottleneck; span: first batch's stamp to the last's, so without the last batch)")
    else:
        line("end to end", "timed out")
    if lat is not None:
        line(f"latency at {lat.offered:,.0f}/s offered", f"{lat.achieved:,.0f}/s achieved",
             f"{lat.entries:,} entries")
        for name, ms in (("p50", lat.p50_ms), ("p90", lat.p90_ms), ("p99", lat.p99_ms), ("max", lat.max_ms),
                         ("min", lat.min_ms)):
            line(f"  {name}", f"{ms:,.0f} ms")
    else:
        line("latency", "timed out")
    print("  posted_at is the ledger's clock as it starts applying a batch: inside the batch's transaction,\n"
          "  before its inserts and commit. occurred_at is the purchase's CloudEvents time (same clock).")

    at_rate = "" if args.rate == TARGET_P99_RATE else f", but this run offered {args.rate:,.0f}/s"
    print("\nTargets")
    print(f"  {verdict(e2e is not None and e2e.per_s >= TARGET_E2E_PER_S)}  end to end >= "
          f"{TARGET_E2E_PER_S:,.0f} purchases/s ({f'{e2e.per_s:,.0f}/s' if e2e else 'timed out'})")
    print(f"  {verdict(lat is not None and lat.p99_ms <= TARGET_P99_MS)}  p99 <= {TARGET_P99_MS:.0f} ms at "
          f"{TARGET_P99_RATE:,.0f}/s offered ({f'{lat.p99_ms:,.1f} ms' if lat else 'timed out'}{at_rate})")
    ledger_ok = ledger_rate is not None and ledger_rate >= TARGET_LEDGER_SHARE * insert_rate
    print(f"  {verdict(ledger_ok)}  ledger insert rate >= {TARGET_LEDGER_SHARE:.0%} of raw insert "
          f"({ratio(ledger_rate, insert_rate)})")
    print(f"\n  end: {machine()}\n")
    return 0 if e2e is not None and lat is not None else 1
