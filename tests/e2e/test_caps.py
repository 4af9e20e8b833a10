"""Caps and budgets through Kafka: a member's points from a rule per day, and the programme's points per day,
hold across batches and across a restart of earn; a cut credit says what was cut and why."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from shared.contracts import topics
from shared.simulation import purchase_event
from tests.support import STRUCTURED, World, send, wait_for

pytestmark = pytest.mark.e2e
PROGRAMME = {"program_id": "capped", "name": "Capped", "version": 1, "effective_from": "2026-01-01T00:00:00Z",
             "purchase": {"base": {"rule_id": "base", "points_per_unit": "1"}},
             "caps": [{"rule_id": "base", "per": "day", "points": 100}],
             "budget": {"per": "day", "points": 250}}


def purchase(event_id: str, member: str, at: datetime) -> tuple[bytes, bytes, Any]:
    body = purchase_event(event_id, "pos://store-1", at, member, f"order-{event_id}", Decimal("60.00"), [],
                          program_id="capped")
    return member.encode(), orjson.dumps(body), STRUCTURED


async def test_caps_and_the_budget_hold_across_batches_and_a_restart(world: World, tmp_path: Path) -> None:
    folder = tmp_path / "programmes"
    folder.mkdir()
    (folder / "capped.yaml").write_text(yaml.safe_dump(PROGRAMME))
    ledger = await world.service("ledger").start().ready()
    earn = await world.service("earn", JIFEN_PROGRAMMES_DIR=str(folder)).start().ready()
    at = datetime.now(UTC) - timedelta(minutes=5)

    async def lifetime(member: str, expected: int) -> bool:
        status, body = ledger.get(f"/v1/programs/capped/members/{member}/balance")
        return status == 200 and body["lifetime_earned"] == expected

    # Ann: 60, then 40 of 60 (her daily cap is 100).
    await send(world.infra.bootstrap, world.topic(topics.PURCHASES), [purchase("a1", "ann", at),
                                                                      purchase("a2", "ann", at)])
    await wait_for(lambda: lifetime("ann", 100), what="ann's capped credits")
    earn.stop()  # a restart: what was used of the cap and the budget is in the database, not in the process
    earn = await world.service("earn", JIFEN_PROGRAMMES_DIR=str(folder)).start().ready()
    await send(world.infra.bootstrap, world.topic(topics.PURCHASES), [
        purchase("a3", "ann", at),  # her cap is full: nothing
        purchase("b1", "bob", at), purchase("b2", "bob", at),  # bob's cap allows 100 of these 120
        purchase("c1", "cy", at), purchase("d1", "dee", at),
    ])
    # 260 more are wanted but the budget has 150 left. Members on different partitions share it in whatever order
    # their partitions are read, so the split may vary; the budget and each member's cap may not.
    async def earned() -> dict[str, int] | None:
        got = {}
        for member in ("ann", "bob", "cy", "dee"):
            status, body = ledger.get(f"/v1/programs/capped/members/{member}/balance")
            got[member] = body["lifetime_earned"] if status == 200 else 0
        return got if sum(got.values()) == 250 else None

    got = await wait_for(earned, what="the day's budget of 250 to be used up")
    assert got["ann"] == 100 and all(points <= 100 for points in got.values()), got
    await asyncio.sleep(1.5)  # long enough for a credit over the budget to show up
    assert await earned() == got
    cut = []
    for member in ("bob", "cy", "dee"):
        status, page = ledger.get(f"/v1/programs/capped/members/{member}/entries")
        assert status == 200
        cut += [e["details"]["capped"] for e in page["entries"] if "capped" in (e["details"] or {})]
    assert any(why == "the programme's budget of 250 points per day" for c in cut for why in c["why"]), cut
    assert all(c["granted"] < c["wanted"] for c in cut)
