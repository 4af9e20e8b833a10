"""`jifen bench --mode tiers`: how fast the tiers service consumes the ledger's entries, beside a bare consumer
reading the same number of records in the same run.

The bench preloads earn credits (`jifen.ledger.entry.posted.v1`, for the default programme's points-earned tiers)
onto topics of its own (prefix `bench.<run>.`), starts a tiers process of its own on them (schema
`bench_tiers_<run>`, a free port, its own consumer group) and times it from its first stored contribution to the
last. The stack's services are not touched; the run's topics and schema are dropped afterwards unless `--keep`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from bench.baselines import BenchError, kafka_baseline, line, machine, ratio, verdict
from bench.probes import PrivateTiers
from deploy.local.infra import REPO, create_topics
from shared import db, envelope, keys
from shared.contracts import topics
from shared.contracts.ledger_entries import PointsEntryPosted
from shared.kafka import Cluster, client_options
from shared.settings import Settings

TARGET_PER_S = 10_000.0
PARTITIONS = 6
TIMEOUT_S = 900.0


def entries(count: int, members: int, seed: int) -> list[tuple[bytes, bytes]]:
    """Earn credits as the ledger publishes them, spread over the last 11 months, so members climb through the
    default programme's levels."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    out = []
    for n in range(count):
        member = f"b-{rng.randrange(members):06d}"
        at = now - timedelta(minutes=rng.randrange(11 * 30 * 24 * 60))
        data = {"entry_id": n + 1, "program_id": "default", "member_id": member, "seq": n + 1,
                "amount": rng.randint(20, 400), "balance_after": 0, "kind": "earn",
                "idempotency_key": keys.earn_credit(f"bench|{n}", "base"), "cause": {"source_event_id": f"bench|{n}"},
                "occurred_at": at.isoformat(), "posted_at": now.isoformat(), "hash": "00"}
        out.append((member.encode(), envelope.encode(keys.posted_event(n + 1), "jifen.ledger", PointsEntryPosted.TYPE,
                                                     now, data)))
    return out


async def preload(bootstrap: Cluster | str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(**client_options(bootstrap), enable_idempotence=True, linger_ms=10,
                                max_batch_size=512 * 1024)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key, headers=envelope.STRUCTURED_HEADERS)
                   for key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def run_tiers_bench(args: argparse.Namespace) -> int:
    settings = Settings()
    count, members = args.tier_entries, args.tier_members
    run = uuid.uuid4().hex[:8]
    prefix, schema = f"bench.{run}.", f"bench_tiers_{run}"
    print(f"\nJifen bench, tiers: {count:,} earn credits of {members:,} members through a tiers process of its own")
    print(f"  start: {machine()}", flush=True)
    print("\n1. Raw Kafka: publish then read a throwaway topic with a bare consumer", flush=True)
    _, consume_rate = await kafka_baseline(settings.kafka, count)
    print(f"  consumed {consume_rate:,.0f} records/s")
    await create_topics(settings.kafka, topics.all_topics(prefix), PARTITIONS)
    tiers = PrivateTiers(settings, prefix, schema, REPO / ".run" / "logs" / f"bench-tiers-{run}.log",
                         JIFEN_REVIEW_INTERVAL_S="86400")
    conn = await db.connect(settings.asyncpg_dsn)
    try:
        print(f"\n2. Preloading {count:,} entries onto {prefix}{topics.LEDGER_ENTRIES}", flush=True)
        await preload(settings.kafka, f"{prefix}{topics.LEDGER_ENTRIES}", entries(count, members, args.seed))
        print("\n3. Tiers: from its first stored contribution to the last", flush=True)
        await tiers.start()
        seconds = await _consumed(conn, schema, count, tiers)
        counts = await conn.fetch(f"SELECT tier, count(*) AS n FROM {schema}.members GROUP BY tier ORDER BY n DESC")
    finally:
        await tiers.stop()
        if not args.keep:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            await _drop_topics(settings.kafka, topics.all_topics(prefix))
        await conn.close()
    rate = count / seconds if seconds > 0 else None
    print("\nResults")
    line("raw Kafka consume (getmany ≤ 5,000)", f"{consume_rate:,.0f} records/s")
    line("tiers: entries consumed and projected", f"{rate:,.0f} entries/s" if rate else "n/a",
         f"{ratio(rate, consume_rate)} of raw consume")
    tiers_line = ", ".join(f"{r['tier']} {r['n']:,}" for r in counts)
    print(f"  members per tier: {tiers_line}")
    print("\nTargets")
    print(f"  {verdict(rate is not None and rate >= TARGET_PER_S)}  tiers >= {TARGET_PER_S:,.0f} entries/s")
    print(f"\n  end: {machine()}\n")
    return 0


async def _consumed(conn: asyncpg.Connection, schema: str, count: int, tiers: PrivateTiers) -> float:
    deadline = time.monotonic() + TIMEOUT_S
    first: float | None = None
    reported = time.monotonic()
    while True:
        tiers.check_alive("while consuming")
        stored = 0
        with contextlib.suppress(asyncpg.UndefinedTableError):
            stored = int(await conn.fetchval(f"SELECT count(*) FROM {schema}.contributions"))
        now = time.monotonic()
        if stored and first is None:
            first = now
        if stored >= count:
            assert first is not None
            return now - first
        if now > deadline:
            raise BenchError(f"tiers stored {stored:,} of {count:,} contributions in {TIMEOUT_S:.0f}s; see "
                             f"{tiers.log_file}")
        if now - reported > 5:
            reported = now
            rate = stored / (now - first) if first and now > first else 0
            print(f"    {stored:>9,}/{count:,} contributions  {rate:8,.0f}/s", flush=True)
        await asyncio.sleep(0.2)


async def _drop_topics(bootstrap: Cluster | str, names: list[str]) -> None:
    admin = AIOKafkaAdminClient(**client_options(bootstrap))
    await admin.start()
    try:
        await admin.delete_topics(names)
    except Exception as exc:  # cleanup: a topic left behind is named, not fatal
        print(f"  (could not delete the bench's topics: {exc})")
    finally:
        await admin.close()



