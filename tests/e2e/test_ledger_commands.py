"""Ledger commands through real Kafka into the ledger service as a real process: holds, expiry by the
service's own sweeper, reversals into debt, transfers, adjustments, rejections with reasons, the balance and
entries endpoints, and `jifen ledger verify` passing on the result and failing on a tampered entry."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from shared import envelope
from shared.contracts import topics
from shared.contracts.ledger_commands import (
    AdjustPoints,
    CaptureHold,
    Cause,
    LedgerCommand,
    PlaceHold,
    PostCredit,
    PostDebit,
    ReverseEntry,
    TransferPoints,
)
from tests.support import STRUCTURED, ServiceProcess, World, headers_of, jifen, read_all, send, wait_for

pytestmark = pytest.mark.e2e


def base(key: str, member: str, at: datetime) -> dict[str, Any]:
    return dict(idempotency_key=key, program_id="default", member_id=member, occurred_at=at,
                cause=Cause(source_event_id=f"test|{key}"))


async def send_commands(world: World, *commands: LedgerCommand) -> None:
    await send(world.infra.bootstrap, world.topic(topics.LEDGER_COMMANDS), [
        (c.member_id.encode(), envelope.encode(c.idempotency_key, "test", c.TYPE,
                                               c.occurred_at, c.model_dump(mode="json")), STRUCTURED)
        for c in commands])


async def outcomes(world: World, expect: int, timeout: float = 30.0) -> list[dict[str, Any]]:
    records = await read_all(world.infra.bootstrap, world.topic(topics.LEDGER_ENTRIES), expect=expect,
                             timeout=timeout)
    return [orjson.loads(r.value) for r in records]


def of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e["data"] for e in events if e["type"] == f"jifen.ledger.{kind}.v1"]


async def balance_when(ledger: ServiceProcess, member: str, check: Any, what: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        status, body = ledger.get(f"/v1/programs/default/members/{member}/balance")
        return body if status == 200 and check(body) else None

    found: dict[str, Any] = await wait_for(probe, timeout=60, what=what)
    return found


async def test_holds_captures_expiry_and_rejections_over_kafka(world: World) -> None:
    ledger = await world.service("ledger", JIFEN_SWEEP_INTERVAL_S="0.5").start().ready()
    t0 = datetime.now(UTC)
    soon, ttl = t0 + timedelta(seconds=15), 3
    await send_commands(
        world,
        PostCredit(**base("earn-a", "m1", t0), amount=500, available_at=t0 - timedelta(hours=1), expires_at=soon),
        PostCredit(**base("earn-b", "m1", t0), amount=300, available_at=t0 + timedelta(days=1)),  # pending
        PostCredit(**base("earn-c", "m1", t0), amount=200),
        PlaceHold(**base("hold-1", "m1", t0), hold_id="h1", amount=100),
        CaptureHold(**base("capture-1", "m1", t0), hold_id="h1", amount=60),
        PostDebit(**base("too-much", "m1", t0), amount=10_000),
        PlaceHold(**base("hold-2", "m1", t0), hold_id="h2", amount=50, ttl_seconds=ttl),
        CaptureHold(**base("capture-again", "m1", t0), hold_id="h1", amount=10),
    )
    # The sweeper resolves h2 when its TTL passes and expires lot A's unreserved rest once it is due.
    found = await balance_when(ledger, "m1", lambda b: b["balance"] == 500, "lot A to expire")
    assert {k: found[k] for k in ("available", "pending", "held", "lifetime_earned", "debt", "next_expiry")} == {
        "available": 200, "pending": 300, "held": 0, "lifetime_earned": 1000, "debt": 0, "next_expiry": None}

    events = await outcomes(world, expect=11)
    posted = of_type(events, "entry.posted")
    assert [(e["kind"], e["amount"]) for e in posted] == [
        ("earn", 500), ("earn", 300), ("earn", 200), ("redeem", -60), ("expire", -440)]
    assert posted[3]["hold_id"] == "h1" and posted[4]["idempotency_key"].startswith("expire:")
    assert [(h["hold_id"], h["amount"]) for h in of_type(events, "hold.placed")] == [("h1", 100), ("h2", 50)]
    assert [(h["hold_id"], h["outcome"], h["captured"], h["released"]) for h in of_type(events, "hold.resolved")] \
        == [("h1", "captured", 60, 40), ("h2", "expired", 0, 50)]
    assert [(r["idempotency_key"], r["reason"]) for r in of_type(events, "command.rejected")] == [
        ("too-much", "insufficient_points"), ("capture-again", "hold_already_resolved")]

    status, page = ledger.get("/v1/programs/default/members/m1/entries?limit=2")
    assert status == 200 and [e["kind"] for e in page["entries"]] == ["expire", "redeem"]
    assert page["open_holds"] == [] and page["next_before_seq"] == 4
    status, older = ledger.get(f"/v1/programs/default/members/m1/entries?before_seq={page['next_before_seq']}")
    earns = {e["idempotency_key"]: e["lots"][0] for e in older["entries"]}
    assert earns["earn-a"]["unspent"] == 0 and earns["earn-b"]["unspent"] == 300 and earns["earn-c"]["unspent"] == 200


async def test_refund_after_spending_goes_into_debt_and_transfers_keep_expiry(world: World) -> None:
    ledger = await world.service("ledger").start().ready()
    t0 = datetime.now(UTC) - timedelta(minutes=5)
    expiry = t0 + timedelta(days=90)
    await send_commands(
        world,
        PostCredit(**base("earn-1", "m2", t0), amount=100, expires_at=expiry),
        PostDebit(**base("spend-1", "m2", t0), amount=80),
        TransferPoints(**base("gift-1", "m2", t0), to_member_id="m3", amount=15),
    )
    first = await outcomes(world, expect=4)
    earn_id = next(e["entry_id"] for e in of_type(first, "entry.posted") if e["idempotency_key"] == "earn-1")
    gift_in = [e for e in of_type(first, "entry.posted") if e["kind"] == "transfer_in"]
    assert [(lot["amount"], lot["expires_at"]) for lot in gift_in[0]["lots"]] == [
        (15, expiry.isoformat().replace("+00:00", "Z"))]

    # A manual adjustment without a reason, and a reversal naming no entry, are bad input: answered in the DLQ,
    # never applied.
    bad_adjustment = envelope.encode("adj-bad", "test", AdjustPoints.TYPE, t0, {
        "idempotency_key": "adj-bad", "program_id": "default", "member_id": "m2", "occurred_at": t0.isoformat(),
        "cause": {"source_event_id": "test|adj-bad"}, "direction": "credit", "amount": 5, "reason": "  ",
        "actor": "agent-7"})
    bad_reversal = envelope.encode("refund-bad", "test", ReverseEntry.TYPE, t0, {
        "idempotency_key": "refund-bad", "program_id": "default", "member_id": "m2", "occurred_at": t0.isoformat(),
        "cause": {"source_event_id": "test|refund-bad"}, "amount": 5})
    await send(world.infra.bootstrap, world.topic(topics.LEDGER_COMMANDS),
               [(b"m2", bad_adjustment, STRUCTURED), (b"m2", bad_reversal, STRUCTURED)])
    await send_commands(
        world,
        # The purchase is refunded: earn knows the key it credited with, not the entry id. 100 back.
        ReverseEntry(**base("refund-1", "m2", t0), entry_key="earn-1"),
        ReverseEntry(**base("refund-x", "m3", t0), entry_key="earn-1"),  # a key names the entry on m3's account
        PostDebit(**base("spend-2", "m2", t0), amount=1),  # refused: the member owes points
        AdjustPoints(**base("adj-1", "m2", t0), direction="credit", amount=50, reason="service recovery",
                     actor="agent-7"),
    )
    found = await balance_when(ledger, "m2", lambda b: b["lifetime_earned"] == 50, "the adjustment")
    # 100 earned, 80 spent, 15 given, 100 reversed: -95; the 50 adjustment repays part of it.
    assert (found["balance"], found["debt"], found["available"]) == (-45, 45, -45)
    events = await outcomes(world, expect=8)
    assert sorted((r["idempotency_key"], r["reason"]) for r in of_type(events, "command.rejected")) == [
        ("refund-x", "entry_not_found"), ("spend-2", "negative_balance")]
    reversal = [e for e in of_type(events, "entry.posted") if e["kind"] == "reversal"]
    assert [(e["corrects_entry_id"], e["amount"], e["idempotency_key"]) for e in reversal] == [
        (earn_id, -100, "refund-1")]
    dlq = await read_all(world.infra.bootstrap, world.topic(topics.dlq(topics.LEDGER_COMMANDS)), expect=2)
    assert [headers_of(r)["jifen-dlq-reason"] for r in dlq] == ["invalid_data", "invalid_data"]
    assert "reason" in headers_of(dlq[0])["jifen-dlq-detail"]
    assert "exactly one of entry_id and entry_key" in headers_of(dlq[1])["jifen-dlq-detail"]

    # `jifen ledger verify` passes on what the service wrote...
    verify = ("ledger", "verify", "--database-url", world.database_url)
    code, out, err = await jifen(*verify)
    assert code == 0, out + err
    assert "hash chains" in out and "sum to zero" in out and "holds" in out and "every rule holds" in out
    # ...and names the entry once a stored amount is changed behind the ledger's back.
    conn = await world.db()
    try:
        await conn.execute("SET search_path = ledger")
        tampered = await conn.fetchval("SELECT id FROM entries WHERE command_key = 'spend-1'")
        await _alter_amount(conn, tampered, +1)
        try:
            code, out, err = await jifen(*verify)
        finally:
            await _alter_amount(conn, tampered, -1)
    finally:
        await conn.close()
    assert code == 1, out + err
    assert f"entry {tampered} " in err and "hash chain broken" in err


async def _alter_amount(conn: Any, entry_id: int, delta: int) -> None:
    async with conn.transaction():
        await conn.execute("ALTER TABLE entries DISABLE TRIGGER entries_append_only")
        await conn.execute("UPDATE entries SET amount = amount + $2 WHERE id = $1", entry_id, delta)
        await conn.execute("ALTER TABLE entries ENABLE TRIGGER entries_append_only")


async def test_a_replayed_rejected_command_is_answered_once(world: World) -> None:
    ledger = await world.service("ledger").start().ready()
    t0 = datetime.now(UTC) - timedelta(minutes=1)
    refused = PostDebit(**base("spend-x", "m4", t0), amount=5)
    await send_commands(world, refused, refused)
    await asyncio.sleep(1.0)
    await send_commands(world, refused)
    events = await outcomes(world, expect=1)
    assert [(r["idempotency_key"], r["reason"]) for r in of_type(events, "command.rejected")] == [
        ("spend-x", "insufficient_points")]
    status, body = ledger.get("/v1/programs/default/members/m4/balance")
    assert status == 200 and body["balance"] == 0
