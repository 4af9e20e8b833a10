"""Points as payment on the fast tier (ledger and redemption harnesses, one clock): an authorisation checked against
the programme's share and minimum, a partial capture, refunds of the order giving back the captured points in
proportion, a void, and an authorisation never captured released by the ledger's own sweeper at its TTL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from shared.contracts import topics
from shared.contracts.purchases import PurchaseRefunded
from shared.contracts.redemptions import PaymentCaptured, PaymentVoided
from shared.testing import cloud_event
from tests.integration.test_redemption_service import BASE, NOW, Chain, chain, count_of

__all__ = ["chain"]  # the fixture, shared with the redemption tests


def refund(refund_id: str, order_id: str, member: str, total: str, currency: str = "CNY") -> bytes:
    return cloud_event(PurchaseRefunded, refund_id, NOW, {
        "program_id": "fast", "member_id": member, "order_id": order_id, "refund_id": refund_id,
        "currency": currency, "total": total}, source="pos://store-1")


async def pay(chain: Chain, member: str, order: str, points: int, basket: str, key: str,
              **extra: Any) -> tuple[int, Any]:
    status, body, _ = await chain.call("POST", "/payments", {"member_id": member, "order_id": order, "points": points,
                                                             "basket_total": basket, **extra}, key=key)
    return status, body


async def test_points_pay_part_of_a_basket_and_refunds_of_the_order_give_back_their_share(chain: Chain) -> None:
    await chain.credit("cy", 5000)
    status, paid = await pay(chain, "cy", "o-9", 2000, "100.00", "pay-1")  # 20 yuan of a 100 yuan basket
    assert (status, paid["status"], paid["value"]) == (202, "pending", "20.00")
    status, paid = await chain.service.get(f"{BASE}/payments/{paid['payment_id']}")
    assert (paid["status"], paid["points"]) == ("authorised", 2000) and paid["expires_at"]
    assert (await chain.balance("cy"))["held"] == 2000
    pid = paid["payment_id"]

    refusals = [(6000, "100.00", "pay-2", {}, "exceeds_basket_share"),  # 60 yuan is over half the basket
                (50, "100.00", "pay-3", {}, "below_minimum_points"),
                (200, "100.00", "pay-4", {"currency": "USD"}, "currency_not_accepted")]
    for points, basket, key, extra, reason in refusals:
        status, body = await pay(chain, "cy", "o-10", points, basket, key, **extra)
        assert (status, body["error"]) == (409, reason) and body["detail"]
    status, body = await pay(chain, "cy", "o-9", 100, "100.00", "pay-5")
    assert (status, body["error"]) == (409, "order_has_payment")
    status, body = await pay(chain, "cy", "o-9", 2000, "100.00", "pay-1")
    assert (status, body["payment_id"]) == (201, pid)  # the same key and body: the same payment
    status, body = await pay(chain, "cy", "o-9", 1999, "100.00", "pay-1")
    assert (status, body["error"]) == (422, "idempotency_conflict")

    status, body, out = await chain.call("POST", f"/payments/{pid}/capture", {"points": 2001})
    assert (status, body["error"]) == (409, "capture_exceeds_authorisation")
    status, body, out = await chain.call("POST", f"/payments/{pid}/capture", {"points": 1500})
    assert (status, body["status"]) == (202, "capturing")
    assert [(c["points"], c["value"], c["currency"]) for c in out.of(PaymentCaptured)] == [(1500, "15.00", "CNY")]
    shown = await chain.balance("cy")
    assert (shown["available"], shown["held"]) == (3500, 0)  # the 500 not captured went back at once

    # Half the order refunded: half the captured points back; the other half: the rest; more: nothing.
    out = await chain.pipeline.send(topics.PURCHASES, refund("r-1", "o-9", "cy", "50.00"), key="cy")
    assert out.dead == [] and (await chain.balance("cy"))["available"] == 4250
    out = await chain.pipeline.send(topics.PURCHASES, refund("r-1", "o-9", "cy", "50.00"),  # a replay
                                    refund("r-2", "o-9", "cy", "50.00"), refund("r-3", "o-9", "cy", "10.00"),
                                    refund("r-x", "o-unpaid", "cy", "10.00"), key="cy")
    assert (await chain.balance("cy"))["available"] == 5000
    status, paid = await chain.service.get(f"{BASE}/payments/{pid}")
    assert (paid["status"], paid["captured_points"], paid["captured_value"], paid["points_returned"]) == (
        "captured", 1500, "15.00", 1500)
    out = await chain.pipeline.send(topics.PURCHASES, refund("r-4", "o-9", "cy", "1.00", currency="USD"), key="cy")
    assert out.reasons == ["currency_not_accepted"]
    status, body, _ = await chain.call("POST", f"/payments/{pid}/void")
    assert (status, body["error"]) == (409, "payment_captured")


async def test_a_refund_before_the_capture_is_given_back_when_the_capture_is(chain: Chain) -> None:
    await chain.credit("da", 1000)
    _, paid = await pay(chain, "da", "o-1", 400, "10.00", "p-1")
    pid = paid["payment_id"]
    status, body, _ = await chain.call("POST", f"/payments/{pid}/capture", settle=False)
    assert (status, body["status"]) == (202, "capturing")
    await chain.pipeline.send(topics.PURCHASES, refund("r-1", "o-1", "da", "2.50"), key="da")  # a quarter
    await chain.flow()
    _, paid = await chain.service.get(f"{BASE}/payments/{pid}")
    assert (paid["status"], paid["captured_points"], paid["points_returned"]) == ("captured", 400, 100)
    assert (await chain.balance("da"))["available"] == 700


async def test_an_authorisation_never_captured_is_released_at_its_ttl_and_a_void_releases_at_once(
        chain: Chain) -> None:
    await chain.credit("ed", 1000)
    status, paid = await pay(chain, "ed", "o-1", 300, "10.00", "p-1")
    status, other = await pay(chain, "ed", "o-2", 200, "10.00", "p-2")
    assert (await chain.balance("ed"))["held"] == 500
    status, voided, out = await chain.call("POST", f"/payments/{other['payment_id']}/void")
    assert (status, voided["status"]) == (202, "voiding")
    assert [v["reason"] for v in out.of(PaymentVoided)] == ["voided"]
    status, voided = await chain.service.get(f"{BASE}/payments/{other['payment_id']}")
    assert voided["status"] == "voided"

    chain.clock.now += timedelta(seconds=121)  # past the authorisation's 120 s: the ledger's sweeper releases it
    out = await chain.pipeline.run_job("ledger", "sweeper", chain.clock.now)
    assert [(v["payment_id"], v["reason"]) for v in out.of(PaymentVoided)] == [(paid["payment_id"], "expired")]
    shown = await chain.balance("ed")
    assert (shown["available"], shown["held"]) == (1000, 0)
    status, body, _ = await chain.call("POST", f"/payments/{paid['payment_id']}/capture")
    assert (status, body["error"]) == (409, "payment_expired")
    metrics = await chain.metrics()
    assert count_of(metrics, "jifen_points_payments_total", program_id="fast", status="expired") == 1
    assert count_of(metrics, "jifen_redemption_refusals_total", operation="capture", reason="payment_expired") == 1


async def test_a_hold_the_ledger_refuses_rejects_the_payment_with_its_reason(chain: Chain) -> None:
    await chain.credit("fi", 100)
    status, body, out = await chain.call("POST", "/payments?wait=0", {
        "member_id": "fi", "order_id": "o-1", "points": 300, "basket_total": "10.00"}, key="p-1")
    status, paid = await chain.service.get(f"{BASE}/payments/{body['payment_id']}")
    assert (paid["status"], paid["reason"]) == ("rejected", "insufficient_points")
    assert [v["reason"] for v in out.of(PaymentVoided)] == ["rejected"]
    status, body = await pay(chain, "fi", "o-1", 100, "10.00", "p-2")  # a rejected payment frees the order
    assert status == 202
