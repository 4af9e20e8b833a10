"""Insight through Kafka, with earn, the ledger and insight as processes, on one feed: purchases (with duplicates and
malformed records) earn, then redemptions spend; insight, killed with SIGKILL mid-feed, loses and doubles nothing
(its liability closes at the ledger's outstanding, its issued and redeemed are the ledger's); `jifen insight rebuild`
answers exactly what the live service answered; and a rebuild while the live service lags behind leaves nothing for
it to apply twice."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from services.insight import repository
from services.insight.handlers import ANNOUNCED, INBOUND
from shared.contracts import topics
from shared.contracts.ledger_commands import Cause, PostDebit
from shared.kafka import client_options
from shared.simulation import build_feed, publish, purchase_event
from tests.support import STRUCTURED, ServiceProcess, World, jifen, send, send_commands, wait_for

pytestmark = pytest.mark.e2e
PAST = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
REDEEM = 7  # points each of the first members spends, once the feed has earned them


async def projected(world: World) -> int:
    """Earn entries insight has summed so far (read straight from its table, only to time the kill)."""
    conn = await world.db()
    try:
        if not await conn.fetchval("SELECT to_regclass('insight.day_facts') IS NOT NULL"):
            return 0
        return int(await conn.fetchval("SELECT coalesce(sum(n), 0) FROM insight.day_facts WHERE metric = 'in:earn'"))
    finally:
        await conn.close()


def _ledger(ledger: ServiceProcess) -> dict[str, int]:
    status, summary = ledger.get("/v1/programs/default/summary")
    assert status == 200, summary
    return {"issued": summary["issued"], "redeemed": summary["redeemed"], "outstanding": summary["outstanding"]}


def totals(ledger: ServiceProcess, insight: ServiceProcess) -> tuple[dict[str, int], dict[str, int]]:
    """The ledger's summary and insight's liability, as (issued, redeemed, outstanding or closing)."""
    status, liability = insight.get("/v1/programs/default/liability")
    assert status == 200, liability
    return (_ledger(ledger),
            {"issued": sum(m["issued"] for m in liability["months"]),
             "redeemed": sum(m["redeemed"] for m in liability["months"]), "outstanding": liability["closing"]})


def answers(insight: ServiceProcess) -> dict[str, Any]:
    found = {}
    for path in ("kpis", "kpis?granularity=week", "liability", "leaderboard?limit=1000", "cohorts", "segments"):
        status, body = insight.get(f"/v1/programs/default/{path}")
        assert status == 200, (path, body)
        found[path] = body
    return found


async def ends(world: World, names: list[str]) -> dict[TopicPartition, int]:
    """Each partition of the topics with its end offset."""
    admin = AIOKafkaAdminClient(**client_options(world.infra.bootstrap))
    consumer = AIOKafkaConsumer(**client_options(world.infra.bootstrap), group_id=None, enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    try:
        described = await admin.describe_topics(names)
        partitions = [TopicPartition(t["topic"], p["partition"]) for t in described for p in t["partitions"]]
        return dict(await consumer.end_offsets(partitions))
    finally:
        await consumer.stop()
        await admin.close()


async def caught_up(world: World) -> bool:
    """Insight's consumer group has committed every record of its topics."""
    names = [world.topic(t) for t in dict.fromkeys(topics.channel_of(c).topic for c in [*ANNOUNCED, *INBOUND])]
    last = await ends(world, names)
    admin = AIOKafkaAdminClient(**client_options(world.infra.bootstrap))
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(world.topic("jifen-insight"))
    finally:
        await admin.close()
    return all(tp in committed and committed[tp].offset >= end for tp, end in last.items() if end > 0)


async def test_insight_survives_kill_9_and_rebuilds_to_the_same_answers(world: World) -> None:
    feed = build_feed(4000, run_id="ins", now=PAST, members=400, duplicate_every=50, malformed_every=100)
    ledger, _earn = await world.start_ledger_and_earn()
    insight = await world.service("insight").start().ready()
    conn = await world.db()
    try:
        tables = {r[0] for r in await conn.fetch("SELECT table_name FROM information_schema.tables "
                                                 "WHERE table_schema = 'insight'")}
    finally:
        await conn.close()
    # A table `repository.clear` does not know would keep the old rows under a rebuild's replay. The archive is no
    # projection: a rebuild neither clears nor replays it.
    assert tables - {"inbox", "outbox", "schema_migrations", "archive_chunks"} == set(repository.TABLES)

    # --- kill -9 mid-feed: nothing lost, nothing doubled ---------------------------------------------------------
    sending = asyncio.create_task(publish(feed, world.infra.bootstrap, world.topic(topics.PURCHASES), rate=2000))
    await wait_for(lambda: _at_least(world, 600), timeout=60, what="insight to be under way")
    insight.kill9()
    seen_at_kill = await projected(world)
    insight.start()
    await sending

    async def earned() -> bool:
        return _ledger(ledger)["issued"] == feed.expected_points

    await wait_for(earned, timeout=60, what="the ledger to credit the feed")  # so that the redemptions are covered
    spenders = sorted(feed.members)[:150]
    await send_commands(world, *(PostDebit(
        idempotency_key=f"test-redeem:{m}", program_id="default", member_id=m, amount=REDEEM,
        cause=Cause(source_event_id=f"test://redeem/{m}", reason="test"), occurred_at=PAST + timedelta(minutes=5))
        for m in spenders))
    expected = {"issued": feed.expected_points, "redeemed": REDEEM * len(spenders),
                "outstanding": feed.expected_points - REDEEM * len(spenders)}
    await insight.ready()

    async def settled() -> bool:
        of_ledger, of_insight = totals(ledger, insight)
        return of_ledger == expected and of_insight == expected

    await wait_for(settled, timeout=120, what="the ledger and insight to account for the whole feed")
    assert 0 < seen_at_kill < feed.expected_credits, "the kill should land in the middle of the feed"
    await asyncio.sleep(2)  # a late duplicate would show up now
    assert totals(ledger, insight) == (expected, expected)

    # --- rebuild while the live service runs: the same answers ---------------------------------------------------
    status, _ = insight.request("PUT", f"/v1/programs/default/members/{spenders[0]}/leaderboard", {"opt_out": True})
    assert status == 200
    live = answers(insight)
    assert spenders[0] not in {m["member_id"] for m in live["leaderboard?limit=1000"]["members"]}
    code, out, err = await jifen("insight", "rebuild", "--program", "default", "--database-url", world.database_url,
                                 "--kafka-bootstrap", world.infra.bootstrap, "--topic-prefix", world.prefix)
    assert code == 0, out + err
    applied = feed.kinds["valid"] + feed.expected_credits + len(spenders)  # purchases, earn and redeem entries
    assert f"{applied:,} events of default applied once each ({feed.kinds['duplicate']:,} duplicates" in out, out
    assert answers(insight) == live

    # --- rebuild while the live service is behind: what it applied, the live service does not apply again ------
    await asyncio.to_thread(insight.stop)
    late = [(f"late-{n % 7}", purchase_event(f"late-{n}", "pos://store-1", PAST + timedelta(minutes=10),
                                             f"late-{n % 7}", f"late-order-{n}", Decimal("123.45"), []))
            for n in range(40)]
    await send(world.infra.bootstrap, world.topic(topics.PURCHASES),
               [(member.encode(), orjson.dumps(event), STRUCTURED) for member, event in late])
    expected = {k: v + (40 * 123 if k in ("issued", "outstanding") else 0) for k, v in expected.items()}

    entries = feed.expected_credits + len(spenders) + len(late)

    async def published() -> bool:
        return sum((await ends(world, [world.topic(topics.LEDGER_ENTRIES)])).values()) >= entries

    await wait_for(published, timeout=60, what="the ledger to post and publish the late purchases' entries")
    code, out, err = await jifen("insight", "rebuild", "--program", "default", "--database-url", world.database_url,
                                 "--kafka-bootstrap", world.infra.bootstrap, "--topic-prefix", world.prefix)
    assert code == 0, out + err
    insight.start()
    await insight.ready()
    await wait_for(lambda: caught_up(world), timeout=60, what="insight's group to catch up")
    assert totals(ledger, insight) == (expected, expected)


async def _at_least(world: World, n: int) -> bool:
    return await projected(world) >= n
