"""The what-if's referral simulation (cli/whatif/referral.py), pure: both sides rewarded on the referee's qualifying
purchase, the referrer's cap per month, the bonus on every 5th place, the clawback of a refund within the return
window (and none after it), expiry without a qualifying purchase, a referral held for review by velocity (counted
as held, nothing awarded, said in the notes), self-referral by a shared device, codes it cannot resolve, and the
referrer's experiment arm setting the rewards."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from cli.whatif.referral import ReferralAward, ReferralSim
from services.referral.domain import referral_id
from services.referral.programme import ReferralProgramme
from shared.contracts.base import Contract
from shared.contracts.members import MemberEnrolled
from shared.contracts.purchases import PurchaseCompleted, PurchaseRefunded
from shared.contracts.referrals import ReferralAccepted
from shared.envelope import CloudEvent
from shared.experiments import arm_of
from shared.programmes import Catalogue

T0 = datetime(2026, 3, 2, 2, tzinfo=UTC)
DAY = timedelta(days=1)
TERMS: dict[str, Any] = {"referrer_points": 50, "referee_points": 20,
                         "qualifying": {"purchase": "first", "min_total": "50", "within_days": 30},
                         "pending_days": 14}
_ids = itertools.count()


def version(program_id: str, **terms: Any) -> dict[str, Any]:
    return {"program_id": program_id, "name": program_id, "version": 1, "effective_from": "2020-01-01T00:00:00Z",
            "timezone": "UTC", "currency": "CNY", "referral": {**TERMS, **terms}}


@pytest.fixture
def sim(tmp_path: Path) -> ReferralSim:
    for v in (version("plain"), version("capped", cap={"count": 3, "per": "month"}),
              version("bonus", bonus={"every": 5, "points": 100}),
              version("watched", velocity={"days": 7, "per_referrer": 2})):
        (tmp_path / f"{v['program_id']}.yaml").write_text(yaml.safe_dump(v))
    return ReferralSim(Catalogue.load(tmp_path, ReferralProgramme))


def event(data: Contract, at: datetime, source: str = "test://feed") -> CloudEvent:
    return CloudEvent(f"e{next(_ids)}", source, data.TYPE, at, data.model_dump(mode="json"))


def accept(sim: ReferralSim, program: str, referrer: str, referee: str, at: datetime) -> list[ReferralAward]:
    data = ReferralAccepted(program_id=program, referrer_member_id=referrer, referee_member_id=referee)
    return sim.feed(event(data, at), data)


def buy(sim: ReferralSim, program: str, member: str, order: str, total: str, at: datetime) -> list[ReferralAward]:
    data = PurchaseCompleted(program_id=program, member_id=member, order_id=order, channel="pos", currency="CNY",
                             total=Decimal(total))
    return sim.feed(event(data, at), data)


def refund(sim: ReferralSim, program: str, member: str, order: str, total: str, at: datetime) -> list[ReferralAward]:
    data = PurchaseRefunded(program_id=program, member_id=member, order_id=order, refund_id=f"r-{order}",
                            currency="CNY", total=Decimal(total))
    return sim.feed(event(data, at), data)


def paid(awards: list[ReferralAward]) -> list[tuple[str, str, int, str]]:
    return [(a.member_id, a.role, a.points, a.outcome) for a in awards]


def test_the_qualifying_purchase_rewards_both_sides_at_its_time(sim: ReferralSim) -> None:
    assert accept(sim, "plain", "rex", "eve", T0) == []
    rid = referral_id("plain", "rex", "eve")
    assert buy(sim, "plain", "eve", "o1", "80", T0 + DAY) == [
        ReferralAward("plain", rid, "rex", "referrer", 50, "referral-referrer", T0 + DAY, "rewarded",
                      f"referral:{rid}:referrer", T0 + 15 * DAY, None),
        ReferralAward("plain", rid, "eve", "referee", 20, "referral-referee", T0 + DAY, "rewarded",
                      f"referral:{rid}:referee", T0 + 15 * DAY, None)]
    assert buy(sim, "plain", "eve", "o2", "80", T0 + 2 * DAY) == []  # paid once
    # A first purchase below the minimum: nothing, and no later purchase qualifies (`purchase: first`).
    accept(sim, "plain", "rex", "fay", T0)
    assert buy(sim, "plain", "fay", "o3", "49.99", T0 + DAY) == []
    assert buy(sim, "plain", "fay", "o4", "500", T0 + 2 * DAY) == []
    assert sim.outcomes("plain") == {"rewarded": 1, "pending": 1}
    assert sim.rewarded() == 1


def test_the_referrers_cap_per_month_refuses_the_fourth_and_april_pays_again(sim: ReferralSim) -> None:
    awards = []
    for i in range(4):
        accept(sim, "capped", "rex", f"f{i}", T0)
        awards += buy(sim, "capped", f"f{i}", f"o{i}", "60", T0 + (i + 1) * DAY)
    assert [a.member_id for a in awards if a.role == "referrer"] == ["rex"] * 3
    assert sim.rejected("capped") == {"referrer_cap": 1}
    accept(sim, "capped", "rex", "april", datetime(2026, 3, 30, tzinfo=UTC))
    assert paid(buy(sim, "capped", "april", "o9", "60", datetime(2026, 4, 1, 1, tzinfo=UTC))) == [
        ("rex", "referrer", 50, "rewarded"), ("april", "referee", 20, "rewarded")]
    assert sim.rewarded("capped") == 4


def test_every_fifth_place_pays_the_referrer_a_bonus(sim: ReferralSim) -> None:
    bonuses = []
    for i in range(6):
        accept(sim, "bonus", "rex", f"f{i}", T0)
        bonuses += [(a.referral_id, a.points) for a in buy(sim, "bonus", f"f{i}", f"o{i}", "60", T0 + (i + 1) * DAY)
                    if a.role == "bonus"]
    assert bonuses == [(referral_id("bonus", "rex", "f4"), 100)]


def test_a_refund_within_the_return_window_claws_both_sides_back_and_one_after_it_does_not(
        sim: ReferralSim) -> None:
    accept(sim, "plain", "rex", "eve", T0)
    accept(sim, "plain", "rex", "fay", T0)
    buy(sim, "plain", "eve", "o1", "80", T0 + DAY)
    buy(sim, "plain", "fay", "o2", "80", T0 + DAY)
    back = refund(sim, "plain", "eve", "o1", "40", T0 + 10 * DAY)  # 40 kept: below the minimum of 50
    assert paid(back) == [("eve", "referee", -20, "revoked"), ("rex", "referrer", -50, "revoked")]
    rid = referral_id("plain", "rex", "eve")
    assert [a.credit for a in back] == [f"referral:{rid}:referee", f"referral:{rid}:referrer"]  # what it reverses
    assert {a.at for a in back} == {T0 + 10 * DAY}
    assert refund(sim, "plain", "fay", "o2", "80", T0 + 16 * DAY) == []  # after the 14 days' return window
    assert sim.outcomes("plain") == {"revoked": 1, "rewarded": 1}


def test_a_referral_without_a_qualifying_purchase_expires_when_the_clock_passes_its_deadline(
        sim: ReferralSim) -> None:
    accept(sim, "plain", "rex", "eve", T0)
    assert sim.advance(T0 + 30 * DAY) == [] and sim.outcomes() == {"pending": 1}
    assert sim.advance(T0 + 31 * DAY) == []
    assert sim.rejected() == {"expired": 1}
    assert buy(sim, "plain", "eve", "late", "80", T0 + 32 * DAY) == []  # too late to qualify


def test_velocity_holds_a_referral_for_review_which_a_replay_cannot_decide(sim: ReferralSim) -> None:
    awards = []
    for i in range(3):
        accept(sim, "watched", "rex", f"f{i}", T0 + i * DAY)
        awards += buy(sim, "watched", f"f{i}", f"o{i}", "60", T0 + 4 * DAY)
    assert [a.member_id for a in awards if a.role == "referee"] == ["f0", "f1"]  # the third is held
    assert (sim.held(), sim.rewarded()) == (1, 2)
    assert len(sim.notes) == 1
    assert "1 referral(s) held for a person's review" in sim.notes[0]
    assert referral_id("watched", "rex", "f2") in sim.notes[0]


def test_a_referee_on_the_referrers_device_is_a_self_referral_and_unresolved_codes_are_said(
        sim: ReferralSim) -> None:
    for member in ("rex", "eve"):
        data = MemberEnrolled(program_id="plain", member_id=member, fingerprints={"device": "phone-of-rex"})
        sim.feed(event(data, T0 - DAY), data)
    accept(sim, "plain", "rex", "eve", T0)
    assert buy(sim, "plain", "eve", "o1", "80", T0 + DAY) == []
    assert sim.rejected() == {"self_referral": 1}
    coded = MemberEnrolled(program_id="plain", member_id="gil", referral_code="ABCD2345")
    assert sim.feed(event(coded, T0), coded) == []
    unknown = ReferralAccepted(program_id="nowhere", referrer_member_id="rex", referee_member_id="hal")
    assert sim.feed(event(unknown, T0), unknown) == []
    assert sim.refused == {"unknown_program": 1}
    assert [n.split(" ")[1] for n in sim.notes] == ["enrolment(s)", "the"]


def test_codes_given_resolve_enrolments_and_check_acceptances_as_the_service_does(tmp_path: Path) -> None:
    (tmp_path / "plain.yaml").write_text(yaml.safe_dump(version("plain")))
    sim = ReferralSim(Catalogue.load(tmp_path, ReferralProgramme), codes={("plain", "ABCD2345"): "rex"})
    typed = MemberEnrolled(program_id="plain", member_id="eve", referral_code="abcd-2345")  # as a person types it
    sim.feed(event(typed, T0), typed)
    assert paid(buy(sim, "plain", "eve", "o1", "80", T0 + DAY)) == [
        ("rex", "referrer", 50, "rewarded"), ("eve", "referee", 20, "rewarded")]
    wrong = MemberEnrolled(program_id="plain", member_id="fay", referral_code="ZZZZZZZZ")
    other = ReferralAccepted(program_id="plain", referrer_member_id="sam", referee_member_id="gil",
                             referral_code="ABCD2345")
    for data in (wrong, other):
        assert sim.feed(event(data, T0), data) == []
    assert sim.refused == {"unknown_referral_code": 1, "referral_code_mismatch": 1}
    assert sim.outcomes() == {"rewarded": 1} and sim.unresolved_codes == 0


def test_the_referrers_experiment_arm_sets_both_rewards_and_is_named_on_each_award(tmp_path: Path) -> None:
    trial = {"experiment_id": "invite-50", "starts": "2026-01-01T00:00:00Z", "ends": "2026-06-01T00:00:00Z",
             "arms": [{"name": "control", "share": "0.5"},
                      {"name": "fifty", "share": "0.5", "overrides": {"referral": {"referrer_points": 50}}}]}
    (tmp_path / "trial.yaml").write_text(yaml.safe_dump({**version("trial", referrer_points=20),
                                                         "experiments": [trial]}))
    catalogue = Catalogue.load(tmp_path, ReferralProgramme)
    sim = ReferralSim(catalogue)
    experiment = catalogue.versions["trial"][0].experiments[0]
    by_arm = {arm_of("trial", experiment, f"rex{i}").name: f"rex{i}" for i in range(20)}
    for arm, referrer in sorted(by_arm.items()):
        accept(sim, "trial", referrer, f"friend-of-{referrer}", T0)
        awards = buy(sim, "trial", f"friend-of-{referrer}", f"o-{referrer}", "80", T0 + DAY)
        assert [(a.role, a.points, a.arms) for a in awards] == [
            ("referrer", 50 if arm == "fifty" else 20, {"invite-50": arm}), ("referee", 20, {"invite-50": arm})]
        back = refund(sim, "trial", f"friend-of-{referrer}", f"o-{referrer}", "80", T0 + 2 * DAY)
        assert [(a.points, a.arms) for a in back] == [(-20, {"invite-50": arm}),
                                                      (-50 if arm == "fifty" else -20, {"invite-50": arm})]
    # After the experiment, the version's own terms, and no arm.
    accept(sim, "trial", "rex0", "late", datetime(2026, 7, 1, tzinfo=UTC))
    assert [(a.points, a.arms) for a in buy(sim, "trial", "late", "o-late", "80", datetime(2026, 7, 2, tzinfo=UTC))
            ] == [(20, {}), (20, {})]
