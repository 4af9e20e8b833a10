"""The ledger as a service on the fast tier (its real consumer, sweeper job and HTTP routes over real PostgreSQL,
no Kafka), with its clock passed in: holds, expiry by its own sweeper, reversals into debt, transfers, adjustments,
rejections with reasons, the balance and entries endpoints, and `jifen ledger verify` passing on the result and
failing on a tampered entry. Moved from tests/e2e/test_ledger_commands.py: the sweeper no longer has to be slept
through, it runs at the time the test names."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from cli.main import main
from services.ledger.app import spec as ledger_spec
from shared import envelope, keys
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
from shared.testing import Delivered, Pipeline, ServiceHarness
from tests.conftest import check_ledger_invariants
from tests.support import Infra

T0 = datetime.now(UTC).replace(microsecond=0)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def ledger(infra: Infra) -> AsyncIterator[tuple[Pipeline, Clock]]:
    clock = Clock()
    dsn = await infra.new_database("ledger_")
    # A pipeline of the ledger alone: what its sweeper emits on the commands topic comes back to its consumer.
    async with Pipeline(ServiceHarness(ledger_spec(clock=clock), dsn)) as pipeline:
        yield pipeline, clock
    await check_ledger_invariants(dsn)


def base(key: str, member: str, at: datetime = T0) -> dict[str, Any]:
    return dict(idempotency_key=key, program_id="default", member_id=member, occurred_at=at,
                cause=Cause(source_event_id=f"test|{key}"))


async def send(pipeline: Pipeline, *commands: LedgerCommand) -> Delivered:
    return await pipeline.send(topics.LEDGER_COMMANDS, *(
        envelope.encode(c.idempotency_key, "test", c.TYPE, c.occurred_at, c.model_dump(mode="json"))
        for c in commands), key=commands[0].member_id)


def of_type(out: Delivered, kind: str) -> list[dict[str, Any]]:
    return [m.data for m in out.messages if m.type == f"jifen.ledger.{kind}.v1"]


async def balance(pipeline: Pipeline, member: str) -> dict[str, Any]:
    status, body = await pipeline["ledger"].get(f"/v1/programs/default/members/{member}/balance")
    assert status == 200, body
    return dict(body)


async def test_holds_captures_expiry_by_the_sweeper_and_rejections(ledger: tuple[Pipeline, Clock]) -> None:
    pipeline, clock = ledger
    soon, ttl = T0 + timedelta(seconds=15), 3
    out = await send(
        pipeline,
        PostCredit(**base("earn-a", "m1"), amount=500, available_at=T0 - timedelta(hours=1), expires_at=soon),
        PostCredit(**base("earn-b", "m1"), amount=300, available_at=T0 + timedelta(days=1)),  # pending
        PostCredit(**base("earn-c", "m1"), amount=200),
        PlaceHold(**base("hold-1", "m1"), hold_id="h1", amount=100),
        CaptureHold(**base("capture-1", "m1"), hold_id="h1", amount=60),
        PostDebit(**base("too-much", "m1"), amount=10_000),
        PlaceHold(**base("hold-2", "m1"), hold_id="h2", amount=50, ttl_seconds=ttl),
        CaptureHold(**base("capture-again", "m1"), hold_id="h1", amount=10),
    )
    # Nothing is due yet: the sweeper sends nothing.
    assert (await pipeline.run_job("ledger", "sweeper", T0)).messages == []
    # Past h2's TTL the sweeper resolves it; past lot A's expiry it expires what is left of lot A.
    clock.now = T0 + timedelta(seconds=5)
    out += await pipeline.run_job("ledger", "sweeper", clock.now)
    clock.now = T0 + timedelta(seconds=20)
    out += await pipeline.run_job("ledger", "sweeper", clock.now)
    found = await balance(pipeline, "m1")
    assert {k: found[k] for k in ("balance", "available", "pending", "held", "lifetime_earned", "debt",
                                  "next_expiry")} == {
        "balance": 500, "available": 200, "pending": 300, "held": 0, "lifetime_earned": 1000, "debt": 0,
        "next_expiry": None}
    posted = of_type(out, "entry.posted")
    assert [(e["kind"], e["amount"]) for e in posted] == [
        ("earn", 500), ("earn", 300), ("earn", 200), ("redeem", -60), ("expire", -440)]
    assert posted[3]["hold_id"] == "h1" and posted[4]["idempotency_key"].startswith("expire:")
    assert [(h["hold_id"], h["amount"]) for h in of_type(out, "hold.placed")] == [("h1", 100), ("h2", 50)]
    assert [(h["hold_id"], h["outcome"], h["captured"], h["released"]) for h in of_type(out, "hold.resolved")] \
        == [("h1", "captured", 60, 40), ("h2", "expired", 0, 50)]
    assert [(r["idempotency_key"], r["reason"]) for r in of_type(out, "command.rejected")] == [
        ("too-much", "insufficient_points"), ("capture-again", "hold_already_resolved")]
    # A second sweep finds nothing more to do.
    assert (await pipeline.run_job("ledger", "sweeper", clock.now)).messages == []

    status, page = await pipeline["ledger"].get("/v1/programs/default/members/m1/entries?limit=2")
    assert status == 200 and [e["kind"] for e in page["entries"]] == ["expire", "redeem"]
    assert page["open_holds"] == [] and page["next_before_seq"] == 4
    status, older = await pipeline["ledger"].get(
        f"/v1/programs/default/members/m1/entries?before_seq={page['next_before_seq']}")
    earns = {e["idempotency_key"]: e["lots"][0] for e in older["entries"]}
    assert earns["earn-a"]["unspent"] == 0 and earns["earn-b"]["unspent"] == 300 and earns["earn-c"]["unspent"] == 200


async def test_the_sweeper_knows_its_commands_by_the_keys_keys_py_builds_and_sends_a_refused_one_once(
        ledger: tuple[Pipeline, Clock]) -> None:
    """The sweeper's SQL recognises an expiry command by its key (`LOT_EXPIRY || lot.id`, `HOLD_EXPIRY ||
    hold.hold_id`): the shape must be keys.lot_expiry's and keys.hold_expiry's, or a command the ledger refused
    would be sent again on every sweep. The sweeper here runs ahead of the ledger's clock, which refuses both."""
    pipeline, clock = ledger
    out = await send(pipeline, PostCredit(**base("earn-s", "m9"), amount=80, expires_at=T0 + timedelta(seconds=10)),
                     PlaceHold(**base("hold-s", "m9"), hold_id="hs", amount=30, ttl_seconds=5))
    (lot,) = [e["lot"]["lot_id"] for e in of_type(out, "entry.posted")]
    ahead = T0 + timedelta(minutes=1)
    swept = await pipeline.run_job("ledger", "sweeper", ahead)
    assert {(r["idempotency_key"], r["reason"]) for r in of_type(swept, "command.rejected")} == {
        (keys.lot_expiry(lot), "lot_not_due"), (keys.hold_expiry("hs"), "hold_not_due")}
    assert (await pipeline.run_job("ledger", "sweeper", ahead)).messages == []
    # Once the ledger's clock is there too, nothing is sent again: the refused keys are taken.
    clock.now = ahead
    assert (await pipeline.run_job("ledger", "sweeper", ahead)).messages == []
    assert (await balance(pipeline, "m9"))["held"] == 30


async def test_refund_after_spending_goes_into_debt_and_transfers_keep_expiry(
        ledger: tuple[Pipeline, Clock], infra: Infra, capfd: pytest.CaptureFixture[str]) -> None:
    pipeline, _ = ledger
    t0 = T0 - timedelta(minutes=5)
    expiry = t0 + timedelta(days=90)
    first = await send(pipeline,
                       PostCredit(**base("earn-1", "m2", t0), amount=100, expires_at=expiry),
                       PostDebit(**base("spend-1", "m2", t0), amount=80),
                       TransferPoints(**base("gift-1", "m2", t0), to_member_id="m3", amount=15))
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
    dead = await pipeline.send(topics.LEDGER_COMMANDS, bad_adjustment, bad_reversal, key="m2")
    assert dead.reasons == ["invalid_data", "invalid_data"] and dead.messages == []
    assert "reason" in dead.dead[0].detail and "exactly one of entry_id and entry_key" in dead.dead[1].detail
    out = await send(
        pipeline,
        # The purchase is refunded: earn knows the key it credited with, not the entry id. 100 back.
        ReverseEntry(**base("refund-1", "m2", t0), entry_key="earn-1"),
        ReverseEntry(**base("refund-x", "m3", t0), entry_key="earn-1"),  # a key names the entry on m3's account
        PostDebit(**base("spend-2", "m2", t0), amount=1),  # refused: the member owes points
        AdjustPoints(**base("adj-1", "m2", t0), direction="credit", amount=50, reason="service recovery",
                     actor="agent-7"))
    found = await balance(pipeline, "m2")
    # 100 earned, 80 spent, 15 given, 100 reversed: -95; the 50 adjustment repays part of it.
    assert (found["balance"], found["debt"], found["available"], found["lifetime_earned"]) == (-45, 45, -45, 50)
    assert sorted((r["idempotency_key"], r["reason"]) for r in of_type(out, "command.rejected")) == [
        ("refund-x", "entry_not_found"), ("spend-2", "negative_balance")]
    reversal = [e for e in of_type(out, "entry.posted") if e["kind"] == "reversal"]
    assert [(e["corrects_entry_id"], e["amount"], e["idempotency_key"]) for e in reversal] == [
        (earn_id, -100, "refund-1")]

    # `jifen ledger verify` passes on what the service wrote...
    dsn = pipeline["ledger"].spec.settings.asyncpg_dsn
    verify = ["ledger", "verify", "--database-url", dsn]

    async def jifen() -> tuple[int, str, str]:
        """`jifen ledger verify` in this process (same argv and code; it runs its own event loop, so in a thread)."""
        code = await asyncio.to_thread(main, verify)
        out, err = capfd.readouterr()
        return code, out, err

    code, stdout, err = await jifen()
    assert code == 0, stdout + err
    assert "hash chains" in stdout and "sum to zero" in stdout and "holds" in stdout and "every rule holds" in stdout
    # ...and names the entry once a stored amount is changed behind the ledger's back.
    conn = await asyncpg.connect(dsn, server_settings={"search_path": "ledger"})
    try:
        tampered = await conn.fetchval("SELECT id FROM entries WHERE command_key = 'spend-1'")
        await _alter_amount(conn, tampered, +1)
        try:
            code, stdout, err = await jifen()
        finally:
            await _alter_amount(conn, tampered, -1)
    finally:
        await conn.close()
    assert code == 1, stdout + err
    assert f"entry {tampered} " in err and "hash chain broken" in err


async def _alter_amount(conn: asyncpg.Connection, entry_id: int, delta: int) -> None:
    async with conn.transaction():
        await conn.execute("ALTER TABLE entries DISABLE TRIGGER entries_append_only")
        await conn.execute("UPDATE entries SET amount = amount + $2 WHERE id = $1", entry_id, delta)
        await conn.execute("ALTER TABLE entries ENABLE TRIGGER entries_append_only")


async def test_a_replayed_rejected_command_is_answered_once(ledger: tuple[Pipeline, Clock]) -> None:
    pipeline, _ = ledger
    refused = PostDebit(**base("spend-x", "m4", T0 - timedelta(minutes=1)), amount=5)
    out = await send(pipeline, refused, refused)
    out += await send(pipeline, refused)
    assert [(r["idempotency_key"], r["reason"]) for r in of_type(out, "command.rejected")] == [
        ("spend-x", "insufficient_points")]
    assert (await balance(pipeline, "m4"))["balance"] == 0


async def test_the_same_key_with_another_payload_is_rejected_with_its_reason(ledger: tuple[Pipeline, Clock]) -> None:
    pipeline, _ = ledger

    def credit(event_id: str, amount: int) -> bytes:
        cmd = PostCredit(**base("earn:x|1:base", "bob", T0 - timedelta(minutes=1)), amount=amount)
        return envelope.encode(event_id, "test", PostCredit.TYPE, cmd.occurred_at, cmd.model_dump(mode="json"))

    out = await pipeline.send(topics.LEDGER_COMMANDS, credit("c-1", 50), credit("c-1", 50), credit("c-2", 70),
                              key="bob")
    assert [m.type for m in out.messages] == ["jifen.ledger.entry.posted.v1", "jifen.ledger.command.rejected.v1"]
    assert out.messages[0].data["amount"] == 50
    assert (out.messages[1].data["reason"], out.messages[1].data["idempotency_key"]) == (
        "idempotency_conflict", "earn:x|1:base")
    assert (await balance(pipeline, "bob"))["available"] == 50
