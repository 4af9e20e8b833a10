"""The redemption service on the fast tier: the ledger and redemption harnesses over one PostgreSQL, chained the way
Kafka chains them, with one clock passed in to both. Coupons redeemed, shown once and used once; every refusal with
its reason in the answer, the outcome event and the metric; limits by the programme's local day; stock; tiers and
blocks from their topics; cancellation giving the points back with their original expiry; `?wait`; a hold that
times out before its capture; and every bad request answered 4xx with {error, detail}."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from pydantic import SecretStr

from services.ledger.app import spec as ledger_spec
from services.redemption import verify
from services.redemption.app import spec as redemption_spec
from services.redemption.settings import RedemptionSettings
from shared import auth, envelope
from shared.contracts import topics
from shared.contracts.ledger_commands import Cause, LedgerCommand, PostCredit, PostDebit, ReverseEntry
from shared.contracts.members import MemberBlocked, MemberUnblocked
from shared.contracts.redemptions import CouponUsed, RedemptionCancelled, RedemptionCompleted, RedemptionRejected
from shared.contracts.tiers import TierChanged
from shared.programmes import DEFAULT_FOLDER
from shared.testing import Delivered, Pipeline, ServiceHarness, cloud_event
from tests.conftest import check_ledger_invariants
from tests.support import Infra, wait_for

NOW = datetime.now(UTC).replace(microsecond=0)
SHANGHAI = ZoneInfo("Asia/Shanghai")
FAST = """program_id: fast
name: Redemption fast-tier programme
version: 1
effective_from: "2020-01-01T00:00:00Z"
timezone: Asia/Shanghai
rewards:
  - {reward_id: coupon-5, name: 5 yuan coupon, kind: coupon, points: 100, cancel_hours: 24,
     coupon: {value: "5.00", currency: CNY, valid_days: 30}}
  - {reward_id: voucher, name: Weekly voucher, kind: coupon, points: 10, limit: {count: 2, per: week},
     coupon: {value: "1.00", currency: CNY, valid_days: 7}}
  - {reward_id: mug, name: A mug, kind: goods, points: 300, points_by_tier: {gold: 200}, stock: 2, cancel_hours: 48}
  - {reward_id: lounge, name: Gold lounge, kind: service, points: 50, tiers: [gold]}
  - {reward_id: old-offer, name: Gone, kind: goods, points: 10, available: {ends: "2021-01-01T00:00:00Z"}}
redemption:
  hold_ttl_seconds: 60
  limits:
    per_day: {redemptions: 6, points: 100000}
    velocity: {count: 4, minutes: 10}
  block_sources: ["crm://risk-desk"]
  points_payment: {points_per_unit: "100", currency: CNY, min_points: 100, max_share: "0.5",
                   authorisation_ttl_seconds: 120}
"""
BASE = "/v1/programs/fast"


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Chain:
    """The pipeline, its clock, and helpers that call redemption's routes and let what they emit flow on."""

    def __init__(self, pipeline: Pipeline, clock: Clock, dsn: str) -> None:
        self.pipeline, self.clock, self.dsn = pipeline, clock, dsn
        self.keys = 0

    @property
    def service(self) -> ServiceHarness:
        return self.pipeline["redemption"]

    async def flow(self) -> Delivered:
        """What redemption's outbox holds, delivered on until nothing more moves."""
        out = await self.service.drain()
        return out + await self.pipeline.settle(out.messages)

    async def call(self, method: str, path: str, body: Any = None, *, key: str | None = None, token: str | None = None,
                   settle: bool = True, **kwargs: Any) -> tuple[int, Any, Delivered]:
        headers = kwargs.pop("headers", {})
        if key is not None:
            headers["Idempotency-Key"] = key
        response = await self.service.request(method, BASE + path, json=body, headers=headers, token=token, **kwargs)
        out = await self.flow() if settle else Delivered()
        return response.status_code, response.json(), out

    async def redeem(self, member: str, reward: str, quantity: int = 1, key: str | None = None,
                     **kwargs: Any) -> tuple[int, Any, Delivered]:
        self.keys += 1
        status, body, out = await self.call("POST", "/redemptions", {"member_id": member, "reward_id": reward,
                                                                     "quantity": quantity},
                                            key=key or f"k-{self.keys}", **kwargs)
        if status == 202 and kwargs.get("settle", True):
            status, body = await self.service.get(f"{BASE}/redemptions/{body['redemption_id']}", token=kwargs.get(
                "token"))
        return status, body, out

    async def ledger(self, *commands: LedgerCommand) -> Delivered:
        return await self.pipeline.send(topics.LEDGER_COMMANDS, *(
            envelope.encode(c.idempotency_key, "test", c.TYPE, c.occurred_at, c.model_dump(mode="json"))
            for c in commands), key=commands[0].member_id)

    async def credit(self, member: str, points: int, key: str | None = None, expires_at: datetime | None = None,
                     program: str = "fast") -> None:
        key = key or f"credit:{member}:{points}:{self.keys}"
        self.keys += 1
        await self.ledger(PostCredit(idempotency_key=key, program_id=program, member_id=member, amount=points,
                                     occurred_at=self.clock.now - timedelta(minutes=1), expires_at=expires_at,
                                     cause=Cause(source_event_id=f"test|{key}")))

    async def balance(self, member: str, program: str = "fast") -> dict[str, Any]:
        status, body = await self.pipeline["ledger"].get(f"/v1/programs/{program}/members/{member}/balance")
        assert status == 200, body
        return dict(body)

    async def metrics(self) -> str:
        return (await self.service.request("GET", "/metrics")).text

    async def token(self, *scopes: auth.Scope) -> str:
        conn = await asyncpg.connect(self.dsn)
        try:
            return (await auth.create_key(conn, "-".join(scopes), list(scopes)))[1]
        finally:
            await conn.close()


def programmes(folder: Path) -> Path:
    """The shipped programmes and the fast-tier one, in a folder of the test's."""
    for shipped in DEFAULT_FOLDER.glob("*.yaml"):
        shutil.copy(shipped, folder / shipped.name)
    (folder / "fast.yaml").write_text(FAST)
    return folder


@pytest.fixture
async def chain(infra: Infra, tmp_path: Path) -> AsyncIterator[Chain]:
    clock = Clock(NOW)
    dsn = await infra.new_database("redeem_")
    settings = RedemptionSettings(programmes_dir=programmes(tmp_path), coupon_key=SecretStr("fast-tier-key"))
    async with Pipeline(ServiceHarness(ledger_spec(clock=clock), dsn),
                        ServiceHarness(redemption_spec(settings, clock=clock), dsn)) as pipeline:
        yield Chain(pipeline, clock, dsn)
    await check_ledger_invariants(dsn)
    await check_redemption_invariants(dsn)


async def check_redemption_invariants(dsn: str) -> None:
    """The service's own rules (services/redemption/verify.py), and against the ledger: a completed redemption's
    hold was captured for its points; a rejected one's never was."""
    conn = await asyncpg.connect(dsn)
    try:
        assert await verify.problems(conn) == []
        wrong = await conn.fetch(
            """SELECT r.redemption_id, r.status, s.outcome, s.captured FROM redemption.redemptions r
               LEFT JOIN ledger.hold_resolutions s ON s.hold_id = 'redeem:' || r.redemption_id
               WHERE (r.status IN ('completed', 'cancelled') AND (s.outcome IS DISTINCT FROM 'captured'
                                                                   OR s.captured <> r.points))
                  OR (r.status = 'rejected' AND s.outcome = 'captured')""")
        assert [dict(w) for w in wrong] == []
    finally:
        await conn.close()


def member_event(contract: type[MemberBlocked] | type[MemberUnblocked], event_id: str, member: str, source: str,
                 at: datetime) -> bytes:
    by = "unblocked_by" if contract is MemberUnblocked else "blocked_by"
    return cloud_event(contract, event_id, at, {"program_id": "fast", "member_id": member, "reason": "fraud review",
                                                by: "agent-7"}, source=source)


def tier_event(event_id: str, member: str, tier: str, at: datetime) -> bytes:
    return cloud_event(TierChanged, event_id, at, {"program_id": "fast", "member_id": member, "tier": tier,
                                                   "reason": "upgrade"}, source="jifen.tiers")


def count_of(metrics: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in metrics.splitlines():
        if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {name}{{{wanted}}}")


async def test_a_coupon_is_issued_once_paid_its_code_shown_once_and_it_pays_one_order(chain: Chain) -> None:
    await chain.credit("ann", 1000)
    status, body, out = await chain.call("POST", "/redemptions", {"member_id": "ann", "reward_id": "coupon-5"},
                                         key="till-1:42")
    assert status == 202 and body["status"] == "pending" and body["points"] == 100
    rid = body["redemption_id"]
    [done] = out.of(RedemptionCompleted)
    assert (done["redemption_id"], done["kind"], done["points"]) == (rid, "coupon", 100)
    assert set(done["coupon"]) == {"coupon_id", "value", "currency", "expires_at"}  # never the code
    assert (await chain.balance("ann"))["available"] == 900

    # A read-only key sees the redemption but not the code, and does not use up its one showing.
    reader = await chain.token("read")
    status, seen = await chain.service.get(f"{BASE}/redemptions/{rid}", token=reader)
    assert status == 200 and seen["status"] == "completed"
    assert (seen["coupon"]["code"], seen["coupon"]["code_shown"]) == (None, False)
    status, seen = await chain.service.get(f"{BASE}/redemptions/{rid}")
    code = seen["coupon"]["code"]
    assert len(code.replace("-", "")) == 20 and seen["coupon"]["code_shown"] is True
    status, again = await chain.service.get(f"{BASE}/redemptions/{rid}")
    assert (again["coupon"]["code"], again["coupon"]["code_shown"]) == (None, True)
    # The database keeps the code's hash only, once its reveal window has closed.
    chain.clock.now += timedelta(seconds=301)
    await chain.service.run_job("coupon-code-forget", chain.clock.now)
    [row] = await chain.service.query("SELECT code_hash, code_sealed FROM coupons")
    assert row["code_sealed"] is None and code.encode() not in bytes(row["code_hash"])

    # The same key and body: the same redemption. Another body under that key: refused.
    status, replay, _ = await chain.call("POST", "/redemptions", {"member_id": "ann", "reward_id": "coupon-5",
                                                                  "quantity": 1}, key="till-1:42")
    assert (status, replay["redemption_id"], replay["status"]) == (201, rid, "completed")
    status, conflict, _ = await chain.call("POST", "/redemptions", {"member_id": "ann", "reward_id": "coupon-5",
                                                                    "quantity": 2}, key="till-1:42")
    assert (status, conflict["error"]) == (422, "idempotency_conflict") and conflict["detail"]

    issued = NOW.astimezone(SHANGHAI).date()
    status, coupon = await chain.service.get(f"{BASE}/coupons/{code.lower().replace('-', '')}", token=reader)
    assert status == 200 and (coupon["status"], coupon["valid"], coupon["value"]) == ("valid", True, "5.00")
    assert datetime.fromisoformat(coupon["expires_at"]) == datetime(issued.year, issued.month, issued.day,
                                                                    tzinfo=SHANGHAI) + timedelta(days=31)
    status, used, out = await chain.call("POST", f"/coupons/{code}/use", {"order_id": "o-1"})
    assert (status, used["status"], used["used_order_id"]) == (200, "used", "o-1")
    assert [(u["coupon_id"], u["order_id"], u["value"]) for u in out.of(CouponUsed)] == [
        (coupon["coupon_id"], "o-1", "5.00")]
    status, used, out = await chain.call("POST", f"/coupons/{code}/use", {"order_id": "o-1"})  # the same order
    assert (status, used["status"], out.of(CouponUsed)) == (200, "used", [])
    status, refused, _ = await chain.call("POST", f"/coupons/{code}/use", {"order_id": "o-2"})
    assert (status, refused["error"]) == (409, "coupon_used")
    status, refused, _ = await chain.call("POST", f"/redemptions/{rid}/cancel")
    assert (status, refused["error"]) == (409, "coupon_used")  # a used coupon cannot be handed back
    assert count_of(await chain.metrics(), "jifen_redemption_refusals_total", operation="coupon",
                    reason="coupon_used") == 1


async def test_the_same_redemption_request_shows_its_code_again_within_the_reveal_window_then_never(
        chain: Chain) -> None:
    await chain.credit("ivy", 1000)
    body = {"member_id": "ivy", "reward_id": "coupon-5"}
    status, pending, _ = await chain.call("POST", "/redemptions", body, key="till-7:1")
    assert (status, pending["status"]) == (202, "pending")
    # The till asks again (its first answer was lost): completed now, and this answer shows the code ...
    status, first, _ = await chain.call("POST", "/redemptions", body, key="till-7:1")
    code = first["coupon"]["code"]
    assert (status, first["redemption_id"], first["coupon"]["code_shown"]) == (201, pending["redemption_id"], True)
    assert code is not None
    # ... which is lost too: the same request again, within the window, shows the same code.
    chain.clock.now += timedelta(seconds=299)
    status, again, _ = await chain.call("POST", "/redemptions", body, key="till-7:1")
    assert (status, again["redemption_id"], again["coupon"]["code"]) == (201, pending["redemption_id"], code)
    # Nothing else shows it: the redemption read by id (even with the redeem scope), nor another key.
    status, seen = await chain.service.get(f"{BASE}/redemptions/{pending['redemption_id']}")
    assert (status, seen["coupon"]["code"], seen["coupon"]["code_shown"]) == (200, None, True)
    _, other, _ = await chain.redeem("ivy", "coupon-5", key="till-7:2")  # its own code, shown by its GET
    assert other["redemption_id"] != pending["redemption_id"] and other["coupon"]["code"] not in (None, code)
    # Past the window, never again; the job then drops the sealed copy, leaving the hash only.
    chain.clock.now += timedelta(seconds=2)
    status, late, _ = await chain.call("POST", "/redemptions", body, key="till-7:1")
    assert (status, late["coupon"]["code"], late["coupon"]["code_shown"]) == (201, None, True)
    forgotten, _ = await chain.service.run_job("coupon-code-forget", chain.clock.now)
    assert forgotten == 1  # the first coupon's; the second was shown within its window still
    rows = await chain.service.query("SELECT redemption_id FROM coupons WHERE code_sealed IS NOT NULL")
    assert [r["redemption_id"] for r in rows] == [other["redemption_id"]]
    status, late, _ = await chain.call("POST", "/redemptions", body, key="till-7:1")
    assert (status, late["coupon"]["code"]) == (201, None)
    # The code itself still pays an order: only the copy that showed it is gone.
    status, used, _ = await chain.call("POST", f"/coupons/{code}/use", {"order_id": "o-ivy"})
    assert (status, used["status"]) == (200, "used")


async def test_rejected_redemptions_are_pruned_past_their_retention_and_nothing_else_is(chain: Chain) -> None:
    await chain.credit("jo", 1000)
    await chain.credit("poor", 50)
    # A coupon issued, then voided: the hold timed out before its capture.
    _, timed_out, _ = await chain.redeem("jo", "coupon-5", settle=False)
    placed = await chain.pipeline["ledger"].deliver((await chain.service.drain()).messages)
    chain.clock.now += timedelta(seconds=61)
    await chain.pipeline.settle(placed.messages)
    _, kept, _ = await chain.redeem("jo", "coupon-5")
    _, by_rule, _ = await chain.redeem("jo", "nothing-such")
    _, by_ledger, _ = await chain.redeem("poor", "coupon-5")
    rejected = [by_rule["redemption_id"], by_ledger["redemption_id"], timed_out["redemption_id"]]
    for rid in rejected:
        assert (await chain.service.get(f"{BASE}/redemptions/{rid}"))[1]["status"] == "rejected"
    assert len(await chain.service.query("SELECT 1 FROM coupons")) == 2

    # Kept for 30 days (JIFEN_REDEMPTION_REJECTED_RETENTION_S) after their rejection, then deleted.
    rejected_at = chain.clock.now
    chain.clock.now = rejected_at + timedelta(days=30, seconds=-1)
    assert (await chain.service.run_job("redemption-prune-rejected", chain.clock.now))[0] == 0
    chain.clock.now = rejected_at + timedelta(days=30, seconds=1)
    assert (await chain.service.run_job("redemption-prune-rejected", chain.clock.now))[0] == 3
    for rid in rejected:
        status, body = await chain.service.get(f"{BASE}/redemptions/{rid}")
        assert (status, body["error"]) == (404, "unknown_redemption")
    status, body = await chain.service.get(f"{BASE}/redemptions/{kept['redemption_id']}")
    assert (status, body["status"], body["coupon"]["status"]) == (200, "completed", "valid")
    assert [r["redemption_id"] for r in await chain.service.query("SELECT redemption_id FROM coupons")] == [
        kept["redemption_id"]]
    assert (await chain.balance("jo"))["available"] == 900


async def test_every_refusal_has_its_reason_in_the_answer_the_event_and_the_metric(chain: Chain) -> None:
    await chain.credit("bo", 2000)
    await chain.credit("poor", 50)
    expected = {}
    for member, reward, reason in (("bo", "nothing-such", "unknown_reward"),
                                   ("bo", "old-offer", "reward_not_available"), ("bo", "lounge", "not_eligible_tier")):
        status, body, out = await chain.redeem(member, reward)
        assert (status, body["error"], body["status"]) == (409, reason, "rejected") and body["detail"]
        assert [(e["redemption_id"], e["reason"]) for e in out.of(RedemptionRejected)] == [
            (body["redemption_id"], reason)]
        expected[reason] = 1
    # The ledger's refusal: accepted here (202), rejected with the ledger's reason once it answers.
    status, body, out = await chain.redeem("poor", "coupon-5")
    assert (status, body["status"], body["reason"]) == (200, "rejected", "insufficient_points")
    assert [e["reason"] for e in out.of(RedemptionRejected)] == ["insufficient_points"]
    # A member who owes points (a credit reversed after it was spent) is refused by the ledger too.
    await chain.credit("debtor", 100, key="debtor-credit")
    await chain.ledger(PostDebit(idempotency_key="debtor-spend", program_id="fast", member_id="debtor", amount=100,
                                 occurred_at=NOW, cause=Cause(source_event_id="test|spend")))
    await chain.ledger(ReverseEntry(idempotency_key="debtor-refund", program_id="fast", member_id="debtor",
                                    entry_key="debtor-credit", occurred_at=NOW,
                                    cause=Cause(source_event_id="test|refund")))
    status, body, _ = await chain.redeem("debtor", "voucher")
    assert (body["status"], body["reason"]) == ("rejected", "negative_balance")

    # Tiers come from jifen.tiers: gold opens the lounge and lowers the mug's price; an older event arriving late
    # changes nothing.
    await chain.pipeline.send(topics.TIERS, tier_event("t2", "bo", "gold", NOW - timedelta(hours=1)),
                              tier_event("t1", "bo", "silver", NOW - timedelta(hours=2)), key="bo")
    status, body, _ = await chain.redeem("bo", "lounge")
    assert (body["status"], body["points"]) == ("completed", 50)
    status, offers = await chain.service.get(f"{BASE}/rewards?member_id=bo")
    assert status == 200 and offers["tier"] == "gold"
    assert {r["reward_id"]: r["points"] for r in offers["rewards"]} == {"coupon-5": 100, "voucher": 10, "mug": 200,
                                                                        "lounge": 50}

    # Blocks from jifen.members, only from the sources the programme trusts.
    out = await chain.pipeline.send(topics.MEMBERS, member_event(MemberBlocked, "b0", "bo", "pos://till-3", NOW),
                                    member_event(MemberBlocked, "b1", "bo", "crm://risk-desk", NOW), key="bo")
    assert out.reasons == ["untrusted_source"]
    status, body, _ = await chain.redeem("bo", "voucher")
    assert (status, body["error"]) == (409, "blocked_member")
    expected["blocked_member"] = 1
    status, offers = await chain.service.get(f"{BASE}/rewards?member_id=bo")
    assert (offers["blocked"], offers["rewards"]) == (True, [])
    await chain.pipeline.send(topics.MEMBERS, member_event(MemberUnblocked, "u1", "bo", "crm://risk-desk",
                                                           NOW + timedelta(seconds=1)), key="bo")
    assert (await chain.redeem("bo", "voucher"))[1]["status"] == "completed"

    # Stock: two mugs, then out of stock; an admin adds one (once per key); a rejection gives its mug back.
    await chain.credit("cy", 1000)
    await chain.credit("di", 1000)
    assert (await chain.redeem("cy", "mug"))[1]["status"] == "completed"
    assert (await chain.redeem("di", "mug"))[1]["status"] == "completed"
    status, body, _ = await chain.redeem("cy", "mug")
    assert (status, body["error"]) == (409, "out_of_stock")
    expected["out_of_stock"] = 1
    for _ in range(2):
        status, added, _ = await chain.call("POST", "/rewards/mug/stock", {"quantity": 1}, key="restock-1")
        assert status == 200 and added["stock_left"] == 1
    status, body, _ = await chain.redeem("poor", "mug")  # takes the mug, then the ledger refuses the points
    assert body["reason"] == "insufficient_points"
    status, offers = await chain.service.get(f"{BASE}/rewards")
    assert {r["reward_id"]: r["stock_left"] for r in offers["rewards"]}["mug"] == 1

    await chain.service.run_job("redemption-watch", chain.clock.now)  # the gauges a change alone cannot keep
    metrics = await chain.metrics()
    assert count_of(metrics, "jifen_redemption_stock_left_items", program_id="fast", reward_id="mug") == 1
    assert count_of(metrics, "jifen_rewards_lowest_points", program_id="fast") == 10
    assert count_of(metrics, "jifen_redemptions_pending", service="redemption") == 0
    for reason, n in {**expected, "insufficient_points": 2, "negative_balance": 1}.items():
        assert count_of(metrics, "jifen_redemption_refusals_total", operation="redeem", reason=reason) == n
    assert count_of(metrics, "jifen_redemptions_total", program_id="fast", reward_id="mug", status="completed") == 2


async def test_limits_count_per_local_day_and_week_and_the_velocity_window(chain: Chain) -> None:
    # 22:00 in Shanghai on Tuesday 10 March: the local day ends at 16:00 UTC, two hours later.
    chain.clock.now = datetime(2026, 3, 10, 14, 0, tzinfo=UTC)
    await chain.credit("eve", 5000)
    for _ in range(4):
        assert (await chain.redeem("eve", "coupon-5"))[1]["status"] == "completed"
    status, body, _ = await chain.redeem("eve", "coupon-5")
    assert (status, body["error"]) == (409, "too_fast")  # 4 in 10 minutes
    chain.clock.now += timedelta(minutes=11)
    assert (await chain.redeem("eve", "voucher"))[1]["status"] == "completed"
    assert (await chain.redeem("eve", "voucher"))[1]["status"] == "completed"
    status, body, _ = await chain.redeem("eve", "coupon-5")
    assert (status, body["error"]) == (409, "daily_limit")  # 6 a day
    # One minute past local midnight: still 10 March in UTC, a new day (and still the same week) in Shanghai.
    chain.clock.now = datetime(2026, 3, 10, 16, 1, tzinfo=UTC)
    status, body, _ = await chain.redeem("eve", "voucher")
    assert (status, body["error"]) == (409, "member_limit")  # 2 vouchers a week
    assert (await chain.redeem("eve", "coupon-5"))[1]["status"] == "completed"
    # Monday 00:30 in Shanghai (Sunday in UTC): a new week.
    chain.clock.now = datetime(2026, 3, 15, 16, 30, tzinfo=UTC)
    assert (await chain.redeem("eve", "voucher"))[1]["status"] == "completed"


async def test_cancelling_gives_the_points_back_with_their_original_expiry_the_stock_and_voids_the_coupon(
        chain: Chain) -> None:
    soon, later = NOW + timedelta(days=20), NOW + timedelta(days=300)
    await chain.credit("fu", 300, expires_at=soon)
    await chain.credit("fu", 500, expires_at=later)
    status, mug, _ = await chain.redeem("fu", "mug")
    assert (mug["status"], mug["fulfilment"]) == ("completed", "to_fulfil")
    assert (await chain.balance("fu"))["available"] == 500  # the soonest-expiring lot paid for it
    assert datetime.fromisoformat(mug["cancellable_until"]) == datetime.fromisoformat(
        mug["settled_at"]) + timedelta(hours=48)

    chain.clock.now += timedelta(hours=47)
    status, cancelled, out = await chain.call("POST", f"/redemptions/{mug['redemption_id']}/cancel")
    assert (status, cancelled["status"], cancelled["fulfilment"]) == (200, "cancelled", "withdrawn")
    assert [(c["redemption_id"], c["points_returned"]) for c in out.of(RedemptionCancelled)] == [
        (mug["redemption_id"], 300)]
    shown = await chain.balance("fu")
    assert shown["available"] == 800 and shown["next_expiry"] == {
        "points": 300, "date": soon.isoformat().replace("+00:00", "Z")}
    status, page = await chain.pipeline["ledger"].get("/v1/programs/fast/members/fu/entries")
    reversal = page["entries"][0]
    assert (reversal["kind"], reversal["amount"], reversal["idempotency_key"]) == (
        "reversal", 300, f"redeem:{mug['redemption_id']}:cancel")
    assert [datetime.fromisoformat(lot["expires_at"]) for lot in reversal["lots"]] == [soon]
    status, again, out = await chain.call("POST", f"/redemptions/{mug['redemption_id']}/cancel")
    assert (status, again["status"], out.messages) == (200, "cancelled", [])  # once
    status, offers = await chain.service.get(f"{BASE}/rewards")
    assert {r["reward_id"]: r["stock_left"] for r in offers["rewards"]}["mug"] == 2

    # An unused coupon handed back is void; a window that closed, a reward without one, a pending redemption: no.
    status, coupon, _ = await chain.redeem("fu", "coupon-5")
    code = coupon["coupon"]["code"]
    status, cancelled, _ = await chain.call("POST", f"/redemptions/{coupon['redemption_id']}/cancel")
    assert (status, cancelled["coupon"]["status"]) == (200, "void")
    status, refused, _ = await chain.call("POST", f"/coupons/{code}/use", {"order_id": "o-7"})
    assert (status, refused["error"]) == (409, "coupon_void")
    status, late, _ = await chain.redeem("fu", "mug")
    chain.clock.now += timedelta(hours=49)
    status, refused, _ = await chain.call("POST", f"/redemptions/{late['redemption_id']}/cancel")
    assert (status, refused["error"]) == (409, "cancel_window_closed")
    await chain.pipeline.send(topics.TIERS, tier_event("t-fu", "fu", "gold", chain.clock.now), key="fu")
    status, lounge, _ = await chain.redeem("fu", "lounge")
    status, refused, _ = await chain.call("POST", f"/redemptions/{lounge['redemption_id']}/cancel")
    assert (status, refused["error"]) == (409, "not_cancellable")
    status, pending, _ = await chain.redeem("fu", "voucher", settle=False)
    status, refused, _ = await chain.call("POST", f"/redemptions/{pending['redemption_id']}/cancel", settle=False)
    assert (status, refused["error"]) == (409, "redemption_pending")
    await chain.flow()


async def test_wait_answers_with_the_final_state_and_202_while_the_ledger_has_not_answered(chain: Chain) -> None:
    await chain.credit("gu", 150)

    async def ask(key: str, wait: float) -> tuple[int, Any]:
        response = await chain.service.request("POST", f"{BASE}/redemptions?wait={wait}", headers={
            "Idempotency-Key": key}, json={"member_id": "gu", "reward_id": "coupon-5"})
        return response.status_code, response.json()

    async def settled_when_asked(key: str) -> tuple[int, Any]:
        waiting = asyncio.create_task(ask(key, 10))
        await wait_for(lambda: chain.service.query("SELECT 1 FROM redemptions WHERE idempotency_key = $1", key),
                       timeout=10, what="the redemption recorded")
        await chain.flow()  # the ledger answers while the request waits
        return await waiting

    status, body = await settled_when_asked("w-1")
    assert (status, body["status"], body["coupon"]["code_shown"]) == (201, "completed", True)
    assert body["coupon"]["code"] is not None  # the answer that finds it completed shows the code
    status, body = await settled_when_asked("w-2")
    assert (status, body["error"], body["status"]) == (409, "insufficient_points", "rejected")
    assert body["redemption_id"] and body["detail"]
    status, body = await ask("w-3", 0.2)  # nothing delivers the hold: still pending when the wait is over
    assert (status, body["status"]) == (202, "pending")
    await chain.flow()


async def test_a_hold_that_times_out_before_its_capture_rejects_the_redemption_and_gives_everything_back(
        chain: Chain) -> None:
    await chain.credit("hu", 1000)
    _, mug, _ = await chain.redeem("hu", "mug", settle=False)
    _, coupon, _ = await chain.redeem("hu", "coupon-5", settle=False)
    out = await chain.service.drain()
    placed = await chain.pipeline["ledger"].deliver(out.messages)  # the holds are placed ...
    chain.clock.now += timedelta(seconds=61)  # ... and redemption hears of it only after their 60 s
    await chain.pipeline.settle(placed.messages)
    for rid in (mug["redemption_id"], coupon["redemption_id"]):
        status, body = await chain.service.get(f"{BASE}/redemptions/{rid}")
        assert (status, body["status"], body["reason"]) == (200, "rejected", "hold_expired")
    assert body["coupon"]["status"] == "void" and body["coupon"]["code"] is None
    shown = await chain.balance("hu")
    assert (shown["available"], shown["held"]) == (1000, 0)
    _, offers = await chain.service.get(f"{BASE}/rewards")
    assert {r["reward_id"]: r["stock_left"] for r in offers["rewards"]}["mug"] == 2


async def test_bad_requests_are_answered_4xx_with_error_and_detail_never_500(chain: Chain) -> None:
    reader, redeemer = await chain.token("read"), await chain.token("redeem")
    good = {"member_id": "ann", "reward_id": "coupon-5"}
    cases: list[tuple[str, str, dict[str, Any], int, str]] = [
        ("POST", "/redemptions", {"json": {**good, "quantity": 0}, "headers": {"Idempotency-Key": "b1"}}, 422,
         "invalid_request"),
        ("POST", "/redemptions", {"json": good}, 422, "invalid_request"),  # no Idempotency-Key
        ("POST", "/redemptions", {"content": b"{not json", "headers": {"Idempotency-Key": "b2",
                                                                      "Content-Type": "application/json"}},
         422, "invalid_request"),
        ("POST", "/redemptions", {"json": {**good, "points": 1}, "headers": {"Idempotency-Key": "b3"}}, 422,
         "invalid_request"),  # a field that is not the API's
        ("POST", "/redemptions?wait=11", {"json": good, "headers": {"Idempotency-Key": "b4"}}, 422,
         "invalid_request"),
        ("POST", "/redemptions", {"json": good, "headers": {"Idempotency-Key": "b5"}, "token": reader}, 403,
         "missing_scope"),
        ("POST", "/redemptions", {"json": good, "headers": {"Idempotency-Key": "b6"}, "token": ""}, 401,
         "missing_api_key"),
        ("POST", "/rewards/mug/stock", {"json": {"quantity": 5}, "token": redeemer}, 403, "missing_scope"),
        ("POST", "/rewards/coupon-5/stock", {"json": {"quantity": 5}}, 409, "no_stock_kept"),
        ("POST", "/rewards/nothing/stock", {"json": {"quantity": 5}}, 404, "unknown_reward"),
        ("GET", "/redemptions/rd_nothing", {}, 404, "unknown_redemption"),
        ("POST", "/redemptions/rd_nothing/cancel", {}, 404, "unknown_redemption"),
        ("GET", "/coupons/ABCDE-FGHJK-MNPQR-STVWX", {}, 404, "unknown_coupon"),
        ("POST", "/coupons/ABCDE-FGHJK-MNPQR-STVWX/use", {"json": {"order_id": "o"}}, 404, "unknown_coupon"),
        ("POST", "/payments", {"json": {"member_id": "ann", "order_id": "o", "points": 100, "basket_total": 10.5},
                               "headers": {"Idempotency-Key": "b7"}}, 422, "invalid_request"),  # money as a float
        ("GET", "/payments/pm_nothing", {}, 404, "unknown_payment"),
    ]
    for method, path, kwargs, status, reason in cases:
        response = await chain.service.request(method, BASE + path, **kwargs)
        body = response.json()
        assert (response.status_code, body["error"]) == (status, reason), (method, path, body)
        assert set(body) >= {"error", "detail"} and body["detail"]
    response = await chain.service.request("GET", "/v1/programs/nosuch/rewards")
    assert (response.status_code, response.json()["error"]) == (404, "unknown_program")
    out = await chain.flow()
    assert out.messages == [] and await chain.service.query("SELECT 1 FROM redemptions") == []  # none recorded
