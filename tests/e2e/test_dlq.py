"""Dead letters through Kafka and the `jifen dlq` tool: a purchase for a programme earn does not know yet is refused
with its reason; `jifen dlq list` counts it, `show` prints it, a dry run names it; the programme added, `replay`
sends it back and earn credits it, exactly once."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from shared.contracts import topics
from shared.metrics import scrape
from shared.settings import Settings
from shared.simulation import purchase_event
from tests.support import STRUCTURED, World, jifen, read_all, send, wait_for

pytestmark = pytest.mark.e2e


async def test_a_replayed_dead_letter_is_credited_once_its_cause_is_fixed(world: World, tmp_path: Path) -> None:
    folder = tmp_path / "programmes"
    folder.mkdir()
    shutil.copy(Settings().programmes_dir / "default.yaml", folder)
    ledger = await world.service("ledger").start().ready()
    earn = await world.service("earn", JIFEN_PROGRAMMES_DIR=str(folder)).start().ready()
    at = datetime.now(UTC) - timedelta(minutes=5)
    body = purchase_event("kiosk-1", "pos://kiosk", at, "una", "k-1", Decimal("42.00"), [], program_id="kiosk")
    await send(world.infra.bootstrap, world.topic(topics.PURCHASES), [(b"una", orjson.dumps(body), STRUCTURED)])
    await read_all(world.infra.bootstrap, world.topic(topics.dlq(topics.PURCHASES)), expect=1)
    where = ("--kafka-bootstrap", world.infra.bootstrap, "--topic-prefix", world.prefix)

    code, out, err = await jifen("dlq", "list", "jifen.purchases", *where)
    assert code == 0, err
    assert "1 record" in out and "unknown_program" in out and "by earn" in out
    code, out, err = await jifen("dlq", "show", "jifen.purchases", "kiosk-1", *where)
    assert code == 0, err
    assert "jifen-dlq-reason: unknown_program" in out and "no programme 'kiosk'" in out and '"order_id": "k-1"' in out
    code, out, err = await jifen("dlq", "replay", "jifen.purchases", "--reason", "unknown_program", "--dry-run",
                                 *where)
    assert code == 0 and "would send 1 of" in out and "kiosk-1" in out, out + err

    # The cause fixed: the programme added (a new programme judging past events takes a restart of earn).
    kiosk = (folder / "default.yaml").read_text().replace("program_id: default", "program_id: kiosk")
    (folder / "kiosk.yaml").write_text(kiosk)
    earn.stop()
    earn = await world.service("earn", JIFEN_PROGRAMMES_DIR=str(folder)).start().ready()
    code, out, err = await jifen("dlq", "replay", "jifen.purchases", "--reason", "unknown_program", *where)
    assert code == 0 and "sent 1 records back" in out, out + err

    async def credited() -> dict[str, Any] | None:
        status, balance = ledger.get("/v1/programs/kiosk/members/una/balance")
        return balance if status == 200 and balance["lifetime_earned"] else None

    assert (await wait_for(credited, what="the replayed purchase to be credited"))["lifetime_earned"] == 42
    # Replaying it again changes nothing: the event is now remembered as applied, and skipped as a duplicate.
    code, out, err = await jifen("dlq", "replay", "jifen.purchases", "--reason", "unknown_program", *where)
    assert code == 0, err

    async def skipped() -> bool:
        return any(k.startswith("jifen_duplicates_skipped_total") and v >= 1 for k, v in scrape(earn.port).items())

    await wait_for(skipped, what="earn to skip the second replay as a duplicate")
    status, page = ledger.get("/v1/programs/kiosk/members/una/entries")
    assert status == 200 and [e["amount"] for e in page["entries"]] == [42]
    assert earn.get("/health/ready")[0] == 200


async def test_the_dlq_tool_says_what_is_wrong_with_its_arguments(world: World) -> None:
    code, _, err = await jifen("dlq", "list", "jifen.nosuch", "--kafka-bootstrap", world.infra.bootstrap)
    assert code == 2 and "'jifen.nosuch' is not a Jifen topic" in err and "Traceback" not in err
    code, _, err = await jifen("dlq", "list", "--kafka-bootstrap", "127.0.0.1:1")
    assert code == 2 and "cannot reach Kafka" in err and "Traceback" not in err


async def test_dlq_list_counts_records_not_copies_with_the_services_that_refused_each(world: World) -> None:
    """earn and tiers both read jifen.purchases, and each dead-letters a bad record on its own: `jifen dlq list`
    counts the records, names both services, and says the same every time it is run."""
    earn = await world.service("earn").start().ready()
    tiers = await world.service("tiers").start().ready()
    bad = [(b"m1", b"\x00\xff{not json", []), (b"m2", b"not json either", []),
           (b"m3", orjson.dumps({"member": "m3", "amount": 10}), STRUCTURED)]
    await send(world.infra.bootstrap, world.topic(topics.PURCHASES), bad)
    await read_all(world.infra.bootstrap, world.topic(topics.dlq(topics.PURCHASES)), expect=6)
    where = ("--kafka-bootstrap", world.infra.bootstrap, "--topic-prefix", world.prefix)
    code, out, err = await jifen("dlq", "list", "jifen.purchases", *where)
    assert code == 0, err
    assert "3 records (6 copies" in out, out
    lines = [line.split() for line in out.splitlines() if " by " in line]
    assert [(words[0], words[1]) for words in lines] == [("2", "unparseable"), ("1", "not_cloudevent")], out
    assert all("earn," in words and "tiers" in words for words in lines), out
    assert "3 records dead-lettered (6 copies)" in out
    again = [await jifen("dlq", "list", "jifen.purchases", *where) for _ in range(2)]
    assert all(result == (0, out, err) for result in again)  # a stable order and the same first place
    for service in (earn, tiers):
        assert service.get("/health/ready")[0] == 200
