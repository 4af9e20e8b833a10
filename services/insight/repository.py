"""Insight's projection tables: a few reads per batch, one multi-row statement per table to store it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING

import asyncpg

from services.insight.cohorts import Buckets
from shared.db import advisory_key
from shared.keys import insight_projection_lock

if TYPE_CHECKING:
    from services.insight.handlers import Changes

Member = tuple[str, str]  # (program_id, member_id)
Exposed = tuple[str, str, str]  # (program_id, experiment_id, member_id)
Fact = tuple[str, date, str, str]  # (program_id, day, metric, dim)
MemberDay = tuple[str, date, str]  # (program_id, day, member_id)

DAY_COLUMNS = ("earned", "redeemed", "received", "spend", "purchases", "tasks", "checkins", "redeemed_soon")
TABLES = ("day_facts", "member_days", "members", "fingerprints", "orders", "rule_baskets", "referees",
          "referrals", "cohort_facts", "member_cohorts", "lot_cohorts", "watch", "experiment_members")
EXPOSURE_COLUMNS = ("earned", "referral_points", "spend", "orders", "redemptions", "redeemed", "referrals_judged",
                    "referrals_rewarded")


@dataclass(frozen=True)
class Decision:
    """A referral's outcome as last announced, and whether it was revoked since."""

    outcome: str
    reason: str
    decided_on: date
    revoked: bool


async def referrals(db: asyncpg.Connection, keys: set[tuple[str, str]]) -> dict[tuple[str, str], Decision]:
    if not keys:
        return {}
    rows = await db.fetch(
        "SELECT program_id, referral_id, outcome, reason, decided_on, revoked FROM referrals "
        "WHERE (program_id, referral_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))", *_split(keys))
    return {(r["program_id"], r["referral_id"]): Decision(r["outcome"], r["reason"], r["decided_on"], r["revoked"])
            for r in rows}


@dataclass
class Exposure:
    """What a batch adds to one member of one experiment: the arm, when the batch first saw them in the window, and
    the sums of migration 0005 (each column of EXPOSURE_COLUMNS)."""

    arm: str
    first_seen: datetime
    earned: int = 0
    referral_points: int = 0
    spend: Decimal = Decimal(0)
    orders: int = 0
    redemptions: int = 0
    redeemed: int = 0
    referrals_judged: int = 0
    referrals_rewarded: int = 0


@dataclass
class MemberState:
    balance: int = 0
    seq: int = 0
    tier: str | None = None
    enrolled_at: datetime | None = None
    last_active_at: datetime | None = None
    last_earned_at: datetime | None = None


def _split(members: Iterable[Member]) -> tuple[list[str], list[str]]:
    found = list(members)
    return [p for p, _ in found], [m for _, m in found]


async def members(db: asyncpg.Connection, keys: set[Member]) -> dict[Member, MemberState]:
    if not keys:
        return {}
    rows = await db.fetch(
        "SELECT program_id, member_id, balance, seq, tier, enrolled_at, last_active_at, last_earned_at FROM members "
        "WHERE (program_id, member_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))", *_split(keys))
    return {(r["program_id"], r["member_id"]): MemberState(r["balance"], r["seq"], r["tier"], r["enrolled_at"],
                                                           r["last_active_at"], r["last_earned_at"]) for r in rows}


async def buckets(db: asyncpg.Connection, keys: set[Member]) -> dict[Member, Buckets]:
    if not keys:
        return {}
    rows = await db.fetch(
        "SELECT program_id, member_id, cohort, open FROM member_cohorts "
        "WHERE (program_id, member_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))", *_split(keys))
    found: dict[Member, Buckets] = {}
    for r in rows:
        found.setdefault((r["program_id"], r["member_id"]), Buckets()).open[r["cohort"]] = r["open"]
    return found


async def lot_cohorts(db: asyncpg.Connection, lots: list[int]) -> dict[int, date]:
    if not lots:
        return {}
    rows = await db.fetch("SELECT lot_id, cohort FROM lot_cohorts WHERE lot_id = ANY($1::bigint[])", lots)
    return {r["lot_id"]: r["cohort"] for r in rows}


async def store(db: asyncpg.Connection, changes: Changes) -> None:
    if changes.facts:
        facts = list(changes.facts.items())
        await db.execute(
            "INSERT INTO day_facts AS f SELECT * FROM unnest($1::text[], $2::date[], $3::text[], $4::text[], "
            "$5::bigint[], $6::numeric[], $7::bigint[]) ON CONFLICT (program_id, day, metric, dim) DO UPDATE SET "
            "points = f.points + excluded.points, money = f.money + excluded.money, n = f.n + excluded.n",
            [k[0] for k, _ in facts], [k[1] for k, _ in facts], [k[2] for k, _ in facts], [k[3] for k, _ in facts],
            [v[0] for _, v in facts], [v[1] for _, v in facts], [v[2] for _, v in facts])
    if changes.days:
        days = list(changes.days.items())
        columns = [[sums.get(c, 0) for _, sums in days] for c in DAY_COLUMNS]
        await db.execute(
            "INSERT INTO member_days AS d (program_id, day, member_id, earned, redeemed, received, spend, purchases, "
            "tasks, checkins, redeemed_soon) SELECT * FROM unnest($1::text[], $2::date[], $3::text[], $4::bigint[], "
            "$5::bigint[], $6::bigint[], $7::numeric[], $8::int[], $9::int[], $10::int[], $11::int[]) "
            "ON CONFLICT (program_id, day, member_id) DO UPDATE SET earned = d.earned + excluded.earned, "
            "redeemed = d.redeemed + excluded.redeemed, received = d.received + excluded.received, "
            "spend = d.spend + excluded.spend, purchases = d.purchases + excluded.purchases, "
            "tasks = d.tasks + excluded.tasks, checkins = d.checkins + excluded.checkins, "
            "redeemed_soon = d.redeemed_soon + excluded.redeemed_soon",
            [k[0] for k, _ in days], [k[1] for k, _ in days], [k[2] for k, _ in days], *columns)
    if changes.touched:
        keys = sorted(changes.touched)
        states = [changes.members[k] for k in keys]
        await db.execute(
            "INSERT INTO members AS m (program_id, member_id, balance, seq, tier, enrolled_at, last_active_at, "
            "last_earned_at) SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::text[], "
            "$6::timestamptz[], $7::timestamptz[], $8::timestamptz[]) ON CONFLICT (program_id, member_id) DO UPDATE "
            "SET balance = excluded.balance, seq = excluded.seq, tier = excluded.tier, "
            "enrolled_at = excluded.enrolled_at, last_active_at = excluded.last_active_at, "
            "last_earned_at = excluded.last_earned_at",
            *_split(keys), [s.balance for s in states], [s.seq for s in states], [s.tier for s in states],
            [s.enrolled_at for s in states], [s.last_active_at for s in states], [s.last_earned_at for s in states])
    if changes.cohort_facts:
        rows = list(changes.cohort_facts.items())
        await db.execute(
            "INSERT INTO cohort_facts AS c SELECT * FROM unnest($1::text[], $2::date[], $3::date[], $4::text[], "
            "$5::bigint[]) ON CONFLICT (program_id, cohort, month, outcome) DO UPDATE SET points = c.points + "
            "excluded.points", [k[0] for k, _ in rows], [k[1] for k, _ in rows], [k[2] for k, _ in rows],
            [k[3] for k, _ in rows], [v for _, v in rows])
    # Only the (member, month) rows a batch moved: a member keeps a row per open issue month, so rewriting all of
    # them for each debit or credit cost about a year's worth of rows per member and batch.
    moved = [(k, month, b.open.get(month)) for k, b in changes.buckets.items() for month in b.moved]
    gone = [(k, month) for k, month, v in moved if v is None]
    kept = [(k, month, v) for k, month, v in moved if v is not None]
    if gone:
        await db.execute("DELETE FROM member_cohorts c USING unnest($1::text[], $2::text[], $3::date[]) "
                         "AS g(p, m, cohort) WHERE c.program_id = g.p AND c.member_id = g.m AND c.cohort = g.cohort",
                         [k[0] for k, _ in gone], [k[1] for k, _ in gone], [m for _, m in gone])
    if kept:
        await db.execute("INSERT INTO member_cohorts SELECT * FROM unnest($1::text[], $2::text[], $3::date[], "
                         "$4::bigint[]) ON CONFLICT (program_id, member_id, cohort) DO UPDATE SET open = excluded.open",
                         [k[0] for k, _, _ in kept], [k[1] for k, _, _ in kept], [m for _, m, _ in kept],
                         [v for _, _, v in kept])
    if changes.new_lots:
        await db.execute("INSERT INTO lot_cohorts SELECT * FROM unnest($1::bigint[], $2::date[]) "
                         "ON CONFLICT DO NOTHING", list(changes.new_lots), list(changes.new_lots.values()))
    if changes.fingerprints:
        fps = sorted(changes.fingerprints)
        await db.execute("INSERT INTO fingerprints SELECT * FROM unnest($1::text[], $2::text[], $3::text[], "
                         "$4::text[]) ON CONFLICT DO NOTHING", *([f[i] for f in fps] for i in range(4)))
    if changes.orders:
        await db.execute(
            "INSERT INTO orders (program_id, order_id, event_id, day, total) SELECT * FROM unnest($1::text[], "
            "$2::text[], $3::text[], $4::date[], $5::numeric[]) ON CONFLICT (program_id, order_id) DO UPDATE SET "
            "event_id = excluded.event_id, day = excluded.day, total = excluded.total",
            *([o[i] for o in changes.orders] for i in range(5)))
    if changes.refunds:
        refunds = list(changes.refunds.items())
        await db.execute(
            "INSERT INTO orders AS o (program_id, order_id, refunded) SELECT * FROM unnest($1::text[], $2::text[], "
            "$3::numeric[]) ON CONFLICT (program_id, order_id) DO UPDATE SET refunded = o.refunded + excluded.refunded",
            [k[0] for k, _ in refunds], [k[1] for k, _ in refunds], [v for _, v in refunds])
    if changes.related:
        related = sorted(changes.related)
        await db.execute(
            "INSERT INTO orders (program_id, order_id, related) SELECT p, o, true FROM unnest($1::text[], $2::text[]) "
            "AS r(p, o) ON CONFLICT (program_id, order_id) DO UPDATE SET related = true", *_split(related))
    if changes.baskets:
        baskets = list(changes.baskets.items())
        await db.execute(
            "INSERT INTO rule_baskets AS b SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::date[], "
            "$5::bigint[]) ON CONFLICT (program_id, rule_id, source_event_id) DO UPDATE SET "
            "points = b.points + excluded.points", *([k[i] for k, _ in baskets] for i in range(3)),
            [v[0] for _, v in baskets], [v[1] for _, v in baskets])
    if changes.decided:
        decided = sorted(changes.decided)
        rows4 = [changes.referrals[k] for k in decided]
        await db.execute(
            "INSERT INTO referrals SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::date[], "
            "$6::bool[]) ON CONFLICT (program_id, referral_id) DO UPDATE SET outcome = excluded.outcome, "
            "reason = excluded.reason, decided_on = excluded.decided_on, revoked = excluded.revoked",
            *_split(decided), [r.outcome for r in rows4], [r.reason for r in rows4], [r.decided_on for r in rows4],
            [r.revoked for r in rows4])
    if changes.referees:
        referees = list(changes.referees.items())
        await db.execute("INSERT INTO referees SELECT * FROM unnest($1::text[], $2::text[], $3::date[]) "
                         "ON CONFLICT DO NOTHING", *_split(k for k, _ in referees), [v for _, v in referees])

    if changes.exposures:
        exposed = sorted(changes.exposures.items())
        rows5 = [v for _, v in exposed]
        await db.execute(
            "INSERT INTO experiment_members AS x (program_id, experiment_id, member_id, arm, first_seen, "
            + ", ".join(EXPOSURE_COLUMNS) + ") SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], "
            "$5::timestamptz[], $6::bigint[], $7::bigint[], $8::numeric[], $9::int[], $10::int[], $11::bigint[], "
            "$12::int[], $13::int[]) ON CONFLICT (program_id, experiment_id, member_id) DO UPDATE SET "
            "arm = excluded.arm, first_seen = least(x.first_seen, excluded.first_seen), "
            + ", ".join(f"{c} = x.{c} + excluded.{c}" for c in EXPOSURE_COLUMNS),
            *([k[i] for k, _ in exposed] for i in range(3)), [r.arm for r in rows5], [r.first_seen for r in rows5],
            *([getattr(r, c) for r in rows5] for c in EXPOSURE_COLUMNS))


def lock_key(schema: str) -> int:
    """Held exclusively by `jifen insight rebuild`, shared by every batch and abuse-watch round of the live service."""
    return advisory_key(insight_projection_lock(schema))


async def share_projection(db: asyncpg.Connection, schema: str) -> bool:
    """Take the projection's lock shared for this transaction; False while a rebuild holds it."""
    return bool(await db.fetchval("SELECT pg_try_advisory_xact_lock_shared($1)", lock_key(schema)))


async def clear(db: asyncpg.Connection, program_id: str) -> None:
    """Forget everything projected for one programme (a rebuild replays it). What no topic holds stays: members'
    leaderboard opt-outs (as bare rows, like an opt-out sent before any event) and the abuse watch's findings (its
    next round replaces them, announcing only what is new, not every finding again)."""
    for table in TABLES:
        if table in ("lot_cohorts", "watch"):
            continue  # lot ids are the ledger's, unique across programmes: a replay stores the same cohort again
        if table == "members":
            await db.execute("DELETE FROM members WHERE program_id = $1 AND NOT opted_out", program_id)
            await db.execute("UPDATE members SET balance = 0, seq = 0, tier = NULL, enrolled_at = NULL, "
                             "last_active_at = NULL, last_earned_at = NULL WHERE program_id = $1", program_id)
            continue
        await db.execute(f"DELETE FROM {table} WHERE program_id = $1", program_id)


def money(value: Decimal | None) -> Decimal:
    return value if value is not None else Decimal(0)
