"""Insight's rules, pure: the health indicators of the source documents with their healthy ranges, verdicts and
advice; the liability roll-forward; the ultimate breakage estimate; the balance bands. No I/O, no clock."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal

Verdict = Literal["ok", "watch", "act"]
Unit = Literal["ratio", "points", "members", "money", "share", "count"]
CENT = Decimal("0.01")
SHARE = Decimal("0.0001")


def cents(value: Decimal) -> Decimal:
    """Money to the cent, half up (the ledger's summary rounds the liability the same way)."""
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def ratio(a: Decimal | int, b: Decimal | int) -> Decimal | None:
    """a ÷ b to four places (half up); None when b is zero: a ratio of nothing is unknown, not 0 or infinite."""
    if not b:
        return None
    return (Decimal(a) / Decimal(b)).quantize(SHARE, rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class Health:
    """A healthy range from the source documents, the band around it that deserves a look, and what to do outside
    it. `ok` and `watch` are closed intervals (None: unbounded); outside both the verdict is `act`."""

    text: str
    ok: tuple[Decimal | None, Decimal | None]
    watch: tuple[Decimal | None, Decimal | None]
    too_high: str | None = None
    too_low: str | None = None

    def verdict(self, value: Decimal | None) -> Verdict | None:
        if value is None:
            return None
        if _inside(value, self.ok):
            return "ok"
        return "watch" if _inside(value, self.watch) else "act"

    def advice(self, value: Decimal | None) -> str | None:
        if value is None or self.verdict(value) == "ok":
            return None
        low = self.ok[0]
        return self.too_low if low is not None and value < low else self.too_high


def _inside(value: Decimal, bounds: tuple[Decimal | None, Decimal | None]) -> bool:
    low, high = bounds
    return (low is None or value >= low) and (high is None or value <= high)


D = Decimal
HEALTH: dict[str, Health] = {
    "issue_redeem_ratio": Health(
        "≤ 3:1 (watch above 2.5)", (None, D("2.5")), (None, D(3)),
        too_high="Members earn far more than they redeem: award fewer points per unit, or add cheaper rewards so "
                 "points get used (above 3:1 the rules need adjusting)."),
    "holding_vs_cheapest_reward": Health(
        "2–3× the cheapest reward", (D(2), D(3)), (D("1.5"), D(4)),
        too_high="Members hold far more than the cheapest reward costs: add rewards near the typical balance, or "
                 "remind members what their points buy.",
        too_low="Members rarely hold enough for the cheapest reward: add a cheaper reward or award more per task."),
    "task_completion": Health(
        "≥ 20% of members complete a task (watch below 25%)", (D("0.25"), None), (D("0.20"), None),
        too_low="Few members complete a task: simplify the task flow (below 20% it is too hard)."),
    "top3_reward_share": Health(
        "the top 3 rewards take ≥ 60% of redemptions", (D("0.60"), None), (D("0.45"), None),
        too_low="Redemptions are spread thin: feature the rewards members want and retire the ones they ignore."),
    "points_cost_share": Health(
        "0.3%–0.8% of revenue", (D("0.003"), D("0.008")), (D("0.002"), D("0.010")),
        too_high="The points cost too much of revenue: lower the earn rate or raise reward prices.",
        too_low="The points cost little and may motivate little: raise the earn rate or add attractive rewards."),
    "points_gmv_share": Health(
        "5%–15% of revenue touched by points", (D("0.05"), D("0.15")), (D("0.03"), D("0.20")),
        too_high="Much of revenue is paid with points or coupons: check the points' value and the payment share.",
        too_low="Points touch little of revenue: make points as payment and coupons easier to use at the till."),
}


@dataclass(frozen=True)
class Kpi:
    kpi: str
    label: str
    value: Decimal | None
    unit: Unit
    verdict: Verdict | None = None
    healthy: str | None = None
    advice: str | None = None


def judged(kpi: str, label: str, value: Decimal | None, unit: Unit) -> Kpi:
    health = HEALTH[kpi]
    return Kpi(kpi, label, value, unit, health.verdict(value), health.text, health.advice(value))


@dataclass(frozen=True)
class Period:
    """The sums of one programme over a period, as the projection holds them (see repository/queries)."""

    facts: Mapping[tuple[str, str], tuple[int, Decimal, int]]  # (metric, dim) -> (points, money, n)
    active_members: int
    members: int
    task_members: int
    holders: int  # members with a positive balance now
    held: int  # the points they hold
    cheapest_reward: int | None
    point_value: Decimal | None
    related_revenue: Decimal
    referee_spend_90d: Decimal
    pending: int  # issued by the period's end, maturing after it
    participants: int = 0  # members who did anything counted: earned, redeemed, bought, a task, a check-in

    def points(self, metric: str, dim: str | None = None) -> int:
        return sum(v[0] for (m, d), v in self.facts.items() if m == metric and (dim is None or d == dim))

    def money(self, metric: str, dim: str | None = None) -> Decimal:
        return sum((v[1] for (m, d), v in self.facts.items() if m == metric and (dim is None or d == dim)), D(0))

    def count(self, metric: str, dim: str | None = None) -> int:
        return sum(v[2] for (m, d), v in self.facts.items() if m == metric and (dim is None or d == dim))

    def by_dim(self, metric: str) -> dict[str, tuple[int, Decimal, int]]:
        found: dict[str, tuple[int, Decimal, int]] = {}
        for (m, d), (p, money, n) in self.facts.items():
            if m == metric:
                a, b, c = found.get(d, (0, D(0), 0))
                found[d] = (a + p, b + money, c + n)
        return found


@dataclass(frozen=True)
class Movement:
    """Points moved in a period, as the ledger's summary counts them (services/ledger/totals.py)."""

    issued: int
    redeemed: int
    expired: int
    adjusted: int
    transferred_in: int
    transferred_out: int

    @property
    def net(self) -> int:
        return self.issued - self.redeemed - self.expired + self.adjusted + self.transferred_in - self.transferred_out


def movement(period: Period) -> Movement:
    """Earn credits less their reversals and cancels; redemptions less what reversals gave back; expiries; manual
    credits less debits. A reversal that takes points out corrects a credit, one that brings points back a debit."""
    p = period.points
    return Movement(issued=p("in:earn") - p("out:reversal") - p("out:cancel"),
                    redeemed=p("out:redeem") - p("in:reversal"), expired=p("out:expire"),
                    adjusted=p("in:adjust_credit") - p("out:adjust_debit"),
                    transferred_in=p("in:transfer_in"), transferred_out=p("out:transfer_out"))


def kpis(period: Period) -> list[Kpi]:
    m = movement(period)
    redeemed_rewards = period.by_dim("redeemed_reward")
    cancelled = period.by_dim("cancelled_reward")
    net_by_reward = {r: v[0] - cancelled.get(r, (0, D(0), 0))[0] for r, v in redeemed_rewards.items()}
    reward_points = sum(max(v, 0) for v in net_by_reward.values())
    top3 = sum(sorted((max(v, 0) for v in net_by_reward.values()), reverse=True)[:3])
    revenue = period.money("purchase") - period.money("refund")
    avg_held = ratio(period.held, period.holders)
    rewarded = period.count("referral_rewarded")
    rejected = period.count("referral_rejected")
    redemption_rate = ratio(m.redeemed, m.issued)
    cost = (D(m.issued) * period.point_value * redemption_rate
            if period.point_value is not None and redemption_rate is not None else None)
    found = [
        judged("issue_redeem_ratio", "Points issued per point redeemed", ratio(m.issued, m.redeemed), "ratio"),
        judged("holding_vs_cheapest_reward", "Average points held ÷ cheapest reward",
               ratio(avg_held, period.cheapest_reward) if avg_held is not None and period.cheapest_reward else None,
               "ratio"),
        judged("task_completion", "Members who completed a task ÷ members",
               ratio(period.task_members, period.members) if period.count("task") else None, "share"),
        judged("top3_reward_share", "Points on the top 3 rewards ÷ points on all rewards",
               ratio(top3, reward_points), "share"),
        judged("points_cost_share", "Points cost (issued × redemption rate × point value) ÷ revenue",
               ratio(cost, revenue) if cost is not None and revenue > 0 else None, "share"),
        judged("points_gmv_share", "Revenue of orders paid in part with points or a coupon ÷ revenue",
               ratio(period.related_revenue, revenue) if revenue > 0 else None, "share"),
        Kpi("issued", "Points issued (earn less reversals)", D(m.issued), "points"),
        Kpi("redeemed", "Points redeemed (less cancellations)", D(m.redeemed), "points"),
        Kpi("expired", "Points expired", D(m.expired), "points"),
        Kpi("adjusted", "Points adjusted by hand (credits less debits)", D(m.adjusted), "points"),
        Kpi("pending", "Points not yet available at the period's end (return window open)", D(period.pending),
            "points"),
        Kpi("active_members", "Members who earned or redeemed", D(period.active_members), "members"),
        Kpi("breakage", "Expired ÷ issued", ratio(m.expired, m.issued), "share"),
        Kpi("redemption_rate", "Redeemed ÷ issued", redemption_rate, "share"),
        Kpi("revenue", "Purchases less refunds", revenue, "money"),
        Kpi("referral_conversion", "Referrals rewarded ÷ referrals decided (rewarded + rejected)",
            ratio(rewarded, rewarded + rejected), "share"),
        Kpi("referee_spend_90d", "Spend of referees rewarded in the period, in their 90 days after qualifying",
            period.referee_spend_90d, "money"),
        Kpi("tasks_per_member", "Tasks completed ÷ members", ratio(period.count("task"), period.members), "ratio"),
        Kpi("participation", "Members who took part (earned, redeemed, bought, did a task or checked in) ÷ members",
            ratio(period.participants, period.members), "share"),
        Kpi("upgrades", "Tier upgrades announced", D(period.count("tier_change", "upgrade")), "count"),
        Kpi("downgrades", "Tier downgrades announced", D(period.count("tier_change", "downgrade")), "count"),
    ]
    return found


# --- the liability roll-forward -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RollForward:
    month: date
    opening: int
    issued: int
    redeemed: int
    expired: int
    adjusted: int
    transferred: int  # in less out: zero across a programme
    closing: int


def roll_forward(months: list[tuple[date, Movement]]) -> list[RollForward]:
    """opening + issued − redeemed − expired ± adjusted (± transfers, which net to zero) = closing, month by month,
    from the first month with an entry; every month between is listed, quiet ones too."""
    rows: list[RollForward] = []
    opening = 0
    for month, m in months:
        closing = opening + m.net
        rows.append(RollForward(month, opening, m.issued, m.redeemed, m.expired, m.adjusted,
                                m.transferred_in - m.transferred_out, closing))
        opening = closing
    return rows


def months_between(first: date, last: date) -> list[date]:
    months, month = [], first.replace(day=1)
    while month <= last:
        months.append(month)
        month = (month + timedelta(days=32)).replace(day=1)
    return months


# --- cohorts and breakage -------------------------------------------------------------------------------------


@dataclass
class Cohort:
    month: date
    issued: int = 0
    credited: int = 0
    by_age: dict[int, dict[str, int]] = field(default_factory=dict)  # age in months -> outcome -> points

    def curve(self, ages: int) -> list[dict[str, int]]:
        """Cumulative redeemed, expired, other and outstanding after 0, 1, … `ages` months."""
        redeemed = expired = other = 0
        rows = []
        for age in range(ages + 1):
            moved = self.by_age.get(age, {})
            redeemed += moved.get("redeemed", 0)
            expired += moved.get("expired", 0)
            # A debt charged to the cohort (taken beyond what it held) is paid back by later credits ("credited"
            # after month 0), which net it off.
            other += sum(v for k, v in moved.items() if k not in ("redeemed", "expired", "issued", "credited"))
            other -= moved.get("credited", 0)
            rows.append({"age": age, "redeemed": redeemed, "expired": expired, "other": other,
                         "outstanding": self.issued + self.credited - redeemed - expired - other})
        return rows


def age_of(cohort: date, month: date) -> int:
    return (month.year - cohort.year) * 12 + month.month - cohort.month


def ultimate_breakage(cohorts: list[Cohort]) -> Decimal | None:
    """The share of issued points expected to expire in the end. What each cohort has expired is known; of what is
    still outstanding, the share expected to expire is the programme's own split so far of settled points between
    expiry and redemption (expired ÷ (expired + redeemed)) across all cohorts. None before anything was issued or
    anything settled."""
    issued = sum(c.issued + c.credited for c in cohorts)
    if not issued:
        return None
    totals = [c.curve(max(c.by_age, default=0))[-1] for c in cohorts]
    expired = sum(t["expired"] for t in totals)
    redeemed = sum(t["redeemed"] for t in totals)
    outstanding = sum(max(t["outstanding"], 0) for t in totals)
    if expired + redeemed == 0:
        return None
    expected = D(expired) + D(outstanding) * D(expired) / D(expired + redeemed)
    return (expected / D(issued)).quantize(SHARE, rounding=ROUND_HALF_UP)


BREAKAGE_METHOD = ("expired so far plus the outstanding points times the programme's split of settled points "
                   "(expired ÷ (expired + redeemed)), over all points issued")


# --- balance bands ----------------------------------------------------------------------------------------------

BANDS = ("below", "1-2x", "2-3x", "above")


def band_bounds(cheapest: int) -> list[tuple[str, int, int | None]]:
    """Bands of balance from the cheapest reward: below it, 1–2×, 2–3×, above 3× ([low, high) in points)."""
    return [("below", 1, cheapest), ("1-2x", cheapest, 2 * cheapest), ("2-3x", 2 * cheapest, 3 * cheapest),
            ("above", 3 * cheapest, None)]
