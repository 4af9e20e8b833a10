"""The retail example's bonus, rebate, exclusions and online pending period through Kafka: one credit per rule,
each explaining itself in the entries endpoint, all pending until the return window closes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from shared.contracts import topics
from shared.simulation import purchase_event
from tests.support import STRUCTURED, World, send, wait_for

pytestmark = pytest.mark.e2e
SHANGHAI = ZoneInfo("Asia/Shanghai")  # the retail example's time zone


async def test_bonus_rebate_and_exclusions_each_credit_their_own_points_pending_online(world: World) -> None:
    ledger, _earn = await world.start_ledger_and_earn()
    member = "ivy"
    # A weekday, so the weekend campaign does not run; bought online, so the points wait out 14 days.
    at = datetime.now(UTC) - timedelta(hours=1)
    if at.astimezone(SHANGHAI).weekday() >= 5:
        at -= timedelta(days=2)
    lines = [
        {"sku": "TEA-OOLONG-100", "category": "tea", "quantity": "2", "unit_price": "50.00", "total": "100.00"},
        {"sku": "WINE-RIOJA", "category": "wine", "quantity": "1", "unit_price": "400.00", "total": "400.00"},
        {"sku": "GC-100", "category": "gift_card", "quantity": "1", "unit_price": "100.00", "total": "100.00"},
    ]
    body = purchase_event("w-1", "web://shop", at, member, "web-1", Decimal("600.00"), lines, channel="online",
                          store_id=None, program_id="retail")
    await send(world.infra.bootstrap, world.topic(topics.PURCHASES), [(member.encode(), orjson.dumps(body),
                                                                       STRUCTURED)])

    async def credited() -> list[dict[str, Any]] | None:
        status, page = ledger.get(f"/v1/programs/retail/members/{member}/entries")
        return page["entries"] if status == 200 and len(page["entries"]) >= 3 else None

    entries = await wait_for(credited, what="the purchase's credits")
    # 500 eligible (the gift card earns nothing): base 500; 20 a box of tea × 2; 2% back on tea, 5% on wine.
    assert sorted((e["rule_id"], e["amount"]) for e in entries) == [
        ("base", 500), ("big-basket-rebate", 22), ("new-tea-bonus", 40)]
    rebate = next(e for e in entries if e["rule_id"] == "big-basket-rebate")
    assert rebate["details"]["rule"] == {"rule_id": "big-basket-rebate", "kind": "rebate", "points": 22,
                                         "why": "2% back from 500 spent"}
    assert rebate["details"]["lines"] == [{"sku": "TEA-OOLONG-100", "points": "2.00"},
                                          {"sku": "WINE-RIOJA", "points": "20.00"}]
    status, balance = ledger.get(f"/v1/programs/retail/members/{member}/balance")
    assert status == 200 and (balance["pending"], balance["available"]) == (562, 0)

