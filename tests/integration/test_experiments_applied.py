"""Experiments applied by the services, on the fast tier (each service's real consumer, handlers and routes over one
PostgreSQL, chained without Kafka): earn, referral and redemption judge a member's events under the member's arm of
every experiment running then, and the arm is recorded on every ledger entry's cause and on the outcome events.

The programme is a copy of the shipped `default` as `lab`, with a second version declaring experiment `x`: arm `a`
(the control, as the version says) and arm `b`, which doubles the base rate, pays referrals 80/40 instead of 50/20
and prices the 5 yuan coupon at 60 points instead of 100. It runs from 20 to 10 days ago."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from pydantic import SecretStr

from services.earn.app import spec as earn_spec
from services.earn.settings import EarnSettings
from services.ledger.app import spec as ledger_spec
from services.ledger.settings import LedgerSettings
from services.redemption.app import spec as redemption_spec
from services.redemption.settings import RedemptionSettings
from services.referral.app import spec as referral_spec
from services.referral.settings import ReferralSettings
from shared import envelope
from shared.contracts import topics
from shared.contracts.ledger_commands import Cause, PlaceHold, PostCredit, ReverseEntry
from shared.contracts.purchases import PurchaseRefunded
from shared.contracts.redemptions import RedemptionCancelled, RedemptionCompleted, RedemptionRejected
from shared.contracts.referral_outcomes import ReferralRevoked, ReferralRewarded
from shared.contracts.referrals import ReferralAccepted
from shared.contracts.tiers import TierChanged
from shared.experiments import Experiment, arm_of
from shared.programmes import DEFAULT_FOLDER
from shared.simulation import purchase_event
from shared.testing import Pipeline, ServiceHarness, cloud_event
from tests.conftest import check_ledger_invariants
from tests.support import Infra

NOW = datetime.now(UTC).replace(microsecond=0)
DAY = timedelta(days=1)
STARTS, ENDS = NOW - 20 * DAY, NOW - 10 * DAY
BEFORE, DURING, AFTER = NOW - 30 * DAY, NOW - 15 * DAY, NOW - 5 * DAY
EXPERIMENT = {
    "experiment_id": "x", "name": "double points, richer referrals, cheaper coupon",
    "starts": STARTS.isoformat(), "ends": ENDS.isoformat(),
    "arms": [{"name": "a", "share": "0.5"},
             {"name": "b", "share": "0.5", "overrides": {
                 "purchase": {"base": {"points_per_unit": "2"}},
                 "referral": {"referrer_points": 80, "referee_points": 40},
                 "rewards": [{"reward_id": "coupon-5", "points": 60}]}}]}


def member_in(arm: str, n: int = 0) -> str:
    """The n-th generated member id the hash puts in `arm` of experiment x of programme lab."""
    experiment = Experiment.model_validate(EXPERIMENT)
    found = (m for i in range(10_000) if arm_of("lab", experiment, m := f"m{i}").name == arm)
    for _ in range(n):
        next(found)
    return next(found)


def folder_with_experiment(folder: Path) -> Path:
    """The shipped programmes, and `lab`: version 1 a copy of `default`, version 2 the same with experiment x."""
    for shipped in DEFAULT_FOLDER.glob("*.yaml"):
        shutil.copy(shipped, folder / shipped.name)
    lab = yaml.safe_load((DEFAULT_FOLDER / "default.yaml").read_text())
    lab.update(program_id="lab", name="Lab")
    (folder / "lab.yaml").write_text(yaml.safe_dump(lab))
    lab.update(version=2, effective_from=(NOW - 60 * DAY).isoformat(), experiments=[EXPERIMENT])
    (folder / "lab.v2.yaml").write_text(yaml.safe_dump(lab))
    return folder


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def buy(order: str, member: str, total: str, at: datetime) -> bytes:
    return orjson.dumps(purchase_event(f"buy-{order}", "pos://store-1", at, member, order, Decimal(total), [],
                                       program_id="lab"))


def refund(order: str, member: str, total: str, at: datetime) -> bytes:
    return cloud_event(PurchaseRefunded, f"refund-{order}", at, {
        "program_id": "lab", "member_id": member, "order_id": order, "refund_id": f"refund-{order}",
        "currency": "CNY", "total": total}, source="pos://store-1")


def arms_of(command: dict[str, Any]) -> dict[str, str] | None:
    return Cause.model_validate(command["cause"]).arms


async def entries(pipeline: Pipeline, member: str) -> list[dict[str, Any]]:
    status, page = await pipeline["ledger"].get(f"/v1/programs/lab/members/{member}/entries?limit=100")
    assert status == 200, page
    return list(page["entries"])


@pytest.fixture
async def earn_ledger(infra: Infra, tmp_path: Path) -> AsyncIterator[Pipeline]:
    folder = folder_with_experiment(tmp_path)
    dsn = await infra.new_database("exp_earn_")
    async with Pipeline(ServiceHarness(earn_spec(EarnSettings(programmes_dir=folder)), dsn),
                        ServiceHarness(ledger_spec(LedgerSettings(programmes_dir=folder)), dsn)) as pipeline:
        yield pipeline
    await check_ledger_invariants(dsn)


async def test_an_arms_override_applies_to_its_members_only_while_it_runs_and_every_entry_names_the_arm(
        earn_ledger: Pipeline) -> None:
    a, b = member_in("a"), member_in("b")
    # a is silver (×1.25) from before the experiment: the tier earn applied is recorded too.
    out = await earn_ledger.send(topics.TIERS, cloud_event(TierChanged, "tier-a", NOW - 40 * DAY, {
        "program_id": "lab", "member_id": a, "tier": "silver", "earn_multiplier": "1.25", "reason": "upgrade"},
        source="jifen.tiers"), key=a)
    assert out.dead == []
    credits: dict[tuple[str, datetime, str], dict[str, Any]] = {}  # by member, time and rule
    for member in (a, b):
        for at in (BEFORE, DURING, AFTER):
            out = await earn_ledger.send(topics.PURCHASES, buy(f"o-{member}-{at.date()}", member, "100.00", at),
                                         key=member)
            assert out.dead == []
            credits |= {(member, at, c["cause"]["rule_id"]): c for c in out.of(PostCredit)}
    points = {k: c["amount"] for k, c in credits.items()}
    # Arm b doubles the base rate for b's purchases inside the window only; a (the control, silver) earns as the
    # version says, its tier's 25 a credit of its own.
    assert points == {(a, at, rule): n for at in (BEFORE, DURING, AFTER) for rule, n in (("base", 100), ("tier", 25))
                      } | {(b, BEFORE, "base"): 100, (b, DURING, "base"): 200, (b, AFTER, "base"): 100}
    # Every credit inside the window names the member's arm (the control's too); none outside it does.
    assert {k: arms_of(c) for k, c in credits.items()} == {
        (m, at, rule): {"x": arm} if at == DURING else None for (m, at, rule) in credits
        for arm in ["a" if m == a else "b"]}
    assert {k: c["cause"].get("tier") for k, c in credits.items()} == {
        (m, at, rule): "silver" if m == a else None for (m, at, rule) in credits}
    # Unset: left out, so the payload is what it was before causes could name a tier.
    assert "tier" not in credits[(b, DURING, "base")]["cause"]

    # A refund after the experiment ended takes back b's doubled points under the arm b bought in.
    out = await earn_ledger.send(topics.PURCHASES, refund(f"o-{b}-{DURING.date()}", b, "100.00", AFTER + DAY),
                                 refund(f"o-{b}-{BEFORE.date()}", b, "100.00", AFTER + DAY), key=b)
    assert out.dead == []
    reversals = {r["entry_key"]: (r["amount"], arms_of(r)) for r in out.of(ReverseEntry)}
    assert reversals == {credits[(b, DURING, "base")]["idempotency_key"]: (200, {"x": "b"}),
                         credits[(b, BEFORE, "base")]["idempotency_key"]: (100, None)}

    # The ledger keeps the arm and the tier on every entry, as the cause named them.
    named = {c["idempotency_key"]: (arms_of(c), c["cause"].get("tier")) for c in credits.values()}
    named |= {r["idempotency_key"]: (arms_of(r), None) for r in out.of(ReverseEntry)}
    for member in (a, b):
        found = await entries(earn_ledger, member)
        assert len(found) == (6 if member == a else 5), found
        assert {e["idempotency_key"]: (e["arms"], e["tier"]) for e in found} == {
            k: v for k, v in named.items() if k in {e["idempotency_key"] for e in found}}
    status, body = await earn_ledger["ledger"].get(f"/v1/programs/lab/members/{b}/balance")
    assert status == 200 and body["available"] == 100, body  # 100 + 200 + 100, less 200 and 100 refunded


# --- referral --------------------------------------------------------------------------------------------------

@pytest.fixture
async def referral_chain(infra: Infra, tmp_path: Path) -> AsyncIterator[Pipeline]:
    folder = folder_with_experiment(tmp_path)
    dsn = await infra.new_database("exp_referral_")
    async with Pipeline(ServiceHarness(earn_spec(EarnSettings(programmes_dir=folder)), dsn),
                        ServiceHarness(ledger_spec(LedgerSettings(programmes_dir=folder)), dsn),
                        ServiceHarness(referral_spec(ReferralSettings(programmes_dir=folder), clock=Clock(NOW)),
                                       dsn)) as pipeline:
        yield pipeline
    await check_ledger_invariants(dsn)


def accept(referrer: str, referee: str, at: datetime) -> bytes:
    return cloud_event(ReferralAccepted, f"accept-{referrer}-{referee}", at, {
        "program_id": "lab", "referrer_member_id": referrer, "referee_member_id": referee}, source="app://invite")


async def test_a_referrals_rewards_follow_the_referrers_arm_when_it_was_accepted_and_the_outcome_names_it(
        referral_chain: Pipeline) -> None:
    pipeline = referral_chain
    ra, rb = member_in("a"), member_in("b")
    ea, eb, late = member_in("a", 1), member_in("b", 1), member_in("a", 2)
    # rb (arm b) refers ea (arm a) and ra (arm a) refers eb (arm b), both inside the window; rb refers `late`
    # before the window opens, and `late` qualifies inside it.
    for referrer, referee, at in ((rb, ea, DURING), (ra, eb, DURING), (rb, late, STARTS - 5 * DAY)):
        out = await pipeline.send(topics.REFERRALS, accept(referrer, referee, at), key=referee)
        assert out.dead == []
    rewarded: dict[str, dict[str, Any]] = {}
    credits: dict[str, dict[str, Any]] = {}
    for referee in (ea, eb, late):
        out = await pipeline.send(topics.PURCHASES, buy(f"o-{referee}", referee, "80.00", DURING + DAY),
                                  key=referee)
        assert out.dead == []
        [won] = out.of(ReferralRewarded)
        rewarded[referee] = won
        credits |= {c["idempotency_key"]: c for c in out.of(PostCredit) if c["idempotency_key"].startswith(
            "referral:")}
    outcome = {e: (r["referrer_member_id"], r["referrer_points"], r["referee_points"], r["arms"])
               for e, r in rewarded.items()}
    # Both rewards are the referrer's arm's, whatever the referee's; a referral accepted before the window is
    # judged by the version's own terms, though it qualified inside it.
    assert outcome == {ea: (rb, 80, 40, {"x": "b"}), eb: (ra, 50, 20, {"x": "a"}), late: (rb, 50, 20, {})}
    paid = {(c["member_id"], c["amount"], c["details"]["role"]): arms_of(c) for c in credits.values()}
    assert paid == {(rb, 80, "referrer"): {"x": "b"}, (ea, 40, "referee"): {"x": "b"},
                    (ra, 50, "referrer"): {"x": "a"}, (eb, 20, "referee"): {"x": "a"},
                    (rb, 50, "referrer"): None, (late, 20, "referee"): None}
    for member, paid_out in ((rb, 130), (ra, 50)):  # past the 14 days pending by now
        status, body = await pipeline["ledger"].get(f"/v1/programs/lab/members/{member}/balance")
        assert status == 200 and body["available"] == paid_out, body

    # The qualifying order refunded inside the return window: both of arm b's rewards come back, the outcome
    # naming the arm.
    out = await pipeline.send(topics.PURCHASES, refund(f"o-{ea}", ea, "80.00", DURING + 2 * DAY), key=ea)
    [revoked] = out.of(ReferralRevoked)
    assert (revoked["referrer_member_id"], revoked["referrer_points"], revoked["referee_points"],
            revoked["arms"]) == (rb, 80, 40, {"x": "b"})
    taken_back = {r["entry_key"]: arms_of(r) for r in out.of(ReverseEntry) if r["entry_key"].startswith("referral:")}
    assert taken_back == {k: {"x": "b"} for k, c in credits.items() if c["member_id"] in (rb, ea)
                          and c["amount"] in (80, 40)}
    assert len(taken_back) == 2
    # The referee's referral credits reach the ledger with the arm (its entries keep it).
    [credit] = [e for e in await entries(pipeline, ea) if e["idempotency_key"].startswith("referral:")
                and e["kind"] == "earn"]
    assert (credit["amount"], credit["arms"]) == (40, {"x": "b"})


# --- redemption ------------------------------------------------------------------------------------------------

@pytest.fixture
async def redemption_chain(infra: Infra, tmp_path: Path) -> AsyncIterator[tuple[Pipeline, Clock]]:
    folder = folder_with_experiment(tmp_path)
    clock = Clock(ENDS - timedelta(hours=1))  # inside the window, an hour before it closes
    dsn = await infra.new_database("exp_redeem_")
    settings = RedemptionSettings(programmes_dir=folder, coupon_key=SecretStr("fast-tier-key"))
    async with Pipeline(ServiceHarness(ledger_spec(LedgerSettings(programmes_dir=folder), clock=clock), dsn),
                        ServiceHarness(redemption_spec(settings, clock=clock), dsn)) as pipeline:
        yield pipeline, clock
    await check_ledger_invariants(dsn)


async def test_a_rewards_price_follows_the_members_arm_at_the_redemptions_time_and_its_events_name_it(
        redemption_chain: tuple[Pipeline, Clock]) -> None:
    pipeline, clock = redemption_chain
    a, b, poor = member_in("a"), member_in("b"), member_in("b", 1)
    for member in (a, b):
        credit = PostCredit(idempotency_key=f"credit:{member}", program_id="lab", member_id=member, amount=1000,
                            occurred_at=clock.now - timedelta(minutes=1), cause=Cause(source_event_id=f"t|{member}"))
        await pipeline.send(topics.LEDGER_COMMANDS, envelope.encode(
            credit.idempotency_key, "test", credit.TYPE, credit.occurred_at, credit.model_dump(mode="json")),
            key=member)
    redemption = pipeline["redemption"]

    async def redeem(member: str, key: str) -> tuple[int, dict[str, Any], Any]:
        response = await redemption.request("POST", "/v1/programs/lab/redemptions",
                                            json={"member_id": member, "reward_id": "coupon-5"},
                                            headers={"Idempotency-Key": key})
        out = await redemption.drain()
        out += await pipeline.settle(out.messages)
        return response.status_code, response.json(), out

    async def price(member: str) -> int:
        status, body = await redemption.get(f"/v1/programs/lab/rewards?member_id={member}")
        assert status == 200, body
        return int(next(r["points"] for r in body["rewards"] if r["reward_id"] == "coupon-5"))

    assert (await price(a), await price(b)) == (100, 60)
    done: dict[str, tuple[Any, ...]] = {}
    rids: dict[str, str] = {}
    for member in (a, b):
        status, body, out = await redeem(member, f"k-{member}")
        assert status == 202, body
        [hold] = out.of(PlaceHold)
        [completed] = out.of(RedemptionCompleted)
        done[member] = (hold["amount"], arms_of(hold), completed["points"], completed["arms"])
        rids[member] = body["redemption_id"]
    assert done == {a: (100, {"x": "a"}, 100, {"x": "a"}), b: (60, {"x": "b"}, 60, {"x": "b"})}
    # The points spent are an entry of the ledger's naming the arm that priced them.
    [spent] = [e for e in await entries(pipeline, b) if e["amount"] < 0]
    assert (spent["amount"], spent["arms"]) == (-60, {"x": "b"})

    # Refused by the ledger (no points): the rejection names the arm too.
    status, body, out = await redeem(poor, "k-poor")
    [rejected] = out.of(RedemptionRejected)
    assert (rejected["reason"], rejected["arms"]) == ("insufficient_points", {"x": "b"})

    # Cancelled after the experiment ended: the points come back under the arm they were spent in.
    clock.now = ENDS + timedelta(hours=1)  # within the coupon's 24 hours to cancel
    response = await redemption.request("POST", f"/v1/programs/lab/redemptions/{rids[b]}/cancel")
    assert response.status_code == 200, response.text
    out = await redemption.drain()
    out += await pipeline.settle(out.messages)
    [cancelled] = out.of(RedemptionCancelled)
    [back] = out.of(ReverseEntry)
    assert (cancelled["points_returned"], cancelled["arms"], arms_of(back)) == (60, {"x": "b"}, {"x": "b"})

    # After the window, b pays the version's own price and nothing names an arm.
    assert await price(b) == 100
    status, body, out = await redeem(b, "k-after")
    [completed] = out.of(RedemptionCompleted)
    assert (completed["points"], completed["arms"], arms_of(out.of(PlaceHold)[0])) == (100, {}, None)
