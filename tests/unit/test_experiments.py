"""Experiments' arms (shared/experiments.py): members split in the declared shares, always into the same arm, and
independently across experiments; a declaration that cannot be run as written is refused with the reason."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from shared.experiments import Experiment, arm_of, arms_at

STARTS = datetime(2026, 12, 1, tzinfo=UTC)
MEMBERS = [f"member-{i:06d}" for i in range(100_000)]


def experiment(experiment_id: str, *shares: str, **kw: Any) -> Experiment:
    arms = [{"name": chr(ord("a") + i), "share": share} for i, share in enumerate(shares)]
    return Experiment.model_validate({"experiment_id": experiment_id, "starts": STARTS,
                                      "ends": STARTS + timedelta(days=30), "arms": arms, **kw})


@pytest.mark.parametrize("shares", [("0.5", "0.5"), ("0.2", "0.3", "0.5")])
def test_100000_members_split_within_one_percent_of_the_declared_shares(shares: tuple[str, ...]) -> None:
    e = experiment("split", *shares)
    counts = Counter(arm_of("retail", e, m).name for m in MEMBERS)
    assert set(counts) == {arm.name for arm in e.arms}
    for arm in e.arms:
        assert abs(Decimal(counts[arm.name]) / len(MEMBERS) - arm.share) < Decimal("0.01"), (arm.name, counts)


def test_the_same_member_always_gets_the_same_arm() -> None:
    first = experiment("stable", "0.2", "0.3", "0.5")
    again = experiment("stable", "0.2", "0.3", "0.5")  # another copy of the declaration, as another service loads it
    picked = [arm_of("retail", first, m).name for m in MEMBERS[:5000]]
    assert picked == [arm_of("retail", again, m).name for m in MEMBERS[:5000]]
    assert picked == [arm_of("retail", first, m).name for m in MEMBERS[:5000]]
    assert len(set(picked)) == 3


def test_arms_are_independent_across_two_experiments() -> None:
    one, other = experiment("one", "0.5", "0.5"), experiment("other", "0.5", "0.5")
    pairs = Counter((arm_of("retail", one, m).name, arm_of("retail", other, m).name) for m in MEMBERS)
    assert set(pairs) == {("a", "a"), ("a", "b"), ("b", "a"), ("b", "b")}
    for pair, n in pairs.items():
        assert abs(n / len(MEMBERS) - 0.25) < 0.01, (pair, pairs)
    # Nor is a member's arm the same across programmes: the programme is part of the hash.
    same = sum(arm_of("retail", one, m).name == arm_of("cafe", one, m).name for m in MEMBERS)
    assert abs(same / len(MEMBERS) - 0.5) < 0.01


def test_a_member_is_in_an_experiment_only_while_it_runs() -> None:
    e = experiment("window", "0.5", "0.5")
    member = MEMBERS[0]
    arm = arm_of("retail", e, member).name
    assert arms_at("retail", [e], member, STARTS - timedelta(seconds=1)) == {}
    assert arms_at("retail", [e], member, STARTS) == {"window": arm}
    assert arms_at("retail", [e], member, e.ends - timedelta(seconds=1)) == {"window": arm}
    assert arms_at("retail", [e], member, e.ends) == {}


def test_shares_that_do_not_add_up_to_one_are_refused() -> None:
    with pytest.raises(ValidationError, match=r"add up to 0\.9, not 1"):
        experiment("short", "0.5", "0.4")
    with pytest.raises(ValidationError, match=r"add up to 1\.1, not 1"):
        experiment("long", "0.5", "0.6")


def test_an_arm_may_override_only_the_sections_an_experiment_may_change() -> None:
    with pytest.raises(ValidationError, match="arm 'b' overrides tiers: an arm may change only activity, purchase, "
                                              "referral, rewards"):
        Experiment.model_validate({
            "experiment_id": "tiers", "starts": STARTS, "ends": STARTS + timedelta(days=1),
            "arms": [{"name": "a", "share": "0.5"},
                     {"name": "b", "share": "0.5", "overrides": {"tiers": {"levels": []}}}]})
    allowed = Experiment.model_validate({
        "experiment_id": "referral", "starts": STARTS, "ends": STARTS + timedelta(days=1),
        "arms": [{"name": "a", "share": "0.5"},
                 {"name": "b", "share": "0.5", "overrides": {"referral": {"referrer_points": 50}}}]})
    assert allowed.arm("b").overrides == {"referral": {"referrer_points": 50}}


def test_an_experiment_that_ends_before_it_starts_is_refused() -> None:
    with pytest.raises(ValidationError, match="ends no later than it starts"):
        experiment("backwards", "0.5", "0.5", ends=STARTS - timedelta(days=1))
    with pytest.raises(ValidationError, match="ends no later than it starts"):
        experiment("empty", "0.5", "0.5", ends=STARTS)


def test_an_arm_named_twice_is_refused() -> None:
    with pytest.raises(ValidationError, match="names an arm twice"):
        Experiment.model_validate({"experiment_id": "twice", "starts": STARTS, "ends": STARTS + timedelta(days=1),
                                   "arms": [{"name": "a", "share": "0.5"}, {"name": "a", "share": "0.5"}]})
