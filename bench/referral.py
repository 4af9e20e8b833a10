"""`jifen bench --mode referral`: how many referral and purchase events a second the referral service handles, set
beside a raw Kafka consume of the same number of records measured in the same run.

It runs against a running stack: the referral service on its port (8105, or `JIFEN_HTTP_PORT`), Kafka, PostgreSQL
and the topic prefix from the usual settings (`JIFEN_KAFKA_BOOTSTRAP`, `JIFEN_DATABASE_URL`, `JIFEN_TOPIC_PREFIX`),
the service's tables in its schema (`referral`, or `JIFEN_SCHEMA_NAME`). Two phases, each timed from the first send
until the service's tables hold its effects:

1. referrals: `--referrals` accepted referrals (five referees a referrer), until every one is stored and judged;
2. purchases: `--referral-purchases` purchases, of which one per referee qualifies its referral (the rest are other
   members' shopping, most of what a referral service reads), until every purchase is stored and every referral
   rewarded.

The stack's earn and ledger read the same purchases (and the ledger the rewards), so the figures are those of the
referral service sharing the machine with them, as it does in production. Every id carries the run's id, so runs
do not meet; nothing is deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson

from bench.baselines import CONSUME_MAX_RECORDS, BenchError, kafka_baseline, line, machine, ratio
from deploy.local.stack import http_ok
from services.referral.settings import ReferralSettings
from shared import db
from shared.contracts import topics
from shared.contracts.referrals import ReferralAccepted
from shared.envelope import encode
from shared.simulation import STRUCTURED, Feed, Message, publish, purchase_event

POLL_S = 0.5
PROGRESS_S = 5.0
TIMEOUT_S = 15 * 60.0
REFEREES_PER_REFERRER = 5  # under the default programme's velocity (10 a week) and cap (20 a year)


@dataclass(frozen=True)
class Phase:
    events: int
    seconds: float

    @property
    def per_s(self) -> float:
        return self.events / self.seconds


def referral_feed(run_id: str, count: int, at: datetime) -> Feed:
    feed = Feed()
    for i in range(count):
        referee, referrer = f"{run_id}-e{i}", f"{run_id}-r{i // REFEREES_PER_REFERRER}"
        value = encode(f"{run_id}-accept-{i}", f"bench://{run_id}", ReferralAccepted.TYPE, at, {
            "referrer_member_id": referrer, "referee_member_id": referee})
        feed.messages.append(Message(referee.encode(), value, STRUCTURED, "valid", member_id=referee))
    return feed


def purchase_feed(run_id: str, referees: int, count: int, at: datetime) -> Feed:
    """One qualifying purchase per referee, spread through `count` purchases of other members."""
    feed = Feed()
    every = max(1, count // max(referees, 1))
    referee = 0
    for n in range(count):
        if referee < referees and n % every == 0:
            member, total = f"{run_id}-e{referee}", Decimal("60.00")
            referee += 1
        else:
            member, total = f"{run_id}-m{n % 5000}", Decimal(10 + n % 90)
        order = f"{run_id}-o{n}"
        event = purchase_event(order, f"bench://{run_id}", at, member, order, total, [])
        feed.messages.append(Message(member.encode(), orjson.dumps(event), STRUCTURED, "valid", member_id=member))
    return feed


async def timed(feed: Feed, settings: ReferralSettings, topic: str,
                done: Callable[[], Awaitable[tuple[bool, str]]]) -> Phase:
    """Send the feed flat out; seconds from the first send until `done` says every effect is stored."""
    started = time.monotonic()
    sender = asyncio.create_task(publish(feed, settings.kafka, settings.topic(topic)))
    last = started
    while True:
        finished, said = await done()
        now = time.monotonic()
        if finished:
            await sender
            return Phase(len(feed.messages), now - started)
        if sender.done():
            sender.result()  # a failed send would otherwise look like a slow service until the timeout
        if now - started > TIMEOUT_S:
            sender.cancel()
            raise BenchError(f"timed out after {TIMEOUT_S:.0f}s with {said}; see the referral service's log")
        if now - last >= PROGRESS_S:
            print(f"    {now - started:6.1f}s  {said}  load {os.getloadavg()[0]:.2f}", flush=True)
            last = now
        await asyncio.sleep(POLL_S)


async def run_referral_bench(args: argparse.Namespace) -> int:
    settings = ReferralSettings()
    referrals = int(getattr(args, "referrals", 10_000))
    purchases = max(int(getattr(args, "referral_purchases", 50_000)), referrals)
    schema = settings.schema_name
    port = settings.http_port
    print(f"\nJifen bench, referral: {referrals:,} referrals, then {purchases:,} purchases ({referrals:,} of them "
          f"qualifying), against the referral service on :{port}")
    print(f"  start: {machine()}", flush=True)
    if not await asyncio.to_thread(http_ok, f"http://127.0.0.1:{port}/health/ready"):
        print(f"  ✘ the referral service is not ready on :{port}; start the stack (`make up`) or set JIFEN_HTTP_PORT")
        return 1

    print("\n1. Raw Kafka: publish then read a throwaway topic with a bare consumer", flush=True)
    _, consume_rate = await kafka_baseline(settings.kafka, purchases)
    print(f"  consumed {consume_rate:,.0f} records/s")

    run_id = f"rb{uuid.uuid4().hex[:8]}"
    at = datetime.now(UTC) - timedelta(hours=1)  # referrals first, purchases a little later: both in the past
    conn = await db.connect(settings.asyncpg_dsn, schema)
    try:
        async def judged() -> tuple[bool, str]:
            n = await conn.fetchval("SELECT count(*) FROM referrals WHERE referrer_id LIKE $1 AND status <> 'new'",
                                    f"{run_id}-%")
            return n >= referrals, f"{n:>9,}/{referrals:,} referrals judged"

        print(f"\n2. Referrals: {referrals:,} accepted referrals ({run_id}), sent flat out", flush=True)
        first = await timed(referral_feed(run_id, referrals, at), settings, topics.REFERRALS, judged)
        print(f"  {first.events:,} referral events in {first.seconds:.1f}s")

        async def rewarded() -> tuple[bool, str]:
            stored = await conn.fetchval("SELECT count(*) FROM purchases WHERE order_id LIKE $1", f"{run_id}-%")
            paid = await conn.fetchval("SELECT count(*) FROM referrals WHERE referrer_id LIKE $1 "
                                       "AND status = 'rewarded'", f"{run_id}-%")
            return (stored >= purchases and paid >= referrals,
                    f"{stored:>9,}/{purchases:,} purchases stored, {paid:,}/{referrals:,} referrals rewarded")

        print(f"\n3. Purchases: {purchases:,} purchases, {referrals:,} of them qualifying, sent flat out", flush=True)
        second = await timed(purchase_feed(run_id, referrals, purchases, at + timedelta(minutes=30)), settings,
                             topics.PURCHASES, rewarded)
        print(f"  {second.events:,} purchase events in {second.seconds:.1f}s, {referrals:,} referrals rewarded")
    except BenchError as exc:
        print(f"  ✘ {exc}")
        return 1
    finally:
        await conn.close()

    print("\nResults")
    line(f"raw Kafka consume (getmany ≤ {CONSUME_MAX_RECORDS:,})", f"{consume_rate:,.0f} records/s")
    line("referral events handled", f"{first.per_s:,.0f} events/s",
         f"{ratio(first.per_s, consume_rate)} of raw consume")
    line("purchase events handled", f"{second.per_s:,.0f} events/s",
         f"{ratio(second.per_s, consume_rate)} of raw consume")
    line("  of which referrals rewarded", f"{referrals / second.seconds:,.0f} rewards/s")
    print("  Each phase runs from the first send to the moment the service's tables hold every event's effect, so\n"
          "  it includes the producer's time; the stack's earn and ledger share the machine and the purchases.")
    print(f"\n  end: {machine()}\n")
    return 0
