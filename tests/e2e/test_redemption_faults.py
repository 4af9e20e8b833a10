"""Redemption killed with SIGKILL between the ledger placing holds and redemption capturing them, and kept down past
the holds' TTL: after the restart every redemption ends completed or rejected (none stuck pending), the holds it
never captured were released by the ledger at their TTL, and each member paid for exactly what completed. Clients
whose requests died with the process retry them with the same Idempotency-Key."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_redemption import available, client, credit, final, start
from tests.integration.test_redemption_service import check_redemption_invariants
from tests.support import World, wait_for

pytestmark = pytest.mark.e2e
MEMBERS = 40
EACH = 5  # redemptions of 100 points per member, who has 1000


async def ledger_holds(world: World) -> tuple[int, int]:
    """(holds placed, holds still open) in the ledger."""
    conn = await world.db()
    try:
        row = await conn.fetchrow(
            """SELECT count(*) AS placed,
                      count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM ledger.hold_resolutions s
                                                         WHERE s.hold_id = h.hold_id)) AS open
               FROM ledger.holds h""")
        return int(row["placed"]), int(row["open"])
    finally:
        await conn.close()


async def test_kill_9_between_hold_and_capture_leaves_nothing_pending_and_no_hold_open(
        world: World, tmp_path: Path) -> None:
    ledger, redemption = await start(world, tmp_path)
    members = [f"k9-{n:02d}" for n in range(MEMBERS)]
    await credit(world, "brief", *((m, 1000, None) for m in members))  # `brief`: holds time out after 4 s
    await available(ledger, "brief", members[-1], 1000)
    asks = [(m, f"{m}-{n}") for n in range(EACH) for m in members]
    answers: dict[str, dict[str, Any]] = {}

    async def ask(http: httpx.AsyncClient, member: str, key: str) -> None:
        try:
            response = await http.post("/v1/programs/brief/redemptions", headers={"Idempotency-Key": key},
                                       json={"member_id": member, "reward_id": "coupon-5"})
        except httpx.TransportError:
            return  # the process died under it: retried after the restart
        if response.status_code in (202, 409):
            answers[key] = response.json()

    async with client(redemption, world.token, connections=20) as http:
        sending = asyncio.gather(*(ask(http, m, k) for m, k in asks))
        # Kill once the ledger has placed some holds and some of them are not captured yet.
        await wait_for(lambda: _some_open(world), timeout=60, what="holds placed and not yet captured")
        redemption.kill9()
        await sending
    await asyncio.sleep(1.5)  # the ledger applies what was on its way: captures sent before the kill, new holds
    placed, stranded = await ledger_holds(world)
    assert placed > 0 and stranded > 0, "the kill should land between holds and their captures"
    await asyncio.sleep(6)  # the outage outlasts the holds' 4 s: the ledger's sweeper releases them
    redemption.start()
    await redemption.ready()

    async with client(redemption, world.token, connections=20) as http:
        for member, key in asks:
            if key not in answers:  # the same key: the redemption it made, if it was recorded before the kill
                response = await http.post("/v1/programs/brief/redemptions", headers={"Idempotency-Key": key},
                                           json={"member_id": member, "reward_id": "coupon-5"})
                assert response.status_code in (201, 202, 409), response.text
                answers[key] = response.json()
        done = [await final(http, "brief", a["redemption_id"]) for a in answers.values()]
    assert len(done) == len(asks)
    outcomes = Counter((d["status"], d["reason"]) for d in done)
    assert set(outcomes) <= {("completed", None), ("rejected", "hold_expired")}, outcomes
    # Some completed before the kill; at least every hold stranded by it timed out and rejected its redemption.
    assert outcomes[("completed", None)] > 0 and outcomes[("rejected", "hold_expired")] >= stranded
    await wait_for(lambda: _none_open(world), timeout=60, what="every hold captured or released")
    paid = Counter(d["member_id"] for d in done if d["status"] == "completed")
    for member in members:
        await available(ledger, "brief", member, 1000 - 100 * paid[member])
    await check_redemption_invariants(world.database_url)


async def _some_open(world: World) -> bool:
    placed, open_ = await ledger_holds(world)
    return placed >= 10 and open_ > 0


async def _none_open(world: World) -> bool:
    return (await ledger_holds(world))[1] == 0
