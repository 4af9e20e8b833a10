"""The what-if's simulations against the services they stand for, on the fast tier: one generated feed (purchases,
refunds, ledger entries and their reversals, enrolments, manual tiers; referrals with fingerprints, qualifying and
too-small first purchases, refunds inside and after the return window) through the tiers service, and through the
referral service and the ledger, over real PostgreSQL, and through TierSim and ReferralSim in memory, with the review
and expiry jobs run at the same times: the same tier changes, the same credits and reversals, the same outcomes."""

from __future__ import annotations

import itertools
import random
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from cli.whatif.referral import ReferralSim
from cli.whatif.tiers import TierSim
from services.earn.domain import MemberTier, tier_at
from services.ledger.app import spec as ledger_spec
from services.ledger.settings import LedgerSettings
from services.referral.app import spec as referral_spec
from services.referral.programme import ReferralProgramme
from services.referral.settings import ReferralSettings
from services.tiers.app import spec as tiers_spec
from services.tiers.programme import TiersProgramme
from services.tiers.settings import TiersSettings
from shared.contracts import topics
from shared.contracts.base import Contract
from shared.contracts.ledger_commands import PostCredit, ReverseEntry
from shared.contracts.ledger_entries import PointsEntryPosted
from shared.contracts.members import MemberEnrolled, TierAssigned
from shared.contracts.purchases import PurchaseCompleted, PurchaseRefunded
from shared.contracts.referrals import ReferralAccepted
from shared.contracts.tiers import TierChanged
from shared.envelope import CloudEvent
from shared.programmes import Catalogue
from shared.testing import Delivered, Pipeline, ServiceHarness, cloud_event
from tests.conftest import check_ledger_invariants
from tests.support import Infra

DAY = timedelta(days=1)
NOW = datetime.now(UTC).replace(microsecond=0)
LEVELS = [{"tier": "member", "threshold": "0"},
          {"tier": "silver", "threshold": "3000", "earn_multiplier": "1.2"},
          {"tier": "gold", "threshold": "10000", "earn_multiplier": "1.5", "grace_days": 30}]
HEADER = {"version": 1, "effective_from": "2020-01-01T00:00:00Z", "currency": "CNY"}
PROGRAMMES: list[dict[str, Any]] = [
    {**HEADER, "program_id": "shop", "name": "Shop", "timezone": "Asia/Shanghai",
     "tiers": {"metric": "spend", "window": {"kind": "calendar_year"}, "downgrade": "one_step", "levels": LEVELS,
               "manual": {"sources": ["crm://vip-desk"]}}},
    {**HEADER, "program_id": "pts", "name": "Points", "timezone": "UTC",
     "tiers": {"metric": "points_earned", "window": {"kind": "rolling", "months": 6}, "levels": LEVELS}},
    {**HEADER, "program_id": "ref", "name": "Referrals", "timezone": "Asia/Shanghai",
     "experiments": [{"experiment_id": "invite-80", "starts": (NOW - 150 * DAY).isoformat(), "ends": NOW.isoformat(),
                      "arms": [{"name": "control", "share": "0.5"}, {"name": "eighty", "share": "0.5",
                               "overrides": {"referral": {"referrer_points": 80}}}]}],
     "referral": {"referrer_points": 50, "referee_points": 20,
                  "qualifying": {"purchase": "first", "min_total": "50", "within_days": 30},
                  "cap": {"count": 4, "per": "month"}, "bonus": {"every": 3, "points": 30}, "pending_days": 14,
                  "velocity": {"days": 7, "per_referrer": 3, "per_device": 2}}},
]


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def folder(tmp_path: Path) -> Path:
    for p in PROGRAMMES:
        (tmp_path / f"{p['program_id']}.yaml").write_text(yaml.safe_dump(p))
    return tmp_path


class Feed:
    """Events in time order, each as the service receives it (topic, key, bytes) and as a simulation takes it."""

    def __init__(self) -> None:
        self.events: list[tuple[datetime, str, str, bytes, CloudEvent, Contract]] = []
        self._ids = itertools.count()

    def add(self, topic: str, at: datetime, data: Contract, key: str, source: str = "test://feed") -> None:
        event_id = f"e{next(self._ids)}"
        dumped = data.model_dump(mode="json", exclude_none=True)
        self.events.append((at, topic, key, cloud_event(type(data), event_id, at, dumped, source),
                            CloudEvent(event_id, source, data.TYPE, at, dumped), data))

    def in_order(self) -> list[tuple[datetime, str, str, bytes, CloudEvent, Contract]]:
        return sorted(self.events, key=lambda e: (e[0], e[4].id))


def tiers_feed(rng: random.Random, start: datetime) -> Feed:
    feed = Feed()
    members = [f"m{i}" for i in range(10)]
    orders: list[tuple[str, str, Decimal]] = []
    credits: list[tuple[str, int, int]] = []
    entry_ids = itertools.count(1)
    times = sorted(start + timedelta(seconds=rng.randrange(0, 700 * 86400)) for _ in range(320))
    for n, at in enumerate(times):
        member, pick = rng.choice(members), rng.random()
        if pick < 0.4:
            order, total = f"o{n}", Decimal(rng.choice(["300", "900", "1500", "2800", "4000"]))
            orders.append((order, member, total))
            feed.add(topics.PURCHASES, at, PurchaseCompleted(program_id="shop", member_id=member, order_id=order,
                                                             channel="pos", currency="CNY", total=total), member)
        elif pick < 0.5 and orders:
            order, member, total = rng.choice(orders)
            part = total if rng.random() < 0.5 else total / 2
            feed.add(topics.PURCHASES, at, PurchaseRefunded(program_id="shop", member_id=member, order_id=order,
                                                            refund_id=f"r{n}", currency="CNY", total=part), member)
        elif pick < 0.8:
            entry, amount = next(entry_ids), rng.choice([300, 900, 2000, 4000])
            credits.append((member, entry, amount))
            feed.add(topics.LEDGER_ENTRIES, at, entry_posted(entry, member, amount, "earn", at), member)
        elif pick < 0.87 and credits:
            member, entry, amount = credits.pop(rng.randrange(len(credits)))
            feed.add(topics.LEDGER_ENTRIES, at, entry_posted(next(entry_ids), member, -amount, "reversal", at,
                                                             corrects=entry), member)
        elif pick < 0.92:
            program = rng.choice(["shop", "pts"])
            feed.add(topics.MEMBERS, at, MemberEnrolled(program_id=program, member_id=member, enrolled_at=at),
                     member)
        else:
            until = at + rng.choice([30, 90, 200]) * DAY if rng.random() < 0.8 else None
            source = "crm://vip-desk" if rng.random() < 0.8 else "pos://till-4"
            feed.add(topics.MEMBERS, at, TierAssigned(program_id="shop", member_id=member,
                                                      tier=rng.choice(["silver", "gold"]), until=until,
                                                      reason="status match", assigned_by="agent-7"),
                     member, source)
    return feed


def entry_posted(entry: int, member: str, amount: int, kind: str, at: datetime,
                 corrects: int | None = None) -> PointsEntryPosted:
    return PointsEntryPosted.model_validate({
        "entry_id": entry, "program_id": "pts", "member_id": member, "seq": entry, "amount": amount,
        "balance_after": 0, "kind": kind, "idempotency_key": f"k{entry}", "cause": {"source_event_id": f"s{entry}"},
        "occurred_at": at, "posted_at": at, "corrects_entry_id": corrects, "hash": "h"})


def changed(out: Delivered) -> list[tuple[str, str, datetime, str, str, str, str | None, Decimal]]:
    return [(m.data["program_id"], m.data["member_id"], datetime.fromisoformat(m.event["time"]), m.data["tier"],
             m.data["previous_tier"], m.data["reason"], m.data.get("detail"), Decimal(m.data["earn_multiplier"]))
            for m in out.on(topics.TIERS) if m.type == TierChanged.TYPE]


async def test_tiersim_moves_every_member_as_the_tiers_service_does(infra: Infra, tmp_path: Path) -> None:
    programmes = folder(tmp_path)
    sim = TierSim(Catalogue.load(programmes, TiersProgramme))
    feed = tiers_feed(random.Random(19), datetime(2024, 1, 3, tzinfo=UTC))
    dsn = await infra.new_database("whatif_tiers_")
    service: list[tuple[str, str, datetime, str, str, str, str | None, Decimal]] = []
    simulated: list[tuple[str, str, datetime, str, str, str, str | None, Decimal]] = []
    async with ServiceHarness(tiers_spec(TiersSettings(programmes_dir=programmes)), dsn) as tiers:
        events = feed.in_order()
        for at, topic, key, value, event, data in events:
            _, reviewed = await tiers.run_job("tier-review", at)  # the daily review, caught up to the event
            service += changed(reviewed) + changed(await tiers.send(topic, value, key=key))
            simulated += [(m.program_id, m.member_id, m.at, m.tier, m.previous, m.reason, m.detail, m.multiplier)
                          for m in sim.advance(at) + sim.feed(event, data)]
        end = events[-1][0] + 400 * DAY
        service += changed((await tiers.run_job("tier-review", end))[1])
        simulated += [(m.program_id, m.member_id, m.at, m.tier, m.previous, m.reason, m.detail, m.multiplier)
                      for m in sim.advance(end)]
        held = await tiers.query("SELECT program_id, member_id, tier FROM members")

    def by_member(moves: list[Any]) -> dict[tuple[str, str], list[Any]]:
        found: dict[tuple[str, str], list[Any]] = defaultdict(list)
        for move in moves:
            found[move[:2]].append(move)
        return dict(found)

    assert by_member(simulated) == by_member(service)
    reasons = Counter((m[0], m[5], m[6]) for m in service)
    # The feed is worth comparing: it reaches every kind of change in both programmes.
    assert {("shop", "upgrade", None), ("shop", "downgrade", "review"), ("shop", "downgrade", "reversed"),
            ("shop", "manual", None), ("shop", "expired_manual", None), ("pts", "upgrade", None),
            ("pts", "downgrade", "review"), ("pts", "downgrade", "reversed")} <= set(reasons), reasons
    assert {(r["program_id"], r["member_id"]): r["tier"] for r in held} == {
        key: sim.tier_of(*key) for key in {(r["program_id"], r["member_id"]) for r in held}}
    for program in ("shop", "pts"):
        assert sim.tiers_at(program, end) == Counter(r["tier"] for r in held if r["program_id"] == program)
    assert sim.refused["untrusted_source"] > 0 and sim.ignored["other_metric"] == 0
    # What earn would apply to a purchase at any moment: the tier its history of the service's announcements gives.
    for (program, member), moves in by_member(service).items():
        history = [(m[2], MemberTier(m[3], m[7])) for m in moves]
        for at in [e[0] for e in events[::5]] + [m[2] for m in moves]:
            announced = sim.announced_at(program, member, at)
            assert tier_at(history, at) == (MemberTier(announced.tier, announced.multiplier) if announced else None)


def referral_feed(rng: random.Random, start: datetime) -> Feed:
    feed = Feed()
    referrers = [f"rex{i}" for i in range(3)]
    for r in referrers:
        feed.add(topics.MEMBERS, start, MemberEnrolled(program_id="ref", member_id=r,
                                                       fingerprints={"device": f"dev-{r}"}), r)
    for i in range(36):
        referee, referrer = f"f{i}", rng.choice(referrers)
        accepted = start + DAY + timedelta(seconds=rng.randrange(0, 80 * 86400))
        # Most on their own phone; some on their referrer's (self-referral), some on one shared phone (velocity).
        device = rng.choices([f"dev-{referee}", f"dev-{referrer}", "dev-shared"], [0.75, 0.1, 0.15])[0]
        feed.add(topics.MEMBERS, accepted - DAY, MemberEnrolled(program_id="ref", member_id=referee,
                                                                fingerprints={"device": device}), referee)
        if rng.random() < 0.1:  # a customer already: bought before accepting
            feed.add(topics.PURCHASES, accepted - DAY / 2, purchase(referee, f"pre-{i}", "70"), referee)
        feed.add(topics.REFERRALS, accepted, ReferralAccepted(program_id="ref", referrer_member_id=referrer,
                                                              referee_member_id=referee), referee)
        if rng.random() < 0.1:  # a second invitation, later, from another referrer: already referred
            other = rng.choice([r for r in referrers if r != referrer])
            feed.add(topics.REFERRALS, accepted + DAY, ReferralAccepted(
                program_id="ref", referrer_member_id=other, referee_member_id=referee), referee)
        if rng.random() < 0.85:
            bought = accepted + timedelta(seconds=rng.randrange(0, 40 * 86400))  # some after the 30 days
            order, total = f"o-{i}", rng.choice(["30", "60", "120", "120"])
            feed.add(topics.PURCHASES, bought, purchase(referee, order, total), referee)
            if rng.random() < 0.3:  # refunded, inside the 14 days' return window or after it
                feed.add(topics.PURCHASES, bought + rng.choice([3, 10, 20]) * DAY, PurchaseRefunded(
                    program_id="ref", member_id=referee, order_id=order, refund_id=f"rf-{i}", currency="CNY",
                    total=Decimal(total) * rng.choice([Decimal(1), Decimal("0.5")])), referee)
    # A burst: six friends of rex0 accept within hours and buy in the same month, past velocity and the cap.
    burst = (start + 32 * DAY).replace(day=3, hour=0, minute=0, second=0)
    for j in range(6):
        referee = f"b{j}"
        feed.add(topics.MEMBERS, burst - DAY, MemberEnrolled(program_id="ref", member_id=referee,
                                                             fingerprints={"device": f"dev-{referee}"}), referee)
        feed.add(topics.REFERRALS, burst + j * timedelta(hours=1), ReferralAccepted(
            program_id="ref", referrer_member_id="rex0", referee_member_id=referee), referee)
        feed.add(topics.PURCHASES, burst + 2 * DAY + j * timedelta(hours=1), purchase(referee, f"ob-{j}", "120"),
                 referee)
    return feed


def purchase(member: str, order: str, total: str) -> PurchaseCompleted:
    return PurchaseCompleted(program_id="ref", member_id=member, order_id=order, channel="pos", currency="CNY",
                             total=Decimal(total))


async def test_referralsim_pays_and_takes_back_what_the_referral_service_does(infra: Infra, tmp_path: Path) -> None:
    programmes = folder(tmp_path)
    sim = ReferralSim(Catalogue.load(programmes, ReferralProgramme))
    feed = referral_feed(random.Random(5), NOW - 200 * DAY)
    dsn = await infra.new_database("whatif_referral_")
    clock = Clock(NOW)
    out, awards = Delivered(), []
    async with Pipeline(ServiceHarness(ledger_spec(LedgerSettings(programmes_dir=programmes)), dsn),
                        ServiceHarness(referral_spec(ReferralSettings(programmes_dir=programmes), clock=clock),
                                       dsn)) as pipeline:
        events = feed.in_order()
        for n, (at, topic, key, value, event, data) in enumerate(events):
            if n % 7 == 0:  # the expiry job, now and then
                out += await pipeline.run_job("referral", "referral-expiry", at)
                awards += sim.advance(at)
            clock.now = at
            out += await pipeline.send(topic, value, key=key)
            awards += sim.feed(event, data)
        end = events[-1][0] + 40 * DAY
        out += await pipeline.run_job("referral", "referral-expiry", end)
        awards += sim.advance(end)
        rows = await pipeline["referral"].query("SELECT status, reason FROM referrals")
    await check_ledger_invariants(dsn)

    credited = {c["idempotency_key"]: c for c in out.of(PostCredit)}
    service = sorted([(c["idempotency_key"], c["details"]["referral_id"], c["member_id"], c["details"]["role"],
                       c["amount"], datetime.fromisoformat(c["occurred_at"]), str(c["cause"].get("arms") or {}))
                      for c in credited.values()]
                     + [(r["entry_key"], r["details"]["referral_id"], r["member_id"], r["details"]["role"],
                         -credited[r["entry_key"]]["amount"], datetime.fromisoformat(r["occurred_at"]),
                         str(r["cause"].get("arms") or {})) for r in out.of(ReverseEntry)])
    assert sorted((a.credit, a.referral_id, a.member_id, a.role, a.points, a.at, str(a.arms))
                  for a in awards) == service
    # The experiment ran over part of the feed: both arms paid, each the referrer's points of its own terms.
    assert {(a.arms.get("invite-80"), a.points) for a in awards if a.role == "referrer" and a.points > 0} == {
        (None, 50), ("control", 50), ("eighty", 80)}
    assert {c["idempotency_key"]: datetime.fromisoformat(c["available_at"]) for c in credited.values()} == {
        a.credit: a.available_at for a in awards if a.points > 0}
    outcomes = Counter(r["status"] if r["status"] != "rejected" else f"rejected:{r['reason']}" for r in rows)
    assert sim.outcomes() == outcomes
    # The feed is worth comparing: it reaches every verdict the service gives.
    assert {"rewarded", "revoked", "review", "rejected:self_referral", "rejected:existing_customer",
            "rejected:already_referred", "rejected:expired", "rejected:referrer_cap"} <= set(outcomes), outcomes
    assert any(a.role == "bonus" for a in awards) and sim.held() == outcomes["review"]
