"""What the bench measures Jifen against, on the same machine in the same run: raw Kafka produce and consume, raw
PostgreSQL inserts, and the machine's load. Every mode's report sets its figures beside these."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from deploy.local.infra import create_topics
from shared import db, keys
from shared.kafka import Cluster, client_options
from shared.simulation import Feed, build_feed, publish

RAW_PARTITIONS = 6  # as the pipeline's own topics
CONSUME_MAX_RECORDS = 5000
INSERT_BATCH = 2000  # the ledger's batch_max_records
RUN_TIMEOUT_S = 30 * 60


class BenchError(RuntimeError):
    """The bench could not measure; the message says why and where to look."""

# A multi-row insert of rows shaped as the ledger's entries (the ledger itself writes them with COPY: see
# services/ledger/repository/books.py `store`): the raw baseline the ledger's rate is quoted against.
ENTRY_COLUMNS = ("program_id, account_id, seq, from_account_id, to_account_id, amount, balance_after, "
                 "kind, command_key, source_event_id, rule_id, rule_version, reason, details, occurred_at, "
                 "posted_at, prev_hash, hash")
RAW_INSERT = f"""INSERT INTO bench.bench_raw_entries ({ENTRY_COLUMNS})
    SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[],
                         $6::bigint[], $7::bigint[], $8::text[], $9::text[], $10::text[], $11::text[],
                         $12::int[], $13::text[], $14::jsonb[], $15::timestamptz[], $16::timestamptz[],
                         $17::bytea[], $18::bytea[])"""


def machine() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}, nproc {len(os.sched_getaffinity(0))}"


def purchases(count: int, run_id: str) -> Feed:
    return build_feed(count, run_id=run_id, now=datetime.now(UTC), duplicate_every=0, malformed_every=0)


def ratio(value: float | None, baseline: float) -> str:
    return f"{value / baseline:.1%}" if value is not None and baseline > 0 else "n/a"


# --- baselines ---------------------------------------------------------------------------------------

async def kafka_baseline(bootstrap: Cluster | str, count: int) -> tuple[float, float]:
    """(produce, consume) records/s through a throwaway topic, with the simulator's messages."""
    topic = f"bench.raw.{uuid.uuid4().hex[:8]}"
    await create_topics(bootstrap, [topic], RAW_PARTITIONS)
    try:
        feed = purchases(count, f"raw{uuid.uuid4().hex[:6]}")
        produce_s = await publish(feed, bootstrap, topic)
        # No group: every partition from the start, and no offsets left behind.
        consumer = AIOKafkaConsumer(topic, **client_options(bootstrap), group_id=None,
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        try:
            read = 0
            started = time.monotonic()
            deadline = started + RUN_TIMEOUT_S
            while read < len(feed.messages) and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=1000, max_records=CONSUME_MAX_RECORDS)
                read += sum(len(records) for records in batches.values())
            consume_s = time.monotonic() - started
        finally:
            await consumer.stop()
        if read < len(feed.messages):
            raise RuntimeError(f"raw consumer read only {read:,} of {len(feed.messages):,} records")
        return len(feed.messages) / produce_s, read / consume_s
    finally:
        admin = AIOKafkaAdminClient(**client_options(bootstrap))
        await admin.start()
        try:
            await admin.delete_topics([topic])
        except Exception as exc:  # a leftover throwaway topic is harmless; say so and carry on
            print(f"    (could not delete {topic}: {exc!r})")
        finally:
            await admin.close()


def raw_entry_columns(count: int) -> list[list[Any]]:
    """`count` entries shaped like the ledger's earn credits (500 members, per-member seq and hash chain),
    column by column for unnest."""
    rng = random.Random(7)
    now = datetime.now(UTC)
    state: dict[int, tuple[int, int, bytes]] = {}  # account -> (seq, balance, last hash)
    rows = []
    for i in range(count):
        account = 2 + i % 500  # account 1 plays the programme's "issued" account
        seq, balance, prev = state.get(account, (0, 0, bytes(32)))
        amount = rng.randint(6, 600)
        digest = hashlib.sha256(prev + i.to_bytes(8, "big")).digest()
        state[account] = (seq + 1, balance + amount, digest)
        source = f"sim://bench/pos|bench-{i}"
        rule = {"rate": "1", "points": amount, "rule_id": "base", "rounding": "floor"}
        details = orjson.dumps({"rules": [rule], "total": f"{amount}.40", "currency": "CNY",
                                "order_id": f"bench-order-{i}"}).decode()
        rows.append(("default", account, seq + 1, 1, account, amount, balance + amount, "earn",
                     keys.earn_credit(source, "base"), source, "base", 1, "purchase", details,
                     now - timedelta(milliseconds=count - i), now, prev, digest))
    return [list(column) for column in zip(*rows, strict=True)]


async def postgres_baseline(dsn: str, count: int, template: str = "ledger.entries") -> float:
    """Rows/s for bare 2,000-row inserts, one transaction each, into a copy of `template` (the ledger's entries)."""
    conn = await db.connect(dsn)
    try:
        await conn.execute("CREATE SCHEMA IF NOT EXISTS bench")
        await conn.execute("DROP TABLE IF EXISTS bench.bench_raw_entries")
        # LIKE copies the columns, NOT NULLs, CHECKs, PK, UNIQUE (account_id, seq) and indexes but never FKs
        # or triggers; the id gets its own sequence rather than sharing (and advancing) the ledger's.
        await conn.execute(f"""CREATE TABLE bench.bench_raw_entries
                               (LIKE {template} INCLUDING CONSTRAINTS INCLUDING INDEXES)""")
        await conn.execute(
            "ALTER TABLE bench.bench_raw_entries ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY")
        columns = raw_entry_columns(count)  # built before the clock starts: only the database is timed
        started = time.monotonic()
        for lo in range(0, count, INSERT_BATCH):
            async with conn.transaction():
                await conn.execute(RAW_INSERT, *(column[lo:lo + INSERT_BATCH] for column in columns))
        took = time.monotonic() - started
        inserted = await conn.fetchval("SELECT count(*) FROM bench.bench_raw_entries")
        if inserted != count:
            raise RuntimeError(f"raw insert stored {inserted:,} of {count:,} rows")
        return count / took
    finally:
        await conn.execute("DROP TABLE IF EXISTS bench.bench_raw_entries")
        with contextlib.suppress(asyncpg.DependentObjectsStillExistError):
            await conn.execute("DROP SCHEMA IF EXISTS bench")  # only if nothing else lives there
        await conn.close()


# --- the pipeline ------------------------------------------------------------------------------------

# --- the report --------------------------------------------------------------------------------------

def line(label: str, value: str, note: str = "") -> None:
    print(f"  {label:<46}{value:>24}  {note}".rstrip())


def verdict(ok: bool) -> str:
    return "✔ met   " if ok else "✘ missed"


