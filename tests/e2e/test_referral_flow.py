"""Referrals through real Kafka, real PostgreSQL and earn, the ledger and referral as real processes: what needs
Kafka's delivery (the ledger's answers coming back on jifen.ledger.entries, partitions keyed by member, the outbox
relays, a referral process killed and restarted). The rules themselves are tested on the fast tier
(tests/integration/test_referral_service.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest

from services.referral.repository import invariants
from shared.contracts import topics
from shared.contracts.members import MemberEnrolled
from shared.contracts.purchases import PurchaseRefunded
from shared.contracts.referral_outcomes import ReferralRejected, ReferralRevoked, ReferralRewarded
from shared.contracts.referrals import ReferralAccepted
from shared.simulation import purchase_event
from shared.testing import cloud_event
from tests.support import STRUCTURED, ServiceProcess, World, read_all, send, wait_for

pytestmark = pytest.mark.e2e
DAY = timedelta(days=1)


def enrol(member: str, at: datetime, code: str | None = None, **fingerprints: str) -> bytes:
    return cloud_event(MemberEnrolled, f"enrol-{member}", at, {
        "member_id": member, **({"referral_code": code} if code else {}), "fingerprints": fingerprints},
        source="crm://signup")


def accept(referrer: str, referee: str, at: datetime) -> bytes:
    return cloud_event(ReferralAccepted, f"accept-{referee}", at, {
        "referrer_member_id": referrer, "referee_member_id": referee}, source="app://invite")


def buy(order: str, member: str, total: str, at: datetime) -> bytes:
    return orjson.dumps(purchase_event(f"buy-{order}", "pos://store-1", at, member, order, Decimal(total), []))


async def publish(world: World, topic: str, *events: tuple[str, bytes]) -> None:
    await send(world.infra.bootstrap, world.topic(topic), [(key.encode(), value, STRUCTURED) for key, value in events])


async def balances(ledger: ServiceProcess, *members: str) -> dict[str, tuple[int, int]]:
    found = {}
    for member in members:
        status, body = await asyncio.to_thread(ledger.get, f"/v1/programs/default/members/{member}/balance")
        assert status == 200, body
        found[member] = (body["available"], body["pending"])
    return found


async def test_referrals_reward_refuse_revoke_and_expire_through_kafka(world: World) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    ledger, _earn = await world.start_ledger_and_earn()
    referral = await world.service("referral", JIFEN_EXPIRY_INTERVAL_S="0.5").start().ready()
    status, body = await asyncio.to_thread(referral.get, "/v1/programs/default/members/rex/referral-code")
    assert status == 200, body
    code = body["code"]

    await publish(world, topics.MEMBERS, ("rex", enrol("rex", now - 100 * DAY, device="d-rex", payment="card-rex")),
                  ("eve", enrol("eve", now - 3 * DAY, code, device="d-eve", payment="card-eve")),
                  ("sam", enrol("sam", now - 3 * DAY, code, device="d-sam", payment="card-rex")))
    # Roy's referrals: Kim's will be refunded; Ivy's 30 days end a few seconds into the test, with no purchase.
    await publish(world, topics.REFERRALS, ("kim", accept("roy", "kim", now - 3 * DAY)),
                  ("ivy", accept("roy", "ivy", now - 30 * DAY + timedelta(seconds=3))))
    await publish(world, topics.PURCHASES, ("eve", buy("o-eve", "eve", "80.00", now - 2 * DAY)),
                  ("sam", buy("o-sam", "sam", "120.00", now - 2 * DAY)),
                  ("kim", buy("o-kim", "kim", "90.00", now - 2 * DAY)))

    async def rewarded() -> dict[str, tuple[int, int]] | None:
        found = await balances(ledger, "rex", "eve", "sam", "roy", "kim")
        return found if found["rex"] == (0, 50) and found["roy"] == (0, 50) else None

    # Both sides through the ledger, the referral rewards pending for the return window; earn's at once.
    assert await wait_for(rewarded, what="both referrals rewarded") == {
        "rex": (0, 50), "eve": (80, 20), "sam": (120, 0), "roy": (0, 50), "kim": (90, 20)}

    # The referral service dies; the refund waits in Kafka and is taken when it comes back, exactly once.
    referral.kill9()
    refund = cloud_event(PurchaseRefunded, "refund-o-kim", now - DAY, {
        "member_id": "kim", "order_id": "o-kim", "refund_id": "r-kim", "currency": "CNY", "total": "90.00"},
        source="pos://store-1")
    await publish(world, topics.PURCHASES, ("kim", refund))
    await referral.start().ready()

    async def revoked() -> dict[str, tuple[int, int]] | None:
        found = await balances(ledger, "roy", "kim")
        return found if found == {"roy": (0, 0), "kim": (0, 0)} else None

    await wait_for(revoked, what="both of kim's referral rewards reversed")

    outcomes = await read_all(world.infra.bootstrap, world.topic(topics.REFERRAL_OUTCOMES), expect=5)
    assert sorted(_outcome(orjson.loads(r.value)) for r in outcomes) == [
        ("eve", ReferralRewarded.TYPE, "50/20"), ("ivy", ReferralRejected.TYPE, "expired"),
        ("kim", ReferralRevoked.TYPE, "50/20"), ("kim", ReferralRewarded.TYPE, "50/20"),
        ("sam", ReferralRejected.TYPE, "self_referral")]
    assert {r.key for r in outcomes if orjson.loads(r.value)["data"]["referee_member_id"] == "kim"} == {b"roy"}

    status, body = await asyncio.to_thread(referral.get, "/v1/programs/default/referrals/stats")
    assert status == 200, body
    assert {k: body["programme"][k] for k in ("accepted", "qualified", "rewarded", "revoked", "rejected")} == {
        "accepted": 4, "qualified": 2, "rewarded": 1, "revoked": 1,
        "rejected": {"expired": 1, "self_referral": 1}}
    conn = await world.db()
    try:
        await conn.execute("SET search_path = referral")
        assert await invariants.broken(conn) == []
    finally:
        await conn.close()


def _outcome(event: dict[str, Any]) -> tuple[str, str, str]:
    data = event["data"]
    if event["type"] == ReferralRejected.TYPE:
        return data["referee_member_id"], event["type"], data["reason"]
    return data["referee_member_id"], event["type"], f"{data['referrer_points']}/{data['referee_points']}"
