"""`jifen member` and `jifen keys list` as a service-desk user runs them against a real stack: a member's balance,
entries and tier in one answer, every time in the programme's zone to the second; keys in columns that never run
together."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest

from shared.contracts import topics
from shared.simulation import purchase_event
from tests.support import STRUCTURED, World, jifen, send, wait_for

pytestmark = pytest.mark.e2e
STAMP = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d:\d\d|Z)")


async def test_member_shows_balance_entries_and_tier_in_the_programme_zone(world: World) -> None:
    ledger, _ = await world.start_ledger_and_earn()
    tiers = await world.service("tiers").start().ready()
    at = datetime.now(UTC) - timedelta(minutes=2)
    body = purchase_event("mc-1", "pos://store-7", at, "mia", "mo-1", Decimal("100.00"), [], program_id="starbucks")
    await send(world.infra.bootstrap, world.topic(topics.PURCHASES), [(b"mia", orjson.dumps(body), STRUCTURED)])

    async def credited() -> dict[str, Any] | None:
        status, balance = ledger.get("/v1/programs/starbucks/members/mia/balance", token=world.token)
        return balance if status == 200 and balance["lifetime_earned"] else None

    assert (await wait_for(credited, what="the purchase to be credited"))["available"] == 20  # 1 star per 5 yuan

    async def tiered() -> bool:
        return tiers.get("/v1/programs/starbucks/members/mia/tier", token=world.token)[0] == 200

    await wait_for(tiered, what="the tiers service to know mia")
    code, out, err = await jifen("member", "mia", "--program", "starbucks", "--url", ledger.url(""),
                                 "--tiers-url", tiers.url(""), "--api-key", world.token)
    assert code == 0, out + err
    lines = {line.split()[0]: line for line in out.splitlines()[1:] if line.strip()}
    assert lines["available"].split()[1] == "20" and lines["lifetime"].split()[1] == "20"
    assert "green" in lines["tier"]
    [entry] = [line for line in out.splitlines() if line.strip().startswith("#1 ")]
    assert "+20" in entry and "stars" in entry  # the rule that earned it
    stamps = STAMP.findall(out)
    assert stamps, out
    assert {zone for _, zone in stamps} == {"+08:00"} and {fraction for fraction, _ in stamps} == {""}, out
    shown = at.astimezone(datetime.fromisoformat("2026-01-01T00:00:00+08:00").tzinfo).strftime("%Y-%m-%dT%H:%M:%S")
    assert shown in entry, (shown, entry)  # when it happened, in Shanghai time, to the second

    code, _, err = await jifen("member", "mia", "--program", "nosuch", "--url", ledger.url(""),
                               "--tiers-url", tiers.url(""), "--api-key", world.token)
    assert code == 1 and "unknown_program" in err and "Traceback" not in err


async def test_keys_list_shows_its_columns_apart(world: World) -> None:
    named = "a-till-with-a-rather-long-name-in-shanghai"
    code, out, err = await jifen("keys", "create", "--name", named, "--scope", "read",
                                 "--database-url", world.database_url)
    assert code == 0, err
    key_id = out.split()[2]
    assert (await jifen("keys", "revoke", key_id, "--database-url", world.database_url))[0] == 0
    code, out, err = await jifen("keys", "list", "--database-url", world.database_url)
    assert code == 0, err
    rows = [re.split(r"\s{2,}", line.strip()) for line in out.splitlines()]
    assert rows[0] == ["key id", "name", "scopes", "created (UTC)", "revoked"]
    [mine] = [row for row in rows if row[0] == key_id]
    assert mine[1] == named and mine[2] == "read"
    assert all(STAMP.fullmatch(cell) and cell.endswith("+00:00") and "." not in cell for cell in mine[3:]), mine
