"""PostgreSQL stops while tills and desks keep calling: every service answers 503 `unavailable` with `Retry-After`,
never a 500, for its reads and its writes, with the caller's key already cached (as a busy till's is); and each
answers again once the database is back."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from tests.support import ServiceProcess, World, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.stops_postgres]

MEMBER = "/v1/programs/default/members/outage-1"


def call(svc: ServiceProcess, method: str, path: str, body: Any = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    return svc.exchange(method, path, body, headers=headers)


def calls(services: dict[str, ServiceProcess]) -> list[tuple[str, str, str, Any, dict[str, str]]]:
    """A read and a write of every service that has one (earn and tiers serve reads only), as a till or the
    service desk makes them: (service, method, path, body, headers)."""
    key = {"Idempotency-Key": f"outage-{uuid.uuid4().hex[:8]}"}
    return [
        ("earn", "GET", "/v1/programs", None, {}),
        ("ledger", "GET", f"{MEMBER}/balance", None, {}),
        ("ledger", "GET", f"{MEMBER}/entries", None, {}),
        ("ledger", "POST", f"{MEMBER}/awards", {"points": 5, "reason": "outage drill"}, key),
        ("redemption", "GET", "/v1/programs/default/rewards?member_id=outage-1", None, {}),
        ("redemption", "POST", "/v1/programs/default/redemptions", {"member_id": "outage-1", "reward_id": "coupon-5"},
         key),
        ("redemption", "POST", "/v1/programs/default/payments",
         {"member_id": "outage-1", "order_id": "o-outage", "points": 100, "basket_total": "50.00"}, key),
        ("tiers", "GET", f"{MEMBER}/tier", None, {}),
        ("referral", "GET", f"{MEMBER}/referral-code", None, {}),
        ("referral", "GET", "/v1/programs/default/referrals?status=review", None, {}),
        ("referral", "POST", "/v1/programs/default/referrals/rf-none/approve", None, {}),
    ]


async def test_a_database_outage_is_503_with_retry_after_from_every_service_never_500(world: World) -> None:
    postgres = world.infra.postgres
    if postgres is None:
        pytest.skip("the database was given by the environment; the tests may not restart it")
    cached = {"JIFEN_API_KEY_CACHE_S": "600"}
    services = {name: world.service(name, **cached).start()
                for name in ("ledger", "earn", "redemption", "tiers", "referral")}
    for svc in services.values():
        await svc.ready(timeout=90)
    planned = calls(services)
    # Before: every call answers as it should (this also puts the key in each service's cache).
    for name, method, path, body, headers in planned:
        status, _, answer = await asyncio.to_thread(call, services[name], method, path, body, headers)
        assert status < 500, (name, method, path, status, answer)
    await asyncio.to_thread(postgres.stop, "immediate")
    try:
        for name, method, path, body, headers in planned:
            status, sent, answer = await asyncio.to_thread(call, services[name], method, path, body, headers)
            if name == "earn":  # earn's one route reads the programme folder, not the database
                assert status == 200, (path, status, answer)
                continue
            assert status == 503, (name, method, path, status, answer)
            assert answer["error"] == "unavailable" and answer["detail"], (name, path, answer)
            assert int(sent["retry-after"]) >= 1, (name, path, sent)
    finally:
        await asyncio.to_thread(postgres.start)

    async def answering() -> bool:
        for name, method, path, body, headers in planned:
            if method == "GET":
                status, _, _ = await asyncio.to_thread(call, services[name], method, path, body, headers)
                if status >= 500:
                    return False
        return True

    await wait_for(answering, timeout=60, what="every service answering again after the outage")
