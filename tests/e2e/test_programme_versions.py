"""Two programmes side by side, and a rule change in the middle of a feed: a new version dropped into the
running earn service's folder judges the events that happen after it takes effect, and only those."""

from __future__ import annotations

import asyncio
import shutil
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from shared.contracts import topics
from shared.settings import Settings
from shared.simulation import purchase_event
from tests.support import STRUCTURED, World, send, wait_for

pytestmark = pytest.mark.e2e


def purchase(event_id: str, member: str, at: datetime, total: str, program: str | None) -> tuple[bytes, bytes, Any]:
    line = {"sku": "SKU-RICE", "category": "grocery", "quantity": "1", "unit_price": total, "total": total}
    body = purchase_event(event_id, "pos://store-1", at, member, f"order-{event_id}", Decimal(total), [line],
                          program_id=program)
    return member.encode(), orjson.dumps(body), STRUCTURED


async def test_a_new_version_judges_only_what_happens_after_it_takes_effect(world: World, tmp_path: Path) -> None:
    folder = tmp_path / "programmes"
    folder.mkdir()
    for name in ("default.yaml", "retail.yaml"):
        shutil.copy(Settings().programmes_dir / name, folder)
    ledger = await world.service("ledger").start().ready()
    earn = await world.service("earn", JIFEN_PROGRAMMES_DIR=str(folder)).start().ready()

    before = datetime.now(UTC) - timedelta(minutes=1)
    await send(world.infra.bootstrap, world.topic(topics.PURCHASES), [
        purchase("r-1", "fay", before, "100.00", "retail"),  # retail v1: 1 point per yuan
        purchase("d-1", "fay", before, "100.00", None),  # the default programme, side by side
    ])
    # Version 2 of retail doubles the base rate from a moment in the near future.
    takes_effect = datetime.now(UTC) + timedelta(seconds=4)
    v2 = yaml.safe_load((folder / "retail.yaml").read_text())
    v2 |= {"version": 2, "effective_from": takes_effect.isoformat()}
    v2["purchase"]["base"]["points_per_unit"] = "2"
    (folder / "retail.v2.yaml").write_text(yaml.safe_dump(v2))

    async def loaded() -> bool:
        status, body = earn.get("/v1/programs")
        return status == 200 and any(p["program_id"] == "retail" and p["version"] == 2 for p in body)

    await wait_for(loaded, what="retail version 2 to be loaded without a restart")
    await asyncio.sleep(max(0.0, (takes_effect - datetime.now(UTC)).total_seconds()) + 0.5)
    after = datetime.now(UTC)
    await send(world.infra.bootstrap, world.topic(topics.PURCHASES), [
        purchase("r-2", "fay", after, "100.00", "retail"),  # judged by v2
        purchase("r-3", "fay", before + timedelta(seconds=1), "100.00", "retail"),  # late, but happened before: v1
        purchase("d-2", "fay", after, "100.00", None),
    ])

    async def settled(program: str, expected: int) -> dict[str, Any] | None:
        status, body = ledger.get(f"/v1/programs/{program}/members/fay/balance")
        return body if status == 200 and body["lifetime_earned"] >= expected else None

    retail = await wait_for(lambda: settled("retail", 400), what="retail credits")
    default = await wait_for(lambda: settled("default", 200), what="default credits")
    assert (retail["lifetime_earned"], default["lifetime_earned"]) == (400, 200)
    status, page = ledger.get("/v1/programs/retail/members/fay/entries")
    assert status == 200
    versions = sorted((e["source_event_id"].split("|")[1], e["rule_version"], e["amount"]) for e in page["entries"])
    assert versions == [("r-1", 1, 100), ("r-2", 2, 200), ("r-3", 1, 100)]
