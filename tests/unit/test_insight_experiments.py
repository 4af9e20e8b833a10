"""The statistics insight compares an experiment's arms with (services/insight/experiments.py): the chi-square and t
distributions against closed forms and tables, intervals against published examples, and generated feeds with and
without an effect; the sample-ratio check on fair and skewed splits of hashed member ids."""

from __future__ import annotations

import math
import random
from decimal import Decimal

import pytest
import yaml

from services.insight import experiments as x
from shared.experiments import Experiment, arm_of
from tests.support import REPO


@pytest.mark.parametrize("value", [0.01, 0.3, 1.0, 2.5, 3.841458820694124, 7.0, 15.0, 40.0, 120.0])
def test_the_chi_square_tail_matches_its_closed_forms(value: float) -> None:
    # Both branches (series below a + 1, continued fraction above) against the closed forms of df 1, 2 and 4.
    assert x.chi2_sf(value, 1) == pytest.approx(math.erfc(math.sqrt(value / 2)), rel=1e-10, abs=1e-300)
    assert x.chi2_sf(value, 2) == pytest.approx(math.exp(-value / 2), rel=1e-10)
    assert x.chi2_sf(value, 4) == pytest.approx(math.exp(-value / 2) * (1 + value / 2), rel=1e-10)


def test_the_chi_square_tail_at_the_table_values() -> None:
    assert x.chi2_sf(3.841, 1) == pytest.approx(0.05, abs=1e-4)
    assert x.chi2_sf(5.991, 2) == pytest.approx(0.05, abs=1e-4)
    assert x.chi2_sf(10.828, 1) == pytest.approx(0.001, abs=1e-6)
    assert x.chi2_sf(16.266, 3) == pytest.approx(0.001, abs=1e-6)
    assert x.chi2_sf(0, 3) == 1.0
    assert x.upper_gamma(3, 0) == 1.0


def test_the_t_quantile_matches_closed_forms_and_the_table() -> None:
    p = 0.975
    assert x.t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-9)  # 12.706
    assert x.t_quantile(p, 2) == pytest.approx((2 * p - 1) * math.sqrt(2 / (4 * p * (1 - p))), rel=1e-9)  # 4.303
    assert x.t_quantile(p, 10) == pytest.approx(2.228138851986274, rel=1e-9)
    assert x.t_quantile(p, 30) == pytest.approx(2.042272456301238, rel=1e-9)
    assert x.t_quantile(p, 1e7) == pytest.approx(x.Z, rel=1e-6)
    assert x.normal_quantile(p) == pytest.approx(x.Z, abs=1e-9)
    assert x.t_cdf(-2.228138851986274, 10) == pytest.approx(0.025, abs=1e-12)


def test_wilson_and_newcombe_give_the_published_intervals() -> None:
    # Newcombe (1998), "Interval estimation for the difference between independent proportions", method 10:
    # 56/70 against 48/80 gives 0.0524 to 0.3339; Wilson's interval of 81/263 is 0.2553 to 0.3662.
    d = x.newcombe(56, 70, 48, 80)
    assert (round(d.difference, 4), round(d.low or 0, 4), round(d.high or 0, 4)) == (0.2, 0.0524, 0.3339)
    assert tuple(round(v, 4) for v in x.wilson(81, 263)) == (0.2553, 0.3662)
    # No successes in either arm: an interval around 0 inside [-1, 1], not the Wald interval's [0, 0].
    none = x.newcombe(0, 10, 0, 10)
    assert none.low is not None and none.high is not None and -1 < none.low < 0 < none.high < 1


def arm_values(rng: random.Random, n: int, mean: float, sd: float) -> list[int]:
    return [round(rng.gauss(mean, sd)) for _ in range(n)]


def test_a_known_effect_is_shown_with_an_interval_that_covers_it() -> None:
    rng = random.Random(19)
    control = x.summarize(arm_values(rng, 2000, 100, 20))
    treated = x.summarize(arm_values(rng, 2000, 105, 25))  # b earns 5 more per member, with more noise
    d = x.welch(treated, control)
    assert d.low is not None and d.high is not None
    assert d.low < 5 < d.high and d.low > 0 and d.significant is True
    assert d.lift == pytest.approx(d.difference / control.mean)


def test_no_effect_gives_an_interval_that_covers_zero() -> None:
    rng = random.Random(20)
    d = x.welch(x.summarize(arm_values(rng, 2000, 100, 20)), x.summarize(arm_values(rng, 2000, 100, 20)))
    assert d.low is not None and d.high is not None and d.low < 0 < d.high and d.significant is False


def test_welch_keeps_its_coverage_with_few_members_and_unequal_variances() -> None:
    # 8 members against 12, standard deviations 30 and 5: the normal 1.96 would cover about 91% of the time;
    # the t quantile at Welch's degrees of freedom keeps it near 95%.
    rng = random.Random(21)
    covered = 0
    runs = 2000
    for _ in range(runs):
        d = x.welch(x.summarize(rng.gauss(53, 30) for _ in range(8)), x.summarize(rng.gauss(50, 5)
                                                                                   for _ in range(12)))
        assert d.low is not None and d.high is not None
        covered += d.low <= 3 <= d.high
    assert 0.935 <= covered / runs <= 0.965


def test_too_few_members_or_no_variation_give_no_interval() -> None:
    assert x.welch(x.summarize([5]), x.summarize([1, 2, 3])).low is None
    same = x.welch(x.summarize([0, 0, 0]), x.summarize([0, 0]))
    assert (same.difference, same.low, same.significant, same.lift) == (0.0, None, None, None)
    assert x.summarize([]).standard_error is None


def experiment(shares: tuple[str, str]) -> Experiment:
    return Experiment.model_validate({
        "experiment_id": "referral-50", "starts": "2026-12-01T00:00:00Z", "ends": "2027-01-01T00:00:00Z",
        "arms": [{"name": "a", "share": shares[0]}, {"name": "b", "share": shares[1],
                                                      "overrides": {"referral": {"referrer_points": 50}}}]})


def test_a_skewed_split_trips_the_sample_ratio_check_and_a_fair_one_does_not() -> None:
    skewed = x.sample_ratio([5500, 4500], [Decimal("0.5"), Decimal("0.5")])
    assert (skewed.chi_square, skewed.df, skewed.flagged) == (100.0, 1, True)
    assert skewed.p_value is not None and skewed.p_value < 1e-20
    fair = x.sample_ratio([5030, 4970], [0.5, 0.5])
    assert fair.p_value == pytest.approx(math.erfc(math.sqrt(0.36 / 2))) and not fair.flagged
    # 10,000 members split by the hash every service uses: fair against the declared 50/50, flagged against 55/45.
    members = [f"m-{i:05d}" for i in range(10_000)]
    arms = [arm_of("default", experiment(("0.5", "0.5")), m).name for m in members]
    observed = [arms.count("a"), arms.count("b")]
    assert not x.sample_ratio(observed, [0.5, 0.5]).flagged
    assert x.sample_ratio(observed, [0.55, 0.45]).flagged
    # Arm b's members drop out more (a tenth of them never seen): the split no longer matches what was declared.
    seen = [a for i, a in enumerate(arms) if a == "a" or i % 10]
    assert x.sample_ratio([seen.count("a"), seen.count("b")], [0.5, 0.5]).flagged
    assert x.sample_ratio([0, 0], [0.5, 0.5]).p_value is None


def test_the_comparison_marks_what_each_arm_touches_and_compares_with_the_first_arm() -> None:
    figures = {
        "a": x.ArmFigures(100, {"points_per_member": x.Summary(100, 40.0, 100.0)},
                          {"referral_conversion": (20, 50), "redeemer_share": (30, 100)}),
        "b": x.ArmFigures(100, {"points_per_member": x.Summary(100, 48.0, 100.0)},
                          {"referral_conversion": (35, 50), "redeemer_share": (31, 100)}),
    }
    results = {r.metric.metric: r for r in x.compare([("a", []), ("b", ["referral"])], figures)}
    assert [m.metric for m in x.METRICS] == list(results)
    points = results["points_per_member"].arms
    assert points[0].versus_control is None and points[0].touched is False
    assert points[1].touched is True and points[1].versus_control is not None
    assert points[1].versus_control.difference == 8.0 and points[1].versus_control.significant is True
    conversion = results["referral_conversion"].arms[1]
    assert (conversion.n, conversion.successes, conversion.value) == (50, 35, 0.7)
    assert conversion.versus_control is not None and conversion.versus_control.low is not None
    assert conversion.versus_control.low > 0
    assert not results["redeemer_share"].arms[1].touched and not results["spend_per_member"].arms[1].touched
    # An arm nobody was seen in yet: there, with nothing to measure.
    empty = x.compare([("a", []), ("b", ["rewards"])], {"a": figures["a"]})
    assert all(r.arms[1].n == 0 and r.arms[1].value is None and r.arms[1].versus_control is None for r in empty)


def test_docs_define_every_metric_with_what_touches_it() -> None:
    doc = " ".join((REPO / "docs" / "insight.md").read_text().split())
    for metric in x.METRICS:
        sections = ", ".join(f"`{s}`" for s in sorted(metric.sections, key=["purchase", "activity", "referral",
                                                                             "rewards"].index))
        row = f"| `{metric.metric}` | {metric.kind} |"
        assert row in doc and doc.split(row, 1)[1].split("|")[1].strip() == sections, metric


def test_the_docs_example_experiment_is_a_valid_one() -> None:
    text = (REPO / "docs" / "insight.md").read_text()
    snippet = text.split("## Experiments", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    declared = [Experiment.model_validate(e) for e in yaml.safe_load(snippet)["experiments"]]
    assert [(e.experiment_id, [a.name for a in e.arms]) for e in declared] == [("referral-50", ["a", "b"])]
    assert declared[0].arm("b").overrides == {"referral": {"referrer_points": 50}}
