"""Refunds through Kafka: earn takes back exactly what the refunded lines earned, rule by rule, and the ledger
reverses those credits by their keys; bad refunds are answered in the DLQ."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest

from shared.contracts import topics
from shared.simulation import purchase_event
from tests.support import STRUCTURED, World, headers_of, read_all, send, wait_for

pytestmark = pytest.mark.e2e
SATURDAY = datetime(2026, 11, 7, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai: the retail example's weekend campaign runs
MILK = {"sku": "FM-MILK-1L", "category": "dairy", "quantity": "2", "unit_price": "12.50", "total": "25.00"}
APPLES = {"sku": "apple", "category": "fruit", "quantity": "3", "unit_price": "5.00", "total": "15.00"}


def refund(event_id: str, member: str, order_id: str, total: str, lines: list[dict[str, str]] | None) -> bytes:
    return orjson.dumps({
        "specversion": "1.0", "id": event_id, "source": "pos://store-1", "type": "jifen.purchase.refunded.v1",
        "time": "2026-11-08T02:00:00Z",
        "data": {"program_id": "retail", "member_id": member, "order_id": order_id, "refund_id": event_id,
                 "currency": "CNY", "total": total, **({"lines": lines} if lines else {})}})


async def test_refunds_take_back_exactly_what_the_refunded_lines_earned(world: World) -> None:
    ledger, _earn = await world.start_ledger_and_earn()
    member = "dora"
    purchase = purchase_event("p-1", "pos://store-1", SATURDAY, member, "o-1", Decimal("40.00"), [MILK, APPLES],
                              program_id="retail")
    await send(world.infra.bootstrap, world.topic(topics.PURCHASES), [(member.encode(), orjson.dumps(purchase),
                                                                       STRUCTURED)])

    async def balance(expected: int) -> dict[str, Any] | None:
        status, body = ledger.get(f"/v1/programs/retail/members/{member}/balance")
        return body if status == 200 and body["balance"] == expected else None

    # milk 25: base 25, own-brand ×3 +50, weekend ×2 +25; apples 15: base 15, fresh ×2 +15, weekend +15
    await wait_for(lambda: balance(145), what="the order's 145 points")
    status, page = ledger.get(f"/v1/programs/retail/members/{member}/entries")
    assert status == 200
    assert sorted((e["rule_id"], e["amount"]) for e in page["entries"]) == [
        ("base", 40), ("fresh-x2", 15), ("own-brand-x3", 50), ("weekend-double", 40)]

    messages = [
        (member.encode(), refund("r-1", member, "o-1", "25.00", [{**MILK}]), STRUCTURED),  # the milk comes back
        (member.encode(), refund("r-bad", member, "o-1", "100.00", None), STRUCTURED),  # more than is left
        (member.encode(), refund("r-unknown", member, "o-404", "1.00", None), STRUCTURED),
        (member.encode(), refund("r-2", member, "o-1", "15.00", None), STRUCTURED),  # the rest, by total only
    ]
    await send(world.infra.bootstrap, world.topic(topics.PURCHASES), messages)
    found = await wait_for(lambda: balance(0), what="both refunds to take every point back")
    assert found["lifetime_earned"] == 0
    status, page = ledger.get(f"/v1/programs/retail/members/{member}/entries")
    assert status == 200
    reversals = [(e["rule_id"], e["amount"]) for e in page["entries"] if e["kind"] in ("reversal", "cancel")]
    # r-1 took back the milk's share of each rule, r-2 the apples' share.
    assert sorted(reversals) == sorted([("base", -25), ("own-brand-x3", -50), ("weekend-double", -25),
                                        ("base", -15), ("fresh-x2", -15), ("weekend-double", -15)])
    dlq = await read_all(world.infra.bootstrap, world.topic(topics.dlq(topics.PURCHASES)), expect=2)
    assert sorted(headers_of(r)["jifen-dlq-reason"] for r in dlq) == ["refund_exceeds_order", "unknown_order"]
