"""Purchases become points through real Kafka, real PostgreSQL and the services as real processes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest

from shared.contracts import topics
from shared.simulation import malformed, purchase_event
from tests.support import STRUCTURED, World, headers_of, read_all, send, wait_for

pytestmark = pytest.mark.e2e
NOW = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)  # in the past: a future-dated lot would still be pending


def purchase(event_id: str, member: str, total: str, source: str = "pos://store-1") -> bytes:
    return orjson.dumps(purchase_event(event_id, source, NOW, member, f"order-{event_id}", Decimal(total), []))


async def test_purchase_becomes_balance_and_a_replayed_event_counts_once(world: World) -> None:
    ledger, _earn = await world.start_ledger_and_earn()
    event = purchase("p-1", "alice", "123.45")
    await send(world.infra.bootstrap, world.topic(topics.PURCHASES),
               [(b"alice", event, STRUCTURED), (b"alice", event, STRUCTURED)])
    # Binary mode: the same attributes as ce_* headers, the data as the body.
    data = orjson.loads(purchase("p-2", "alice", "10.99"))
    binary = [(f"ce_{k}", str(data[k]).encode()) for k in ("specversion", "id", "source", "type", "time")]
    await send(world.infra.bootstrap, world.topic(topics.PURCHASES),
               [(b"alice", orjson.dumps(data["data"]), [*binary, ("content-type", b"application/json")])])

    async def balance() -> dict[str, object] | None:
        status, body = ledger.get("/v1/programs/default/members/alice/balance")
        return body if status == 200 and body["lifetime_earned"] >= 133 else None

    found = await wait_for(balance, what="alice's credits")
    assert found["available"] == 133 and found["pending"] == 0 and found["held"] == 0
    await asyncio.sleep(1.5)  # long enough for a wrongly accepted replay to be posted too
    status, page = ledger.get("/v1/programs/default/members/alice/entries")
    assert status == 200
    assert [e["amount"] for e in page["entries"]] == [10, 123]  # newest first; the replay added nothing
    assert page["entries"][1]["rule_id"] == "base" and page["entries"][1]["source_event_id"] == "pos://store-1|p-1"
    posted = await read_all(world.infra.bootstrap, world.topic(topics.LEDGER_ENTRIES), expect=2)
    assert sorted(orjson.loads(r.value)["data"]["amount"] for r in posted) == [10, 123]


async def test_bad_messages_go_to_the_dlq_and_the_partition_keeps_flowing(world: World) -> None:
    ledger, _earn = await world.start_ledger_and_earn()
    member = "carol"  # one key: every message below lands on the same partition, in this order
    bad_kinds = ["unparseable", "not_cloudevent", "unknown_type", "invalid_data"]
    messages = [(member.encode(), m.value, m.headers)
                for m in (malformed(kind, f"bad-{kind}", member, NOW) for kind in bad_kinds)]
    no_member = orjson.loads(purchase("bad-nomember", member, "5"))
    del no_member["data"]["member_id"]
    messages.append((member.encode(), orjson.dumps(no_member), STRUCTURED))
    refund = orjson.loads(purchase("refund-1", member, "5"))
    refund["type"] = "jifen.purchase.refunded.v1"
    refund["data"] |= {"refund_id": "r-1"}
    messages.append((member.encode(), orjson.dumps(refund), STRUCTURED))
    messages.append((member.encode(), purchase("good-1", member, "42.00"), STRUCTURED))
    await send(world.infra.bootstrap, world.topic(topics.PURCHASES), messages)

    dlq = await read_all(world.infra.bootstrap, world.topic(topics.dlq(topics.PURCHASES)), expect=6)
    reasons = [headers_of(r)["jifen-dlq-reason"] for r in dlq]
    assert reasons == ["unparseable", "not_cloudevent", "unknown_type", "invalid_data", "invalid_data",
                       "unknown_order"]  # a refund of an order that never earned here
    first = headers_of(dlq[0])
    assert first["jifen-dlq-source-topic"] == world.topic(topics.PURCHASES)
    assert first["jifen-dlq-source-offset"] == "0" and "jifen-dlq-source-partition" in first
    assert first["jifen-dlq-error-class"] and first["jifen-dlq-detail"]
    assert dlq[0].value == messages[0][1] and dlq[0].key == member.encode()  # unchanged
    negative = headers_of(dlq[3])["jifen-dlq-detail"]
    assert "total" in negative and "member_id" in negative

    async def credited() -> bool:
        status, body = ledger.get(f"/v1/programs/default/members/{member}/balance")
        return status == 200 and body["available"] == 42

    await wait_for(credited, what="the valid purchase behind the bad ones")
