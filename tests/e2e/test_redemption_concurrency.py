"""Redemptions racing, as real processes over real Kafka: a thousand requests at once for one member whose points
cover ten, and two hundred members at once for a reward with five in stock. Exactly ten and exactly five complete;
every other request is rejected with its reason; no balance goes below zero and stock never does either. The world
fixture runs `jifen ledger verify` afterwards."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_redemption import available, client, credit, final, start
from tests.integration.test_redemption_service import check_redemption_invariants
from tests.support import World

pytestmark = [pytest.mark.e2e, pytest.mark.alone]


async def redeem_all(http: httpx.AsyncClient, asks: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
    """(member, reward, key) all at once, each waiting for its outcome; then each one's final state."""
    async def one(member: str, reward: str, key: str) -> dict[str, Any]:
        answer = await http.post("/v1/programs/e2e/redemptions?wait=10", headers={"Idempotency-Key": key},
                                 json={"member_id": member, "reward_id": reward})
        body: dict[str, Any] = answer.json()
        assert answer.status_code in (201, 202, 409), body
        if answer.status_code == 202:
            body = await final(http, "e2e", body["redemption_id"])
        return {**body, "answered": answer.status_code}

    return await asyncio.gather(*(one(*ask) for ask in asks))


async def never_below_zero(world: World, members: list[str]) -> None:
    conn = await world.db()
    try:
        lowest = await conn.fetchval(
            """SELECT min(e.balance_after) FROM ledger.entries e JOIN ledger.accounts a ON a.id = e.account_id
               WHERE a.kind = 'member' AND a.member_id = ANY($1::text[])""", members)
        assert lowest is not None and lowest >= 0
        assert await conn.fetchval("SELECT count(*) FROM redemption.redemptions WHERE status = 'pending'") == 0
    finally:
        await conn.close()


async def test_a_thousand_requests_at_once_for_one_member_complete_the_ten_their_points_cover(
        world: World, tmp_path: Path) -> None:
    ledger, redemption = await start(world, tmp_path)
    await credit(world, "e2e", ("solo", 1000, None))
    await available(ledger, "e2e", "solo", 1000)
    async with client(redemption, world.token, connections=1000) as http:
        done = await redeem_all(http, [("solo", "coupon-5", f"solo-{n}") for n in range(1000)])
    outcomes = Counter((d["status"], d.get("reason") or d.get("error")) for d in done)
    assert outcomes == {("completed", None): 10, ("rejected", "insufficient_points"): 990}
    assert len({d["redemption_id"] for d in done}) == 1000
    balance = await available(ledger, "e2e", "solo", 0)
    assert (balance["balance"], balance["held"]) == (0, 0)
    await never_below_zero(world, ["solo"])
    await check_redemption_invariants(world.database_url)


async def test_two_hundred_members_at_once_for_five_in_stock_complete_five(world: World, tmp_path: Path) -> None:
    ledger, redemption = await start(world, tmp_path)
    members = [f"fan-{n:03d}" for n in range(200)]
    await credit(world, "e2e", *((m, 100, None) for m in members))
    await available(ledger, "e2e", members[-1], 100)
    async with client(redemption, world.token, connections=200) as http:
        done = await redeem_all(http, [(m, "limited", f"{m}-limited") for m in members])
        offers = (await http.get("/v1/programs/e2e/rewards")).json()
    outcomes = Counter((d["status"], d.get("reason") or d.get("error")) for d in done)
    assert outcomes == {("completed", None): 5, ("rejected", "out_of_stock"): 195}
    assert all(d["answered"] == 409 for d in done if d["status"] == "rejected")  # refused before any hold
    assert "limited" not in {r["reward_id"] for r in offers["rewards"]}  # none left to offer
    for d in done:
        if d["status"] == "completed":
            await available(ledger, "e2e", d["member_id"], 50)
    await never_below_zero(world, members)
    await check_redemption_invariants(world.database_url)
