"""Redemption end to end: the ledger and redemption as real processes over real Kafka and PostgreSQL, driven over
HTTP. A coupon redeemed and used once; a goods redemption cancelled, its points back with their original expiry;
part of a basket paid with points, captured, half the order refunded and half the points back; an authorisation
never captured released by the ledger at its TTL. The world fixture runs `jifen ledger verify` afterwards; each test
ends with the redemption service's own invariants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.contracts import topics
from shared.contracts.ledger_commands import Cause, PostCredit
from shared.contracts.purchases import PurchaseRefunded
from shared.testing import cloud_event
from tests.integration.test_redemption_service import check_redemption_invariants, count_of
from tests.support import STRUCTURED, ServiceProcess, World, send, send_commands, wait_for

pytestmark = pytest.mark.e2e
NOW = datetime.now(UTC).replace(microsecond=0)
PROGRAMMES = """program_id: {program}
name: Redemption end to end ({program})
version: 1
effective_from: "2020-01-01T00:00:00Z"
timezone: Asia/Shanghai
rewards:
  - {{reward_id: coupon-5, name: 5 yuan coupon, kind: coupon, points: 100, cancel_hours: 24,
     coupon: {{value: "5.00", currency: CNY, valid_days: 30}}}}
  - {{reward_id: mug, name: A mug, kind: goods, points: 300, stock: 1000, cancel_hours: 48}}
  - {{reward_id: limited, name: Limited edition, kind: goods, points: 50, stock: 5}}
redemption:
  hold_ttl_seconds: {hold_ttl}
  points_payment: {{points_per_unit: "100", currency: CNY, min_points: 100, max_share: "0.5",
                    authorisation_ttl_seconds: {auth_ttl}}}
"""


def programme_folder(folder: Path) -> Path:
    """`e2e`: holds and authorisations that last; `brief`: both time out within seconds."""
    (folder / "e2e.yaml").write_text(PROGRAMMES.format(program="e2e", hold_ttl=300, auth_ttl=300))
    (folder / "brief.yaml").write_text(PROGRAMMES.format(program="brief", hold_ttl=4, auth_ttl=3))
    return folder


async def start(world: World, folder: Path) -> tuple[ServiceProcess, ServiceProcess]:
    programmes = str(programme_folder(folder))  # one folder for both, as deployed services share it
    ledger = world.service("ledger", JIFEN_SWEEP_INTERVAL_S="1", JIFEN_PROGRAMMES_DIR=programmes).start()
    redemption = world.service("redemption", JIFEN_PROGRAMMES_DIR=programmes, JIFEN_COUPON_KEY="e2e-coupon-key").start()
    await ledger.ready()
    await redemption.ready()
    return ledger, redemption


async def credit(world: World, program: str, *grants: tuple[str, int, datetime | None]) -> None:
    """Points for members, as the ledger's commands (what earn would send)."""
    await send_commands(world, *(
        PostCredit(idempotency_key=f"credit:{program}:{member}:{n}", program_id=program, member_id=member,
                   amount=points, occurred_at=NOW - timedelta(minutes=5), expires_at=expires,
                   cause=Cause(source_event_id=f"test|{member}|{n}"))
        for n, (member, points, expires) in enumerate(grants)))


async def available(ledger: ServiceProcess, program: str, member: str, points: int) -> dict[str, Any]:
    """The member's balance once `points` are available (and none held)."""
    async def check() -> dict[str, Any] | None:
        status, body = ledger.get(f"/v1/programs/{program}/members/{member}/balance")
        return body if status == 200 and body["available"] == points and body["held"] == 0 else None

    found: dict[str, Any] = await wait_for(check, what=f"{member} to have {points} available")
    return found


def client(service: ServiceProcess, token: str, connections: int = 100) -> httpx.AsyncClient:
    # An idle connection is dropped after 1 s, well before uvicorn closes it (5 s): reusing one the server is closing
    # at that moment fails as a ReadError, a race of the client's pool, not an answer of the service.
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.port}", timeout=60,
                             headers={"Authorization": f"Bearer {token}"},
                             limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections,
                                                 keepalive_expiry=1.0))


async def final(http: httpx.AsyncClient, program: str, redemption_id: str) -> dict[str, Any]:
    """The redemption once it is no longer pending."""
    async def settled() -> dict[str, Any] | None:
        body: dict[str, Any] = (await http.get(f"/v1/programs/{program}/redemptions/{redemption_id}")).json()
        return body if body["status"] != "pending" else None

    found: dict[str, Any] = await wait_for(settled, what=f"redemption {redemption_id} to settle")
    return found


async def test_a_coupon_is_used_once_and_a_cancelled_mug_gives_its_points_back_with_their_expiry(
        world: World, tmp_path: Path) -> None:
    ledger, redemption = await start(world, tmp_path)
    soon, later = NOW + timedelta(days=10), NOW + timedelta(days=400)
    await credit(world, "e2e", ("ann", 400, soon), ("ann", 1000, later))
    await available(ledger, "e2e", "ann", 1400)
    async with client(redemption, world.token) as http:
        asked = await http.post("/v1/programs/e2e/redemptions?wait=10", headers={"Idempotency-Key": "ann-1"},
                                json={"member_id": "ann", "reward_id": "coupon-5"})
        coupon = asked.json()
        assert (asked.status_code, coupon["status"]) == (201, "completed"), coupon
        code = coupon["coupon"]["code"]
        used = await http.post(f"/v1/programs/e2e/coupons/{code}/use", json={"order_id": "o-1"})
        assert (used.status_code, used.json()["status"]) == (200, "used")
        again = await http.post(f"/v1/programs/e2e/coupons/{code}/use", json={"order_id": "o-2"})
        assert (again.status_code, again.json()["error"]) == (409, "coupon_used")

        asked = await http.post("/v1/programs/e2e/redemptions?wait=10", headers={"Idempotency-Key": "ann-2"},
                                json={"member_id": "ann", "reward_id": "mug"})
        mug = asked.json()
        assert (asked.status_code, mug["status"], mug["fulfilment"]) == (201, "completed", "to_fulfil")
        await available(ledger, "e2e", "ann", 1000)  # coupon and mug both paid from the lot expiring soonest
        cancelled = await http.post(f"/v1/programs/e2e/redemptions/{mug['redemption_id']}/cancel")
        assert (cancelled.status_code, cancelled.json()["status"]) == (200, "cancelled")
    balance = await available(ledger, "e2e", "ann", 1300)
    assert balance["next_expiry"] == {"points": 300, "date": soon.isoformat().replace("+00:00", "Z")}
    status, page = ledger.get("/v1/programs/e2e/members/ann/entries")
    reversal = page["entries"][0] if status == 200 else page
    assert (reversal["kind"], reversal["amount"]) == ("reversal", 300)
    assert [datetime.fromisoformat(lot["expires_at"]) for lot in reversal["lots"]] == [soon]
    await check_redemption_invariants(world.database_url)


def refunded(refund_id: str, order_id: str, member: str, total: str) -> bytes:
    return cloud_event(PurchaseRefunded, refund_id, NOW, {
        "program_id": "e2e", "member_id": member, "order_id": order_id, "refund_id": refund_id, "currency": "CNY",
        "total": total}, source="pos://store-1")


async def test_points_pay_part_of_a_basket_half_come_back_with_half_the_order_and_an_uncaptured_one_expires(
        world: World, tmp_path: Path) -> None:
    ledger, redemption = await start(world, tmp_path)
    await credit(world, "e2e", ("bo", 5000, None))
    await credit(world, "brief", ("bo", 1000, None))
    await available(ledger, "e2e", "bo", 5000)
    await available(ledger, "brief", "bo", 1000)
    async with client(redemption, world.token) as http:
        asked = await http.post("/v1/programs/e2e/payments?wait=10", headers={"Idempotency-Key": "bo-pay-1"}, json={
            "member_id": "bo", "order_id": "o-77", "points": 2000, "basket_total": "100.00"})
        paid = asked.json()
        assert (asked.status_code, paid["status"], paid["value"]) == (201, "authorised", "20.00"), paid
        captured = await http.post(f"/v1/programs/e2e/payments/{paid['payment_id']}/capture?wait=10")
        assert (captured.status_code, captured.json()["status"], captured.json()["captured_value"]) == (
            200, "captured", "20.00")
        await available(ledger, "e2e", "bo", 3000)
        await send(world.infra.bootstrap, world.topic(topics.PURCHASES),
                   [(b"bo", refunded("r-1", "o-77", "bo", "50.00"), STRUCTURED)])
        await available(ledger, "e2e", "bo", 4000)  # half the order back: half the points

        asked = await http.post("/v1/programs/brief/payments?wait=10", headers={"Idempotency-Key": "bo-pay-2"},
                                json={"member_id": "bo", "order_id": "o-78", "points": 400, "basket_total": "10.00"})
        brief = asked.json()
        assert (asked.status_code, brief["status"]) == (201, "authorised"), brief

        async def expired() -> dict[str, Any] | None:
            body: dict[str, Any] = (await http.get(f"/v1/programs/brief/payments/{brief['payment_id']}")).json()
            return body if body["status"] == "expired" else None

        await wait_for(expired, what="the authorisation released at its 3 s TTL by the ledger's sweeper")
        late = await http.post(f"/v1/programs/brief/payments/{brief['payment_id']}/capture")
        assert (late.status_code, late.json()["error"]) == (409, "payment_expired")
    await available(ledger, "brief", "bo", 1000)
    async with httpx.AsyncClient() as plain:
        shown = (await plain.get(redemption.url("/metrics"))).text
    assert count_of(shown, "jifen_points_payments_total", program_id="brief", status="expired") == 1
    await check_redemption_invariants(world.database_url)
