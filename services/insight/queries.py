"""Insight's read side: what a period, a roll-forward, the cohorts, a leaderboard and the segments are made of,
each in a few aggregate queries over the projection (never another service's tables)."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import asyncpg

from services.insight.domain import Cohort, Movement, Period, age_of, band_bounds, months_between, movement
from services.insight.experiments import ArmFigures, Summary


async def facts(db: asyncpg.Connection, program_id: str, start: date, end: date
                ) -> dict[tuple[str, str], tuple[int, Decimal, int]]:
    rows = await db.fetch("SELECT metric, dim, sum(points) AS points, sum(money) AS money, sum(n) AS n "
                          "FROM day_facts WHERE program_id = $1 AND day BETWEEN $2 AND $3 AND metric <> 'pending' "
                          "GROUP BY metric, dim", program_id, start, end)
    return {(r["metric"], r["dim"]): (int(r["points"]), r["money"], int(r["n"])) for r in rows}


async def period(db: asyncpg.Connection, program_id: str, start: date, end: date, cheapest_reward: int | None,
                 point_value: Decimal | None) -> Period:
    sums = await facts(db, program_id, start, end)
    # One hash aggregate by member, then counts: three count(DISTINCT)s sorted the period's member-days three times
    # (a year of a 1,000,000-entry programme: 2 s of the KPIs' answer).
    activity = await db.fetchrow(
        "SELECT count(*) FILTER (WHERE active) AS active, count(*) FILTER (WHERE tasked) AS task_members, "
        "count(*) AS took_part FROM (SELECT member_id, bool_or(earned > 0 OR redeemed > 0) AS active, "
        "bool_or(tasks > 0) AS tasked FROM member_days WHERE program_id = $1 AND day BETWEEN $2 AND $3 "
        "GROUP BY member_id) AS m", program_id, start, end)
    held = await db.fetchrow("SELECT count(*) AS members, count(*) FILTER (WHERE balance > 0) AS holders, "
                             "coalesce(sum(balance) FILTER (WHERE balance > 0), 0) AS held "
                             "FROM members WHERE program_id = $1", program_id)
    related = await db.fetchval("SELECT coalesce(sum(total - refunded), 0) FROM orders WHERE program_id = $1 "
                                "AND related AND day BETWEEN $2 AND $3", program_id, start, end)
    referee_spend = await db.fetchval(
        "SELECT coalesce(sum(d.spend), 0) FROM referees r JOIN member_days d ON d.program_id = r.program_id "
        "AND d.member_id = r.member_id AND d.day > r.qualified_on AND d.day <= r.qualified_on + 90 "
        "WHERE r.program_id = $1 AND r.qualified_on BETWEEN $2 AND $3", program_id, start, end)
    pending = await db.fetchval("SELECT coalesce(sum(points), 0) FROM day_facts WHERE program_id = $1 "
                                "AND metric = 'pending' AND day <= $2 AND dim > $3", program_id, end,
                                end.isoformat())
    return Period(sums, int(activity["active"]), int(held["members"]), int(activity["task_members"]),
                  int(held["holders"]), int(held["held"]), cheapest_reward, point_value, related, referee_spend,
                  int(pending), int(activity["took_part"]))


async def series(db: asyncpg.Connection, program_id: str, start: date, end: date, granularity: str
                 ) -> list[tuple[date, Movement, int, Decimal]]:
    """Per day, week (from Monday) or month: the points moved, the members active and the revenue."""
    trunc = {"day": "day", "week": "week", "month": "month"}[granularity]
    rows = await db.fetch(
        f"SELECT date_trunc('{trunc}', day)::date AS period, metric, sum(points) AS points, sum(money) AS money "
        "FROM day_facts WHERE program_id = $1 AND day BETWEEN $2 AND $3 AND (metric LIKE 'in:%' OR metric LIKE "
        "'out:%' OR metric IN ('purchase', 'refund')) GROUP BY 1, 2", program_id, start, end)
    # A member has one row a day: by day, the active members are the rows; by week or month, a member once each.
    active = await db.fetch(
        f"SELECT date_trunc('{trunc}', day)::date AS period, count(*) AS n FROM member_days "
        "WHERE program_id = $1 AND day BETWEEN $2 AND $3 AND (earned > 0 OR redeemed > 0) GROUP BY 1"
        if trunc == "day" else
        f"SELECT period, count(*) AS n FROM (SELECT date_trunc('{trunc}', day)::date AS period, member_id "
        "FROM member_days WHERE program_id = $1 AND day BETWEEN $2 AND $3 AND (earned > 0 OR redeemed > 0) "
        "GROUP BY 1, 2) AS a GROUP BY 1", program_id, start, end)
    by: dict[date, dict[tuple[str, str], tuple[int, Decimal, int]]] = {}
    for r in rows:
        by.setdefault(r["period"], {})[(r["metric"], "")] = (int(r["points"]), r["money"], 0)
    actives = {r["period"]: int(r["n"]) for r in active}
    found = []
    for when in sorted(set(by) | set(actives)):
        sums = by.get(when, {})
        snapshot = _sums(sums)
        revenue = snapshot.money("purchase") - snapshot.money("refund")
        found.append((when, movement(snapshot), actives.get(when, 0), revenue))
    return found


async def monthly(db: asyncpg.Connection, program_id: str) -> list[tuple[date, Movement]]:
    rows = await db.fetch("SELECT date_trunc('month', day)::date AS month, metric, sum(points) AS points "
                          "FROM day_facts WHERE program_id = $1 AND (metric LIKE 'in:%' OR metric LIKE 'out:%') "
                          "GROUP BY 1, 2", program_id)
    by: dict[date, dict[tuple[str, str], tuple[int, Decimal, int]]] = {}
    for r in rows:
        by.setdefault(r["month"], {})[(r["metric"], "")] = (int(r["points"]), Decimal(0), 0)
    if not by:
        return []
    return [(month, movement(_sums(by.get(month, {})))) for month in months_between(min(by), max(by))]


async def cohorts(db: asyncpg.Connection, program_id: str) -> list[Cohort]:
    rows = await db.fetch("SELECT cohort, month, outcome, points FROM cohort_facts WHERE program_id = $1 "
                          "ORDER BY cohort, month", program_id)
    found: dict[date, Cohort] = {}
    for r in rows:
        cohort = found.setdefault(r["cohort"], Cohort(r["cohort"]))
        if r["outcome"] == "issued":
            cohort.issued += r["points"]
        elif r["outcome"] == "credited" and r["month"] == r["cohort"]:
            cohort.credited += r["points"]
        else:
            age = age_of(r["cohort"], r["month"])
            outcome = r["outcome"]
            cohort.by_age.setdefault(age, {})[outcome] = cohort.by_age.get(age, {}).get(outcome, 0) + r["points"]
    return list(found.values())


async def leaderboard(db: asyncpg.Connection, program_id: str, start: date, end: date, limit: int
                      ) -> list[tuple[str, int]]:
    rows = await db.fetch(
        "SELECT d.member_id, sum(d.earned) AS points FROM member_days d WHERE d.program_id = $1 "
        "AND d.day BETWEEN $2 AND $3 AND d.earned > 0 AND NOT EXISTS (SELECT 1 FROM members m WHERE "
        "m.program_id = d.program_id AND m.member_id = d.member_id AND m.opted_out) "
        "GROUP BY d.member_id ORDER BY points DESC, d.member_id LIMIT $4", program_id, start, end, limit)
    return [(r["member_id"], int(r["points"])) for r in rows]


async def bands(db: asyncpg.Connection, program_id: str, cheapest: int) -> list[tuple[str, int, int | None, int]]:
    bounds = band_bounds(cheapest)
    counts = await db.fetchrow(
        "SELECT " + ", ".join(
            f"count(*) FILTER (WHERE balance >= {low}" + (f" AND balance < {high})" if high else ")") + f" AS b{i}"
            for i, (_, low, high) in enumerate(bounds)) + " FROM members WHERE program_id = $1", program_id)
    return [(name, low, high, int(counts[f"b{i}"])) for i, (name, low, high) in enumerate(bounds)]


async def band_members(db: asyncpg.Connection, program_id: str, low: int, high: int | None, after: str,
                       limit: int) -> list[tuple[str, int]]:
    rows = await db.fetch("SELECT member_id, balance FROM members WHERE program_id = $1 AND balance >= $2 "
                          "AND ($3::bigint IS NULL OR balance < $3) AND member_id > $4 ORDER BY member_id LIMIT $5",
                          program_id, low, high, after, limit)
    return [(r["member_id"], int(r["balance"])) for r in rows]


async def opt_out(db: asyncpg.Connection, program_id: str, member_id: str, opted_out: bool) -> None:
    await db.execute("INSERT INTO members (program_id, member_id, opted_out) VALUES ($1, $2, $3) "
                     "ON CONFLICT (program_id, member_id) DO UPDATE SET opted_out = excluded.opted_out",
                     program_id, member_id, opted_out)


async def tiers(db: asyncpg.Connection, program_id: str, start: date, end: date
                ) -> list[tuple[str, int, Decimal]]:
    """Members per tier now, and their spend in the period."""
    rows = await db.fetch(
        "SELECT coalesce(m.tier, '') AS tier, count(*) AS members, coalesce(sum(s.spend), 0) AS spend "
        "FROM members m LEFT JOIN (SELECT member_id, sum(spend) AS spend FROM member_days WHERE program_id = $1 "
        "AND day BETWEEN $2 AND $3 AND spend <> 0 GROUP BY member_id) s ON s.member_id = m.member_id "
        "WHERE m.program_id = $1 GROUP BY 1 ORDER BY 1", program_id, start, end)
    return [(r["tier"], int(r["members"]), r["spend"]) for r in rows]


async def rebates(db: asyncpg.Connection, program_id: str, start: date, end: date
                  ) -> list[tuple[str, int, Decimal]]:
    """Per rule: the points it paid in the period and the revenue (less refunds) of the baskets it paid on."""
    rows = await db.fetch(
        "SELECT b.rule_id, sum(b.points) AS points, coalesce(sum(o.total - o.refunded), 0) AS revenue "
        "FROM rule_baskets b LEFT JOIN orders o ON o.program_id = b.program_id AND o.event_id = b.source_event_id "
        "WHERE b.program_id = $1 AND b.day BETWEEN $2 AND $3 GROUP BY b.rule_id ORDER BY points DESC",
        program_id, start, end)
    return [(r["rule_id"], int(r["points"]), r["revenue"]) for r in rows]


# Each mean metric of services/insight/experiments.METRICS and the column of experiment_members it is the mean of.
MEAN_COLUMNS = {"points_per_member": "earned", "spend_per_member": "spend", "orders_per_member": "orders",
                "referral_points_per_member": "referral_points", "points_redeemed_per_member": "redeemed"}


async def experiment(db: asyncpg.Connection, program_id: str, experiment_id: str) -> dict[str, ArmFigures]:
    """Per arm: its members, each mean metric's mean and sample variance over them (worked out in numeric, exact),
    the members who redeemed and the referrals they judged and had rewarded as referrers."""
    rows = await db.fetch(
        "SELECT arm, count(*) AS members, " + ", ".join(
            f"avg({c}) AS {c}_mean, coalesce(var_samp({c}), 0) AS {c}_var" for c in MEAN_COLUMNS.values())
        + ", count(*) FILTER (WHERE redemptions > 0) AS redeemers, sum(referrals_judged) AS judged, "
        "sum(referrals_rewarded) AS rewarded FROM experiment_members WHERE program_id = $1 AND experiment_id = $2 "
        "GROUP BY arm", program_id, experiment_id)
    found = {}
    for r in rows:
        n = int(r["members"])
        judged = int(r["judged"])
        found[r["arm"]] = ArmFigures(
            n, {m: Summary(n, float(r[f"{c}_mean"]), float(r[f"{c}_var"])) for m, c in MEAN_COLUMNS.items()},
            # A referral judged before the window and decided again in it counts as rewarded, not judged: never
            # more rewarded than judged.
            {"redeemer_share": (int(r["redeemers"]), n),
             "referral_conversion": (min(max(int(r["rewarded"]), 0), judged), judged)})
    return found


def _sums(sums: dict[tuple[str, str], tuple[int, Decimal, int]]) -> Period:
    """A period of sums alone, for what needs only the points moved."""
    return Period(sums, 0, 0, 0, 0, 0, None, None, Decimal(0), Decimal(0), 0)


def days_back(end: date, days: int) -> date:
    return end - timedelta(days=days - 1)
