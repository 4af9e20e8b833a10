"""An experiment's arms compared, each against the first arm (the control): means with Welch's interval,
proportions with Newcombe's, and a sample-ratio-mismatch check. Pure: no I/O, no clock, standard library only
(the t and chi-square distributions are worked out here from the incomplete beta and gamma functions)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

LEVEL = 0.95  # every interval is a 95% one
SRM_ALPHA = 0.001  # a split this unlikely under the declared shares is flagged
METHOD = ("means: Welch's t interval for the difference (Welch–Satterthwaite degrees of freedom, the t quantile "
          "worked out exactly); proportions: Newcombe's hybrid Wilson score interval for the difference; sample "
          "ratio: Pearson's chi-square of the members per arm against the declared shares, flagged when p < 0.001")
_EPS = 1e-15
_TINY = 1e-300


# --- distributions -----------------------------------------------------------------------------------------------


def _gamma_series(a: float, x: float) -> float:
    """The regularized lower incomplete gamma P(a, x) by its series (converges fast for x < a + 1)."""
    term = total = 1.0 / a
    n = a
    for _ in range(10_000):
        n += 1
        term *= x / n
        total += term
        if abs(term) < abs(total) * _EPS:
            break
    return total * math.exp(-x + a * math.log(x) - math.lgamma(a))


def _gamma_fraction(a: float, x: float) -> float:
    """The regularized upper incomplete gamma Q(a, x) by Lentz's continued fraction (for x ≥ a + 1)."""
    b = x + 1.0 - a
    c = 1.0 / _TINY
    d = 1.0 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = _TINY if abs(d) < _TINY else d
        c = b + an / c
        c = _TINY if abs(c) < _TINY else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return math.exp(-x + a * math.log(x) - math.lgamma(a)) * h


def upper_gamma(a: float, x: float) -> float:
    """The regularized upper incomplete gamma function Q(a, x) = Γ(a, x) / Γ(a)."""
    if a <= 0:
        raise ValueError("a must be positive")
    if x <= 0:
        return 1.0
    return 1.0 - _gamma_series(a, x) if x < a + 1 else _gamma_fraction(a, x)


def chi2_sf(x: float, df: int) -> float:
    """P(X ≥ x) for X chi-square with `df` degrees of freedom."""
    return upper_gamma(df / 2, x / 2)


def _beta_fraction(a: float, b: float, x: float) -> float:
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (_TINY if abs(d) < _TINY else d)
    h = d
    for m in range(1, 10_000):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (_TINY if abs(d) < _TINY else d)
            c = 1.0 + numerator / c
            c = _TINY if abs(c) < _TINY else c
            h *= d * c
        if abs(d * c - 1.0) < _EPS:
            break
    return h


def incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T ≤ t) for Student's t with `df` (not necessarily whole) degrees of freedom."""
    tail = 0.5 * incomplete_beta(df / 2, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def normal_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2))


def _invert(cdf: Callable[[float], float], p: float) -> float:
    """The x > 0 with cdf(x) = p (p > 0.5), by bisection: slow next to a rational approximation, exact to 1e-12."""
    low, high = 0.0, 1.0
    while cdf(high) < p:
        high *= 2
    for _ in range(200):
        mid = (low + high) / 2
        if cdf(mid) < p:
            low = mid
        else:
            high = mid
        if high - low < 1e-12:
            break
    return (low + high) / 2


def t_quantile(p: float, df: float) -> float:
    """The t with P(T ≤ t) = p, for p in (0.5, 1)."""
    return _invert(lambda t: t_cdf(t, df), p)


def normal_quantile(p: float) -> float:
    return _invert(normal_cdf, p)


# The normal quantile of 0.975 (normal_quantile(0.975), held to it by the unit tests).
Z = 1.959963984540054


# --- the comparison ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """A metric over an arm's members: how many, their mean and the sample variance (n − 1)."""

    n: int
    mean: float
    variance: float

    @property
    def standard_error(self) -> float | None:
        return math.sqrt(self.variance / self.n) if self.n >= 2 else None


def summarize(values: Iterable[float | int | Decimal]) -> Summary:
    found = [float(v) for v in values]
    n = len(found)
    if n == 0:
        return Summary(0, 0.0, 0.0)
    mean = math.fsum(found) / n
    variance = math.fsum((v - mean) ** 2 for v in found) / (n - 1) if n > 1 else 0.0
    return Summary(n, mean, variance)


@dataclass(frozen=True)
class Difference:
    """An arm's figure less the control's, with its 95% interval (None when the data cannot give one)."""

    difference: float
    low: float | None
    high: float | None
    lift: float | None  # the difference ÷ the control's figure

    @property
    def significant(self) -> bool | None:
        """The interval excludes 0; None without an interval."""
        if self.low is None or self.high is None:
            return None
        return self.low > 0 or self.high < 0


def _lift(difference: float, control: float) -> float | None:
    return difference / control if control else None


def welch(arm: Summary, control: Summary) -> Difference:
    """The arm's mean less the control's with Welch's interval: no equal-variance assumption, the t quantile at
    the Welch–Satterthwaite degrees of freedom. No interval with fewer than two members in either arm, or when
    neither arm varies at all."""
    diff = arm.mean - control.mean
    lift = _lift(diff, control.mean)
    if arm.n < 2 or control.n < 2:
        return Difference(diff, None, None, lift)
    va, vc = arm.variance / arm.n, control.variance / control.n
    se = math.sqrt(va + vc)
    if se == 0:
        return Difference(diff, None, None, lift)
    df = (va + vc) ** 2 / (va ** 2 / (arm.n - 1) + vc ** 2 / (control.n - 1))
    half = t_quantile(1 - (1 - LEVEL) / 2, df) * se
    return Difference(diff, diff - half, diff + half, lift)


def wilson(successes: int, trials: int) -> tuple[float, float]:
    """Wilson's 95% score interval for one proportion."""
    p = successes / trials
    z2 = Z * Z
    centre = (p + z2 / (2 * trials)) / (1 + z2 / trials)
    half = Z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / (1 + z2 / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe(successes: int, trials: int, control_successes: int, control_trials: int) -> Difference:
    """The arm's proportion less the control's with Newcombe's hybrid score interval (method 10): it stays inside
    [−1, 1] and keeps its coverage with few successes, where the plain normal (Wald) interval does not."""
    if trials == 0 or control_trials == 0:
        return Difference(0.0, None, None, None)
    p1, p0 = successes / trials, control_successes / control_trials
    l1, u1 = wilson(successes, trials)
    l0, u0 = wilson(control_successes, control_trials)
    diff = p1 - p0
    low = diff - math.sqrt((p1 - l1) ** 2 + (u0 - p0) ** 2)
    high = diff + math.sqrt((u1 - p1) ** 2 + (p0 - l0) ** 2)
    return Difference(diff, low, high, _lift(diff, p0))


@dataclass(frozen=True)
class SampleRatio:
    """Members per arm against the declared shares: a split this unlikely means the arms were not exposed alike
    (an arm's members drop out, or are counted, differently), and no metric of the experiment is to be trusted."""

    observed: tuple[int, ...]
    expected: tuple[float, ...]
    chi_square: float
    df: int
    p_value: float | None
    flagged: bool


def sample_ratio(observed: Sequence[int], shares: Sequence[float | Decimal]) -> SampleRatio:
    total = sum(observed)
    weights = [float(s) for s in shares]
    scale = math.fsum(weights)
    expected = tuple(total * w / scale for w in weights)
    df = len(observed) - 1
    if total == 0:
        return SampleRatio(tuple(observed), expected, 0.0, df, None, False)
    chi = math.fsum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True))
    p = chi2_sf(chi, df)
    return SampleRatio(tuple(observed), expected, chi, df, p, p < SRM_ALPHA)


# --- the metrics an experiment is judged on ----------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    metric: str
    label: str
    kind: Literal["mean", "proportion"]
    unit: Literal["points", "money", "count", "share"]
    sections: frozenset[str]  # the programme sections whose overrides can move it


METRICS = (
    Metric("points_per_member", "Points earned per member (earn credits, referral rewards included)", "mean",
           "points", frozenset({"purchase", "activity", "referral"})),
    Metric("spend_per_member", "Spend per member (purchases less refunds)", "mean", "money",
           frozenset({"purchase", "activity"})),
    Metric("orders_per_member", "Purchases per member", "mean", "count", frozenset({"purchase", "activity"})),
    Metric("referral_points_per_member", "Referral reward points per member", "mean", "points",
           frozenset({"referral"})),
    Metric("referral_conversion", "Referrals rewarded ÷ referrals judged (the member as referrer)", "proportion",
           "share", frozenset({"referral"})),
    Metric("redeemer_share", "Members who redeemed ÷ members", "proportion", "share", frozenset({"rewards"})),
    Metric("points_redeemed_per_member", "Points redeemed per member (less cancellations)", "mean", "points",
           frozenset({"rewards"})),
)


@dataclass(frozen=True)
class ArmFigures:
    """What the projection holds of one arm: its members, each mean metric's summary over them, and each
    proportion's (successes, trials)."""

    members: int
    means: dict[str, Summary]
    counts: dict[str, tuple[int, int]]


@dataclass(frozen=True)
class ArmResult:
    arm: str
    n: int  # members, or for a proportion its trials
    value: float | None  # the mean or the proportion; None with nothing to measure
    standard_error: float | None
    successes: int | None  # proportions only
    touched: bool  # the arm's overrides change a section that moves this metric
    versus_control: Difference | None  # None for the control itself


@dataclass(frozen=True)
class MetricResult:
    metric: Metric
    arms: list[ArmResult]


def touched(overrides: Iterable[str], metric: Metric) -> bool:
    return bool(metric.sections & set(overrides))


def compare(arms: Sequence[tuple[str, Iterable[str]]], figures: dict[str, ArmFigures]) -> list[MetricResult]:
    """Every metric of every arm (name, the sections its overrides change), each arm after the first against the
    first. An arm with no members yet is there with n = 0 and no figures."""
    empty = ArmFigures(0, {}, {})
    results = []
    for metric in METRICS:
        rows = []
        control = figures.get(arms[0][0], empty) if arms else empty
        for i, (name, sections) in enumerate(arms):
            mine = figures.get(name, empty)
            is_touched = touched(sections, metric)
            if metric.kind == "mean":
                summary = mine.means.get(metric.metric, Summary(mine.members, 0.0, 0.0))
                base = control.means.get(metric.metric, Summary(control.members, 0.0, 0.0))
                versus = welch(summary, base) if i and summary.n and base.n else None
                rows.append(ArmResult(name, summary.n, summary.mean if summary.n else None, summary.standard_error,
                                      None, is_touched, versus))
            else:
                successes, trials = mine.counts.get(metric.metric, (0, 0))
                c_successes, c_trials = control.counts.get(metric.metric, (0, 0))
                share = successes / trials if trials else None
                se = math.sqrt(share * (1 - share) / trials) if share is not None else None
                versus = newcombe(successes, trials, c_successes, c_trials) if i and trials and c_trials else None
                rows.append(ArmResult(name, trials, share, se, successes, is_touched, versus))
        results.append(MetricResult(metric, rows))
    return results
