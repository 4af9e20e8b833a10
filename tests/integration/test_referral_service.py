"""The referral service on the fast tier: referrals, enrolments and purchases through earn, the ledger and referral
(each service's real consumer, handlers and routes over one PostgreSQL, chained without Kafka), the expiry job at a
time the test names, the review queue and its decisions, the HTTP side, and the service's own invariants after
every test. Time is passed in: the referral service's clock is the test's."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
import yaml

from services.earn.app import spec as earn_spec
from services.ledger.app import spec as ledger_spec
from services.referral.app import spec as referral_spec
from services.referral.domain import referral_id
from services.referral.repository import invariants
from services.referral.settings import ReferralSettings
from services.referral.simulation import build_referral_feed, summary
from shared import auth, db
from shared.contracts import topics
from shared.contracts.ledger_commands import PostCredit, ReverseEntry
from shared.contracts.members import MemberEnrolled
from shared.contracts.purchases import PurchaseRefunded
from shared.contracts.referral_outcomes import ReferralRejected, ReferralRevoked, ReferralRewarded
from shared.contracts.referrals import ReferralAccepted
from shared.simulation import purchase_event
from shared.testing import Delivered, Pipeline, ServiceHarness, cloud_event
from tests.conftest import check_ledger_invariants
from tests.support import Infra

NOW = datetime.now(UTC).replace(microsecond=0)
DAY = timedelta(days=1)
PROGRAMMES = Path(__file__).resolve().parents[2] / "programmes"


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def referral_invariants(harness: ServiceHarness) -> None:
    async with harness.runtime.connection() as db:
        assert await invariants.broken(db) == []


@pytest.fixture
async def chain(infra: Infra) -> AsyncIterator[tuple[Pipeline, Clock]]:
    clock = Clock(NOW)
    dsn = await infra.new_database("referral_")
    async with Pipeline(ServiceHarness(earn_spec(), dsn), ServiceHarness(ledger_spec(), dsn),
                        ServiceHarness(referral_spec(clock=clock), dsn)) as pipeline:
        yield pipeline, clock
        await referral_invariants(pipeline["referral"])
    await check_ledger_invariants(dsn)


def enrol(member: str, at: datetime, code: str | None = None, program: str | None = None,
          **fingerprints: str) -> bytes:
    data: dict[str, Any] = {"member_id": member, **({"program_id": program} if program else {}),
                            **({"referral_code": code} if code else {}),
                            **({"fingerprints": fingerprints} if fingerprints else {})}
    return cloud_event(MemberEnrolled, f"enrol-{member}-{at.timestamp()}", at, data, source="crm://signup")


def accept(referrer: str, referee: str, at: datetime, code: str | None = None, program: str | None = None) -> bytes:
    data: dict[str, Any] = {"referrer_member_id": referrer, "referee_member_id": referee,
                            **({"program_id": program} if program else {}),
                            **({"referral_code": code} if code else {})}
    return cloud_event(ReferralAccepted, f"accept-{program or 'default'}-{referrer}-{referee}", at, data,
                       source="app://invite")


def buy(order: str, member: str, total: str, at: datetime, program: str | None = None) -> bytes:
    return orjson.dumps(purchase_event(f"buy-{order}", "pos://store-1", at, member, order, Decimal(total), [],
                                       program_id=program))


def refund(order: str, member: str, total: str, at: datetime, program: str | None = None) -> bytes:
    data = {"member_id": member, "order_id": order, "refund_id": f"refund-{order}", "currency": "CNY",
            "total": total, **({"program_id": program} if program else {})}
    return cloud_event(PurchaseRefunded, f"refund-{order}", at, data, source="pos://store-1")


async def code_of(pipeline: Pipeline, member: str, program: str = "default") -> str:
    status, body = await pipeline["referral"].get(f"/v1/programs/{program}/members/{member}/referral-code")
    assert status == 200, body
    return str(body["code"])


async def balance(pipeline: Pipeline, member: str, program: str = "default") -> tuple[int, int]:
    status, body = await pipeline["ledger"].get(f"/v1/programs/{program}/members/{member}/balance")
    assert status == 200, body
    return body["available"], body["pending"]


async def referrals(pipeline: Pipeline, member: str, program: str = "default") -> list[dict[str, Any]]:
    status, body = await pipeline["referral"].get(f"/v1/programs/{program}/members/{member}/referrals")
    assert status == 200, body
    return list(body["referrals"])


async def test_an_honest_referral_rewards_both_sides_through_the_ledger(chain: tuple[Pipeline, Clock]) -> None:
    pipeline, _ = chain
    await pipeline.send(topics.MEMBERS, enrol("rex", NOW - 100 * DAY, device="d-rex", payment="card-rex"), key="rex")
    code = await code_of(pipeline, "rex")
    assert await code_of(pipeline, "rex") == code  # stable: the same code on every ask
    typed = f"{code[:4].lower()}-{code[4:]}"  # as a person types it
    await pipeline.send(topics.MEMBERS, enrol("eve", NOW - 3 * DAY, typed, device="d-eve", payment="card-eve"),
                        key="eve")
    bought = NOW - 2 * DAY
    out = await pipeline.send(topics.PURCHASES, buy("o-eve-1", "eve", "80.00", bought), key="eve")
    assert out.dead == []
    [rewarded] = out.of(ReferralRewarded)
    assert (rewarded["referrer_member_id"], rewarded["referee_member_id"], rewarded["qualifying_order_id"],
            rewarded["referrer_points"], rewarded["referee_points"], rewarded["bonus_points"]) == (
        "rex", "eve", "o-eve-1", 50, 20, 0)
    credits = {c["idempotency_key"]: (c["member_id"], c["amount"], c["available_at"]) for c in out.of(PostCredit)
               if c["idempotency_key"].startswith("referral:")}
    rid = rewarded["referral_id"]
    available = (bought + 14 * DAY).isoformat().replace("+00:00", "Z")
    assert credits == {f"referral:{rid}:referrer": ("rex", 50, available),
                       f"referral:{rid}:referee": ("eve", 20, available)}
    # Eve's 80 from earn are hers at once; both referral rewards wait out the 14-day return window.
    assert await balance(pipeline, "eve") == (80, 20)
    assert await balance(pipeline, "rex") == (0, 50)
    [seen] = await referrals(pipeline, "eve")
    assert (seen["role"], seen["status"], seen["reason"], seen["via"], seen["referee_points"],
            seen["referrer_points"]) == ("referee", "rewarded", None, "enrolled", 20, 50)
    assert (await referrals(pipeline, "rex"))[0]["role"] == "referrer"

    # Eve keeps buying: the programme's referral quality is her spend after qualifying, less refunds.
    await pipeline.send(topics.PURCHASES, buy("o-eve-2", "eve", "30.50", bought + DAY),
                        buy("o-eve-3", "eve", "12.00", bought + DAY), key="eve")
    await pipeline.send(topics.PURCHASES, refund("o-eve-3", "eve", "12.00", bought + DAY), key="eve")
    status, stats = await pipeline["referral"].get("/v1/programs/default/referrals/stats")
    assert status == 200, stats
    assert {k: stats["programme"][k] for k in ("accepted", "qualified", "rewarded", "conversion_rate",
                                                "referees_counted")} == {
        "accepted": 1, "qualified": 1, "rewarded": 1, "conversion_rate": "1.0000", "referees_counted": 1}
    assert stats["programme"]["spend_after"] == [{"currency": "CNY", "total": "30.50", "per_referee": "30.50"}]
    assert [r["member_id"] for r in stats["top_referrers"]] == ["rex"]


async def test_a_self_referral_by_a_shared_payment_card_is_rejected_and_pays_nothing(
        chain: tuple[Pipeline, Clock]) -> None:
    pipeline, _ = chain
    await pipeline.send(topics.MEMBERS, enrol("rex", NOW - 100 * DAY, payment="card-7f3a"), key="rex")
    code = await code_of(pipeline, "rex")
    # Refused as soon as the enrolment shows the shared card, before any purchase.
    out = await pipeline.send(topics.MEMBERS, enrol("sam", NOW - 3 * DAY, code, payment="card-7f3a",
                                                    device="d-sam"), key="sam")
    [rejected] = out.of(ReferralRejected)
    assert (rejected["reason"], rejected["detail"]) == ("self_referral", "the referee shares the referrer's payment")
    out = await pipeline.send(topics.PURCHASES, buy("o-sam-1", "sam", "120.00", NOW - 2 * DAY), key="sam")
    assert out.of(ReferralRejected) == out.of(ReferralRewarded) == []
    assert [c for c in out.of(PostCredit) if c["idempotency_key"].startswith("referral:")] == []
    assert await balance(pipeline, "rex") == (0, 0)
    assert await balance(pipeline, "sam") == (120, 0)  # earn's points for the purchase, nothing for the referral
    [seen] = await referrals(pipeline, "sam")
    assert (seen["status"], seen["reason"]) == ("rejected", "self_referral")
    assert "card-7f3a" not in seen["detail"]


async def test_a_refunded_qualifying_order_reverses_both_rewards_by_key(chain: tuple[Pipeline, Clock]) -> None:
    pipeline, _ = chain
    await pipeline.send(topics.REFERRALS, accept("rex", "eve", NOW - 5 * DAY), key="eve")
    bought = NOW - 4 * DAY
    out = await pipeline.send(topics.PURCHASES, buy("o-1", "eve", "80.00", bought), key="eve")
    rid = out.of(ReferralRewarded)[0]["referral_id"]
    assert await balance(pipeline, "rex") == (0, 50)
    out = await pipeline.send(topics.PURCHASES, refund("o-1", "eve", "80.00", bought + DAY), key="eve")
    [revoked] = out.of(ReferralRevoked)
    assert (revoked["order_id"], revoked["refund_id"], revoked["referrer_points"], revoked["referee_points"]) == (
        "o-1", "refund-o-1", 50, 20)
    reversals = {r["entry_key"]: r["idempotency_key"] for r in out.of(ReverseEntry)
                 if r["entry_key"].startswith("referral:")}
    assert reversals == {f"referral:{rid}:referrer": f"referral:{rid}:referrer:reversal",
                         f"referral:{rid}:referee": f"referral:{rid}:referee:reversal"}
    # Still pending, so cancelled: nothing spent, no debt. Earn took back the purchase's 80 the same way.
    assert await balance(pipeline, "rex") == (0, 0)
    assert await balance(pipeline, "eve") == (0, 0)
    [seen] = await referrals(pipeline, "eve")
    assert (seen["status"], seen["reason"], seen["referrer_points"], seen["referee_points"]) == (
        "revoked", "refund", 0, 0)


async def test_a_reversal_waits_for_its_credits_entry_when_the_refund_overtakes_it(
        chain: tuple[Pipeline, Clock]) -> None:
    """The ledger cannot find a credit posted in the same batch as its reversal: the reversal goes out only once the
    credit's entry came back."""
    pipeline, _ = chain
    referral, ledger = pipeline["referral"], pipeline["ledger"]
    await referral.send(topics.REFERRALS, accept("rex", "eve", NOW - 5 * DAY), key="eve")
    credited = await referral.send(topics.PURCHASES, buy("o-1", "eve", "80.00", NOW - 4 * DAY), key="eve")
    out = await referral.send(topics.PURCHASES, refund("o-1", "eve", "80.00", NOW - 3 * DAY), key="eve")
    assert len(out.of(ReferralRevoked)) == 1 and out.of(ReverseEntry) == []  # the credits are not posted yet
    posted = await ledger.deliver(credited.messages)
    out = await referral.deliver(posted.messages)
    assert sorted(r["entry_key"].rsplit(":", 1)[1] for r in out.of(ReverseEntry)) == ["referee", "referrer"]
    await pipeline.settle(out.messages)
    assert await balance(pipeline, "rex") == (0, 0)
    assert await balance(pipeline, "eve") == (0, 0)


async def test_a_referral_without_a_qualifying_purchase_in_time_expires_and_a_late_purchase_revives_it(
        chain: tuple[Pipeline, Clock]) -> None:
    pipeline, clock = chain
    clock.now = NOW - 20 * DAY
    await pipeline.send(topics.REFERRALS, accept("rex", "joe", NOW - 25 * DAY), key="joe")
    [seen] = await referrals(pipeline, "joe")
    assert (seen["status"], seen["expires_at"]) == ("pending", (NOW + 5 * DAY).isoformat().replace("+00:00", "Z"))
    # A referral that arrives after its 30 days without a purchase is judged at once, at the service's clock.
    clock.now = NOW
    out = await pipeline.send(topics.REFERRALS, accept("rex", "ivy", NOW - 40 * DAY), key="ivy")
    assert [(r["referee_member_id"], r["reason"]) for r in out.of(ReferralRejected)] == [("ivy", "expired")]
    # Joe's 30 days end while nothing happens: the job closes his referral at the time it is run.
    clock.now = NOW + 6 * DAY
    out = await pipeline.run_job("referral", "referral-expiry", clock.now)
    [rejected] = out.of(ReferralRejected)
    assert (rejected["referee_member_id"], rejected["reason"]) == ("joe", "expired")
    assert (await pipeline.run_job("referral", "referral-expiry", clock.now)).messages == []  # once

    # A purchase inside Joe's 30 days that arrives late is judged by its own time: the referral qualifies after all.
    out = await pipeline.send(topics.PURCHASES, buy("o-joe", "joe", "60.00", NOW - 10 * DAY), key="joe")
    assert [r["referee_member_id"] for r in out.of(ReferralRewarded)] == ["joe"]
    assert (await referrals(pipeline, "joe"))[0]["status"] == "rewarded"


async def test_late_and_out_of_order_events_are_judged_by_their_own_time(chain: tuple[Pipeline, Clock]) -> None:
    pipeline, _ = chain
    # Amy's purchase arrives before the referral it qualifies.
    await pipeline.send(topics.PURCHASES, buy("o-amy", "amy", "70.00", NOW - 2 * DAY), key="amy")
    out = await pipeline.send(topics.REFERRALS, accept("rex", "amy", NOW - 3 * DAY), key="amy")
    assert [r["referee_member_id"] for r in out.of(ReferralRewarded)] == ["amy"]
    # Bob bought before he accepted, but the purchase arrives after: he was an existing customer.
    await pipeline.send(topics.REFERRALS, accept("rex", "bob", NOW - 3 * DAY), key="bob")
    out = await pipeline.send(topics.PURCHASES, buy("o-bob", "bob", "70.00", NOW - 4 * DAY), key="bob")
    assert [(r["referee_member_id"], r["reason"]) for r in out.of(ReferralRejected)] == [("bob", "existing_customer")]
    # Cy was rewarded; then an earlier referral of Cy by someone else arrives: that one is Cy's referral.
    await pipeline.send(topics.REFERRALS, accept("rex", "cy", NOW - 3 * DAY), key="cy")
    out = await pipeline.send(topics.PURCHASES, buy("o-cy", "cy", "70.00", NOW - 2 * DAY), key="cy")
    assert [r["referrer_member_id"] for r in out.of(ReferralRewarded)] == ["rex"]
    out = await pipeline.send(topics.REFERRALS, accept("zed", "cy", NOW - 4 * DAY), key="cy")
    assert [(r["referrer_member_id"], r["reason"]) for r in out.of(ReferralRejected)] == [("rex", "already_referred")]
    assert [r["referrer_member_id"] for r in out.of(ReferralRewarded)] == ["zed"]
    assert await balance(pipeline, "rex") == (0, 50)  # amy's referral; cy's was taken back
    assert await balance(pipeline, "zed") == (0, 50)


async def test_a_referral_not_judged_yet_is_listed_as_pending(chain: tuple[Pipeline, Clock]) -> None:
    """A referral stored but not judged yet (status `new` in the table) is pending to its members: the list of a
    programme's pending referrals shows it as the referral's own answer does."""
    pipeline, _ = chain
    referral = pipeline["referral"]
    await pipeline.send(topics.REFERRALS, accept("rex", "amy", NOW - 2 * DAY), key="amy")  # judged: pending
    unjudged = referral_id("default", "rex", "bob")
    await referral.query("INSERT INTO referrals (referral_id, program_id, referrer_id, referee_id, accepted_at, via, "
                         "event_id) VALUES ($1, 'default', 'rex', 'bob', $2, 'accepted', 'accept-bob')",
                         unjudged, NOW - DAY)
    status, one = await referral.get(f"/v1/programs/default/referrals/{unjudged}")
    assert (status, one["status"]) == (200, "pending")
    status, listed = await referral.get("/v1/programs/default/referrals?status=pending")
    assert status == 200, listed
    assert [(r["referee_member_id"], r["status"]) for r in listed["referrals"]] == [("amy", "pending"),
                                                                                   ("bob", "pending")]


async def test_a_database_that_does_not_answer_is_503_with_retry_after_on_every_route(
        chain: tuple[Pipeline, Clock]) -> None:
    """With the caller's key cached (as a busy till's is), every read and write route answers 503 `unavailable`
    with `Retry-After` while the database does not answer, never a 500."""
    pipeline, _ = chain
    referral = pipeline["referral"]
    runtime = referral.runtime
    runtime.keys.cache_s = 600.0  # the harness checks every call's key; a running service trusts it a while
    await pipeline.send(topics.REFERRALS, accept("rex", "amy", NOW - DAY), key="amy")
    [held] = await referrals(pipeline, "amy")  # the key is cached from here on
    live = runtime.engine
    runtime.engine = db.make_engine(ReferralSettings(database_url="postgresql://jifen:jifen@127.0.0.1:1/jifen"),
                                    "referral")
    try:
        for method, path in (("GET", "/v1/programs/default/members/amy/referral-code"),
                             ("GET", "/v1/programs/default/members/amy/referrals"),
                             ("GET", "/v1/programs/default/referrals?status=pending"),
                             ("GET", "/v1/programs/default/referrals/stats"),
                             ("GET", f"/v1/programs/default/referrals/{held['referral_id']}"),
                             ("POST", f"/v1/programs/default/referrals/{held['referral_id']}/approve")):
            response = await referral.request(method, path)
            assert (response.status_code, response.json()["error"]) == (503, "unavailable"), (path, response.text)
            assert int(response.headers["retry-after"]) >= 1, (path, response.text)
    finally:
        await runtime.engine.dispose()
        runtime.engine = live


async def test_too_many_referees_on_one_device_wait_for_a_reviewer(chain: tuple[Pipeline, Clock], infra: Infra
                                                                   ) -> None:
    pipeline, clock = chain
    referral = pipeline["referral"]
    names = ["f1", "f2", "f3", "f4", "f5"]
    for i, name in enumerate(names):
        at = NOW - 6 * DAY + i * timedelta(hours=1)
        await pipeline.send(topics.MEMBERS, enrol(name, at, device="tablet-9"), key=name)
        await pipeline.send(topics.REFERRALS, accept(f"r-{name}", name, at), key=name)
        await pipeline.send(topics.PURCHASES, buy(f"o-{name}", name, "55.00", at + timedelta(hours=2)), key=name)
    status, queue = await referral.get("/v1/programs/default/referrals?status=review")
    assert status == 200, queue
    held = [r["referee_member_id"] for r in queue["referrals"]]
    assert held == ["f4", "f5"]  # more than 3 referees on one device within 7 days
    assert queue["referrals"][0]["detail"] == "4 referees on one device within 7 days (limit 3)"
    assert await balance(pipeline, "r-f4") == (0, 0)
    metrics = (await referral.request("GET", "/metrics")).text
    assert 'jifen_referrals_in_review{program_id="default",service="referral"} 2.0' in metrics

    f4, f5 = (r["referral_id"] for r in queue["referrals"])
    conn = await asyncpg.connect(referral.spec.settings.asyncpg_dsn)
    try:
        _, reader = await auth.create_key(conn, "reader", ["read"])
    finally:
        await conn.close()
    response = await referral.request("POST", f"/v1/programs/default/referrals/{f4}/approve", token=reader)
    assert (response.status_code, response.json()["error"]) == (403, "missing_scope")

    clock.now = NOW + timedelta(minutes=5)
    response = await referral.request("POST", f"/v1/programs/default/referrals/{f4}/approve")
    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["decision"]) == ("rewarded", "approved")
    out = await referral.drain()  # the decision's messages, from the outbox
    await pipeline.settle(out.messages)
    assert [r["referee_member_id"] for r in out.of(ReferralRewarded)] == ["f4"]
    assert await balance(pipeline, "r-f4") == (0, 50)
    response = await referral.request("POST", f"/v1/programs/default/referrals/{f4}/approve")
    assert response.status_code == 200  # the same decision again: nothing new
    response = await referral.request("POST", f"/v1/programs/default/referrals/{f4}/reject")
    assert (response.status_code, response.json()["error"]) == (409, "not_in_review")

    response = await referral.request("POST", f"/v1/programs/default/referrals/{f5}/reject")
    assert (response.json()["status"], response.json()["reason"]) == ("rejected", "velocity")
    out = await referral.drain()
    assert [(r["referee_member_id"], r["reason"], r["detail"]) for r in out.of(ReferralRejected)] == [
        ("f5", "velocity", "refused on review")]
    response = await referral.request("POST", "/v1/programs/default/referrals/ref-nosuch/approve")
    assert (response.status_code, response.json()["error"]) == (404, "unknown_referral")
    metrics = (await referral.request("GET", "/metrics")).text
    assert 'jifen_referrals_in_review{program_id="default",service="referral"} 0.0' in metrics


async def test_a_cap_and_bonus_follow_the_qualifying_times_when_a_late_referral_arrives(
        infra: Infra, tmp_path: Path) -> None:
    """A referral that qualified earlier but arrives late takes its place: the bonus moves to the referral now in
    the Kth place, and the one pushed past the cap gives its points back."""
    shutil.copy(PROGRAMMES / "default.yaml", tmp_path / "default.yaml")
    tight = yaml.safe_load((PROGRAMMES / "default.yaml").read_text())
    tight["referral"].update({"cap": {"count": 2, "per": "year"}, "bonus": {"every": 2, "points": 100}})
    tight.update({"program_id": "tight", "name": "Tight"})
    (tmp_path / "tight.yaml").write_text(yaml.safe_dump(tight))
    clock = Clock(NOW)
    dsn = await infra.new_database("referral_cap_")
    settings = ReferralSettings(programmes_dir=tmp_path)
    async with Pipeline(ServiceHarness(ledger_spec(), dsn),
                        ServiceHarness(referral_spec(settings, clock=clock), dsn)) as pipeline:
        t = datetime(NOW.year - 1, 6, 1, tzinfo=UTC)
        for name, offset in (("a", 1), ("b", 2)):
            await pipeline.send(topics.REFERRALS, accept("rex", name, t + offset * DAY, program="tight"), key=name)
            await pipeline.send(topics.PURCHASES, buy(f"o-{name}", name, "60.00", t + (offset + 4) * DAY, "tight"),
                                key=name)
        assert await balance(pipeline, "rex", "tight") == (200, 0)  # 50 + 50 and the 2nd place's bonus
        await pipeline.send(topics.PURCHASES, buy("o-c", "c", "60.00", t + 3 * DAY, "tight"), key="c")
        out = await pipeline.send(topics.REFERRALS, accept("rex", "c", t, program="tight"), key="c")
        assert sorted((r["referee_member_id"], r["bonus_points"]) for r in out.of(ReferralRewarded)) == [
            ("a", 100), ("c", 0)]
        assert [(r["referee_member_id"], r["reason"]) for r in out.of(ReferralRejected)] == [("b", "referrer_cap")]
        rewarded = {r["referee_member_id"]: r["referral_id"] for r in out.of(ReferralRewarded)}
        keys = sorted(c["idempotency_key"] for c in out.of(PostCredit))
        assert keys == sorted([f"referral:{rewarded['a']}:bonus", f"referral:{rewarded['c']}:referrer",
                               f"referral:{rewarded['c']}:referee"])
        assert len(out.of(ReverseEntry)) == 3  # b's referrer, referee and bonus credits
        assert await balance(pipeline, "rex", "tight") == (200, 0)  # a and c, and a's bonus now
        assert await balance(pipeline, "b", "tight") == (0, 0)
        await referral_invariants(pipeline["referral"])
    await check_ledger_invariants(dsn)


async def test_bad_input_is_answered_with_a_reason(chain: tuple[Pipeline, Clock]) -> None:
    pipeline, _ = chain
    referral = pipeline["referral"]
    code = await code_of(pipeline, "rex")
    out = await referral.send(topics.MEMBERS, enrol("ann", NOW - DAY, "ZZZZZZZZ", device="d-ann"), key="ann")
    assert out.reasons == ["unknown_referral_code"]
    out = await referral.send(topics.REFERRALS, accept("rex", "bea", NOW - DAY, program="nosuch"),
                              accept("kim", "bea", NOW - DAY, code=code),  # rex's code, not kim's
                              accept("rex", "bea", NOW - DAY, program="staff"), key="bea")
    assert out.reasons == ["unknown_program", "referral_code_mismatch", "no_rule"]
    assert await referrals(pipeline, "bea") == []
    # The member whose code was unknown is still known by her fingerprints.
    assert [r["member_id"] for r in await referral.query("SELECT member_id FROM fingerprints")] == ["ann"]

    status, body = await referral.get("/v1/programs/default/members/rex/referral-code", token="")
    assert (status, body["error"]) == (401, "missing_api_key")
    status, body = await referral.get("/v1/programs/nosuch/referrals/stats")
    assert (status, body["error"]) == (404, "unknown_program")
    status, body = await referral.get("/v1/programs/staff/members/rex/referral-code")
    assert (status, body["error"]) == (404, "no_referrals")
    status, body = await referral.get("/v1/programs/default/referrals/stats?top=0")
    assert (status, body["error"]) == (422, "invalid_request")
    status, body = await referral.get("/v1/programs/default/referrals?status=lost")
    assert (status, body["error"]) == (422, "invalid_request")
    status, body = await referral.get("/v1/programs/default/referrals/ref-nosuch")
    assert (status, body["error"]) == (404, "unknown_referral")


async def test_old_purchases_of_members_who_are_nobodys_referee_are_forgotten_but_their_first_is_not(
        chain: tuple[Pipeline, Clock]) -> None:
    pipeline, _ = chain
    referral = pipeline["referral"]
    long_ago = NOW - 500 * DAY
    await pipeline.send(topics.PURCHASES, buy("o-old-ann", "ann", "20.00", long_ago), key="ann")
    await pipeline.send(topics.PURCHASES, refund("o-old-ann", "ann", "20.00", long_ago + DAY), key="ann")
    await pipeline.send(topics.REFERRALS, accept("rex", "bo", long_ago - DAY), key="bo")
    await pipeline.send(topics.PURCHASES, buy("o-old-bo", "bo", "60.00", long_ago), key="bo")
    await pipeline.send(topics.PURCHASES, buy("o-new-ann", "ann", "20.00", NOW - DAY), key="ann")
    done, _ = await referral.run_job("purchase-prune", NOW)
    assert done == 2  # ann's old order and its refund
    kept = await referral.query("SELECT order_id FROM purchases ORDER BY order_id")
    assert [r["order_id"] for r in kept] == ["o-new-ann", "o-old-bo"]  # bo is a referee: his stay
    # Ann's first purchase is still known: a referral she accepts now finds her an existing customer.
    out = await pipeline.send(topics.REFERRALS, accept("rex", "ann", NOW - timedelta(hours=1)), key="ann")
    assert [(r["referee_member_id"], r["reason"]) for r in out.of(ReferralRejected)] == [("ann", "existing_customer")]
    assert (await referral.run_job("purchase-prune", NOW))[0] == 0


async def test_the_simulators_referral_feed_ends_as_it_says(chain: tuple[Pipeline, Clock]) -> None:
    pipeline, _ = chain
    feed = build_referral_feed("sim1", NOW, honest=4, self_referrals=2)
    out = Delivered()
    for topic in (topics.MEMBERS, topics.REFERRALS, topics.PURCHASES):
        for message in feed.messages[topic]:
            out += await pipeline.send(topic, message.value, key=message.member_id)
    assert out.dead == []
    assert feed.expected == {"rewarded": 3, "revoked": 1, "rejected:self_referral": 2}
    async with pipeline["referral"].runtime.connection() as db:
        assert await summary(db, "sim1") == feed.expected
    assert len(out.of(ReferralRewarded)) == 4 and len(out.of(ReferralRevoked)) == 1  # paid, then taken back
