"""Tiers through Kafka, with earn, the ledger and tiers as processes: purchases climb to gold and the next purchase
earns ×1.5 (the balance proves it); a refund of the crossing purchase undoes gold; reviews fall due at times given by
the events (a tier reached over a year ago is reviewed, one reached a year ago is warned first), not slept through;
and `jifen tiers rebuild` rebuilds exactly what the live service built."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
import pytest

from shared.contracts import topics
from shared.contracts.purchases import PurchaseRefunded
from shared.contracts.tiers import TierChanged, TierExpiring
from shared.simulation import purchase_event
from shared.testing import cloud_event
from tests.support import STRUCTURED, ServiceProcess, World, jifen, read_all, send, wait_for

pytestmark = pytest.mark.e2e
NOW = datetime.now(UTC).replace(microsecond=0)


def buy(event_id: str, member: str, total: str, at: datetime) -> tuple[bytes, bytes, Any]:
    body = purchase_event(event_id, "pos://store-1", at, member, f"order-{event_id}", Decimal(total), [])
    return member.encode(), orjson.dumps(body), STRUCTURED


async def tier_is(tiers: ServiceProcess, member: str, expected: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        status, body = tiers.get(f"/v1/programs/default/members/{member}/tier")
        return body if status == 200 and body["tier"] == expected else None

    found: dict[str, Any] = await wait_for(check, what=f"{member} to be {expected}")
    return found


async def lifetime(ledger: ServiceProcess, member: str, expected: int) -> None:
    async def check() -> bool:
        status, body = ledger.get(f"/v1/programs/default/members/{member}/balance")
        return status == 200 and body["lifetime_earned"] == expected

    await wait_for(check, what=f"{member}'s lifetime earned to be {expected}")


async def projection(dsn: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    conn = await asyncpg.connect(dsn, server_settings={"search_path": "tiers"})
    try:
        members = await conn.fetch("""SELECT member_id, tier, since, valid_until, manual, changes, warned_for
                                      FROM members WHERE program_id = 'default' ORDER BY member_id""")
        changes = await conn.fetch("""SELECT member_id, seq, at, tier, previous_tier, reason, detail, valid_until,
                                             qualifying_value FROM changes WHERE program_id = 'default'
                                      ORDER BY member_id, seq""")
    finally:
        await conn.close()
    return [tuple(r) for r in members], [tuple(r) for r in changes]


async def test_tiers_climb_earn_more_fall_back_on_refund_are_reviewed_and_rebuild_to_the_same(world: World) -> None:
    ledger, _earn = await world.start_ledger_and_earn()
    tiers = await world.service("tiers", JIFEN_REVIEW_INTERVAL_S="1").start().ready()
    t = NOW - timedelta(days=3)
    await send(world.infra.bootstrap, world.topic(topics.PURCHASES), [buy("p1", "ann", "900.00", t),
                                                                      buy("p2", "ann", "200.00", t)])
    await tier_is(tiers, "ann", "silver")
    crossing = t + timedelta(hours=1)
    await send(world.infra.bootstrap, world.topic(topics.PURCHASES), [buy("p3", "ann", "4000.00", crossing)])
    await tier_is(tiers, "ann", "gold")  # 1100 + 4000 × 1.25
    await send(world.infra.bootstrap, world.topic(topics.PURCHASES), [buy("p4", "ann", "100.00", crossing)])
    await lifetime(ledger, "ann", 1100 + 5000 + 150)  # the purchase after gold: 100 base + 50 for gold

    refund = cloud_event(PurchaseRefunded, "r3", crossing + timedelta(hours=2), {
        "member_id": "ann", "order_id": "order-p3", "refund_id": "r3", "currency": "CNY", "total": "4000.00"},
        source="pos://store-1")
    await send(world.infra.bootstrap, world.topic(topics.PURCHASES), [(b"ann", refund, STRUCTURED)])
    undone = await tier_is(tiers, "ann", "silver")
    assert undone["qualifying"]["value"] == "1250"

    # Bob reached gold 14 months ago: his tier period ended 2 months ago, his 30 grace days 1 month ago, and the
    # review drops him then. Cy reached gold 12 months and 5 days ago: his period ended 5 days ago, the drop comes
    # in 25 days, and he is warned now.
    bob_at, cy_at = NOW - timedelta(days=426), NOW - timedelta(days=370)
    await send(world.infra.bootstrap, world.topic(topics.PURCHASES), [buy("b1", "bob", "5200.00", bob_at),
                                                                      buy("c1", "cy", "5200.00", cy_at)])
    await tier_is(tiers, "bob", "normal")
    records = await read_all(world.infra.bootstrap, world.topic(topics.TIERS), expect=9)
    events = [orjson.loads(r.value) for r in records]
    changes = {(e["data"]["member_id"], e["data"]["tier"], e["data"]["reason"], e["data"]["detail"])
               for e in events if e["type"] == TierChanged.TYPE}
    assert changes == {("ann", "silver", "upgrade", None), ("ann", "gold", "upgrade", None),
                       ("ann", "silver", "downgrade", "reversed"), ("bob", "gold", "upgrade", None),
                       ("bob", "normal", "downgrade", "review"), ("cy", "gold", "upgrade", None)}
    warned = [e["data"] for e in events if e["type"] == TierExpiring.TYPE]
    assert [(w["member_id"], w["tier"], w["drops_to"], w["needed"]) for w in warned] == [("cy", "gold", "normal",
                                                                                          "5000")]
    bob_drop = next(e for e in events if e["type"] == TierChanged.TYPE and e["data"]["member_id"] == "bob"
                    and e["data"]["reason"] == "downgrade")
    assert datetime.fromisoformat(bob_drop["time"]) < NOW - timedelta(days=20)  # at its own time, not the job's

    # The programme manager's summary: the ledger's totals, and the members at each tier from the tiers service.
    code, out, err = await jifen("programme", "summary", "default", "--url", ledger.url(""), "--tiers-url",
                                 tiers.url(""), "--api-key", world.token)
    assert code == 0, out + err
    assert "members by tier  normal 1, silver 1, gold 1, diamond 0" in out, out  # bob fell back, ann silver, cy gold
    live = await projection(world.database_url)
    # The live service stops first: its review job (every second here) must not mend what the rebuild leaves out.
    await asyncio.to_thread(tiers.stop)
    code, out, err = await jifen("tiers", "rebuild", "--program", "default", "--database-url", world.database_url,
                                 "--kafka-bootstrap", world.infra.bootstrap, "--topic-prefix", world.prefix)
    assert code == 0, out + err
    assert "3 members" in out, out
    assert await projection(world.database_url) == live
