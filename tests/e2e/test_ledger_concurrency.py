"""Two ledger processes over the same commands. In one consumer group they hand partitions to each other
(rebalances) while the feed runs; in two groups both own every partition at once for the whole run. Either
way each command is applied once, every sequence stays gapless and every chain verifies (the world fixture
runs `jifen ledger verify` afterwards)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from shared.contracts import topics
from shared.contracts.ledger_commands import Cause, LedgerCommand, PostCredit, PostDebit
from shared.metrics import scrape
from tests.support import World, read_all, send_commands, wait_for

pytestmark = pytest.mark.e2e
MEMBERS = 60
ROUNDS = 10


def feed(t0: datetime) -> list[LedgerCommand]:
    """Per member and round: earn 100, spend 30, earn 50, spend 100, which is affordable only in this order and
    leaves 20 a round. Applied twice or out of order, balances or rejections would show it."""
    commands: list[LedgerCommand] = []
    for r in range(ROUNDS):
        for m in range(MEMBERS):
            member = f"m{m}"
            for step, (kind, amount) in enumerate((("earn", 100), ("spend", 30), ("earn", 50), ("spend", 100))):
                key = f"{kind}:{member}:{r}:{step}"
                args = dict(idempotency_key=key, program_id="default", member_id=member, amount=amount,
                            occurred_at=t0, cause=Cause(source_event_id=f"test|{key}"))
                commands.append(PostCredit(**args) if kind == "earn" else PostDebit(**args))
    return commands


async def settled(world: World, expected: int) -> None:
    conn = await world.db()
    try:
        async def count() -> bool:
            return await conn.fetchval("SELECT count(*) FROM ledger.commands") == expected

        await wait_for(count, timeout=120, what=f"{expected} commands applied")
        rows = await conn.fetch("SELECT outcome, count(*) FROM ledger.commands GROUP BY outcome")
        assert {r["outcome"]: r["count"] for r in rows} == {"posted": expected}
        balances = await conn.fetch("SELECT member_id, balance FROM ledger.accounts WHERE kind = 'member'")
        assert {r["member_id"]: r["balance"] for r in balances} == {f"m{m}": 20 * ROUNDS for m in range(MEMBERS)}
        assert await conn.fetchval("SELECT count(*) FROM ledger.entries") == expected
    finally:
        await conn.close()
    # Each entry is announced once: a losing consumer's outcomes rolled back with its transaction.
    announced = await read_all(world.infra.bootstrap, world.topic(topics.LEDGER_ENTRIES), expect=expected)
    keys = [orjson.loads(r.value)["data"]["idempotency_key"] for r in announced]
    assert len(keys) == len(set(keys)) == expected


async def test_two_ledgers_in_one_group_hand_over_partitions_mid_feed(world: World) -> None:
    first = await world.service("ledger").start().ready()
    commands = feed(datetime.now(UTC) - timedelta(minutes=1))
    third = len(commands) // 3
    await send_commands(world, *commands[:third])
    second = world.service("ledger").start()  # joins the group: partitions move while the feed runs
    await send_commands(world, *commands[third:2 * third])
    await second.ready()
    first.kill9()  # its partitions move again, uncommitted work and all
    await send_commands(world, *commands[2 * third:])
    await settled(world, len(commands))


async def test_two_ledgers_owning_the_same_partitions_at_once_apply_each_command_once(world: World) -> None:
    a = world.service("ledger", JIFEN_CONSUMER_GROUP=f"{world.prefix}ledger-a").start()
    b = world.service("ledger", JIFEN_CONSUMER_GROUP=f"{world.prefix}ledger-b").start()
    await asyncio.gather(a.ready(), b.ready())
    commands = feed(datetime.now(UTC) - timedelta(minutes=1))
    await send_commands(world, *commands)
    await settled(world, len(commands))

    def total(m: dict[str, float], family: str) -> float:
        return sum(v for k, v in m.items() if k == family or k.startswith(family + "{"))

    async def both_done() -> tuple[dict[str, float], dict[str, float]] | None:
        # Each command is posted by one process and seen as a replay by the other, once both have read it all.
        ma, mb = scrape(a.port), scrape(b.port)
        seen = sum(total(m, "jifen_ledger_command_replays_total") for m in (ma, mb))
        return (ma, mb) if seen >= len(commands) else None

    ma, mb = await wait_for(both_done, timeout=60, what="both ledgers to have read every command")
    assert total(ma, "jifen_ledger_entries_total") + total(mb, "jifen_ledger_entries_total") == len(commands)
    replays = total(ma, "jifen_ledger_command_replays_total") + total(mb, "jifen_ledger_command_replays_total")
    assert replays == len(commands)
