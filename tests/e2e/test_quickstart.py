"""docs/quickstart.md as a test: the shipped examples published with `jifen publish`, through real Kafka to the
services as processes, become the points the quickstart says; a coupon is redeemed over HTTP; the USD purchase is
read back from the DLQ with `jifen dlq`."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from shared import auth
from shared.contracts import topics
from tests.support import REPO, World, jifen, read_all, wait_for

pytestmark = pytest.mark.e2e
EXAMPLES = REPO / "examples"


async def test_the_quickstart_works_as_written(world: World) -> None:
    ledger, _earn = await world.start_ledger_and_earn()
    redemption = await world.service("redemption", JIFEN_COUPON_KEY="quickstart-key").start().ready()
    where = ("--kafka-bootstrap", world.infra.bootstrap, "--topic-prefix", world.prefix)

    async def publish(*names: str) -> str:
        code, out, err = await jifen("publish", "--now", *(str(EXAMPLES / n) for n in names), *where)
        assert code == 0, out + err
        return out

    out = await publish("purchase.json", "checkin.json", "task.json", "staff-award.json")
    assert out.count("✔ qs-") == 4 and "→ " + world.topic(topics.PURCHASES) in out

    async def balance(program: str, member: str, lifetime: int) -> dict[str, Any] | None:
        status, body = ledger.get(f"/v1/programs/{program}/members/{member}/balance", token=world.token)
        return body if status == 200 and body["lifetime_earned"] == lifetime else None

    # 250 for the purchase (1 a yuan), 1 for the check-in, 5 for the review; 800 for the staff award.
    ann = await wait_for(lambda: balance("default", "qs-ann", 256), what="qs-ann's points")
    assert ann["available"] == 256
    await wait_for(lambda: balance("staff", "emp-1024", 800), what="emp-1024's award")

    await publish("refund.json")  # the tea (70 yuan) goes back: its 70 points with it
    ann = await wait_for(lambda: balance("default", "qs-ann", 186), what="the refund")
    assert ann["available"] == 186
    await publish("purchase.json")  # the same event again: the services ignore the copy
    await asyncio.sleep(2)
    assert (await balance("default", "qs-ann", 186)) is not None

    async with httpx.AsyncClient(base_url=redemption.url(""), timeout=30,
                                 headers={"Authorization": f"Bearer {world.token}"}) as http:
        response = await http.post("/v1/programs/default/redemptions?wait=10", headers={"Idempotency-Key": "qs-1"},
                                   json={"member_id": "qs-ann", "reward_id": "coupon-5"})
    assert response.status_code == 201, response.text
    redeemed = response.json()
    assert redeemed["status"] == "completed" and redeemed["points"] == 100 and redeemed["coupon"]["code"]
    status, after = ledger.get("/v1/programs/default/members/qs-ann/balance", token=world.token)
    assert (status, after["available"]) == (200, 86)

    # An operator's goodwill award, over real Kafka: the admin API's command goes through the ledger's outbox and
    # comes back through its consumer; a key without `admin` is refused.
    admin = ("--url", ledger.url(""), "--api-key", world.token)
    code, out, err = await jifen("points", "award", "qs-ann", "50", "--reason", "late delivery", *admin)
    assert code == 0 and "✔ posted" in out and "+50" in out, out + err
    status, after = ledger.get("/v1/programs/default/members/qs-ann/balance", token=world.token)
    assert (status, after["available"]) == (200, 136)
    status, page = ledger.get("/v1/programs/default/members/qs-ann/entries?limit=1", token=world.token)
    entry = page["entries"][0]
    assert (entry["rule_id"], entry["details"]["why"], entry["details"]["by"]) == ("goodwill", "late delivery", "e2e")
    conn = await world.db()
    try:
        _, read_key = await auth.create_key(conn, "till-01", ["read"])
    finally:
        await conn.close()
    code, out, err = await jifen("points", "award", "qs-ann", "50", "--reason", "x", "--url", ledger.url(""),
                                 "--api-key", read_key)
    assert code == 1 and "missing_scope" in err, out + err

    await publish("purchase-usd.json")  # the retail programme earns on CNY: earn dead-letters it
    await read_all(world.infra.bootstrap, world.topic(topics.dlq(topics.PURCHASES)), expect=1)
    code, out, err = await jifen("dlq", "list", "jifen.purchases", *where)
    assert code == 0 and "currency_not_accepted" in out, out + err
    code, out, err = await jifen("dlq", "show", "jifen.purchases", "qs-purchase-usd-1", *where)
    assert code == 0 and "earns on CNY, not USD" in out, out + err
