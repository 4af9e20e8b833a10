"""What the HTTP side reads (codes, referrals, the review queue, statistics), the metrics' counts, and the invariants
of the service's own state that the tests check after every run."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

import asyncpg


async def issue_code(db: asyncpg.Connection, program_id: str, member_id: str, code: str,
                     at: datetime) -> asyncpg.Record | None:
    """The member's code: the one issued before, or `code`. None when `code` is another member's already (a
    collision: draw another)."""
    try:
        async with db.transaction():
            await db.execute("INSERT INTO codes (program_id, member_id, code, created_at) VALUES ($1, $2, $3, $4) "
                             "ON CONFLICT (program_id, member_id) DO NOTHING", program_id, member_id, code, at)
    except asyncpg.UniqueViolationError:
        return None
    return await db.fetchrow("SELECT code, created_at FROM codes WHERE program_id = $1 AND member_id = $2",
                             program_id, member_id)


async def referral(db: asyncpg.Connection, program_id: str, referral_id: str) -> asyncpg.Record | None:
    return await db.fetchrow("SELECT * FROM referrals WHERE program_id = $1 AND referral_id = $2",
                             program_id, referral_id)


async def member_referrals(db: asyncpg.Connection, program_id: str, member_id: str,
                           limit: int) -> list[asyncpg.Record]:
    """The member's referrals on either side, newest first."""
    return await db.fetch(
        """SELECT * FROM referrals WHERE program_id = $1 AND (referrer_id = $2 OR referee_id = $2)
           ORDER BY accepted_at DESC, referral_id LIMIT $3""", program_id, member_id, limit)


async def with_status(db: asyncpg.Connection, program_id: str, status: str, limit: int) -> list[asyncpg.Record]:
    """The programme's referrals of a status, oldest first (`review`: the review queue)."""
    return await db.fetch("""SELECT * FROM referrals WHERE program_id = $1 AND status = $2
                             ORDER BY accepted_at, referral_id LIMIT $3""", program_id, status, limit)


async def counts(db: asyncpg.Connection) -> dict[tuple[str, str, str], int]:
    """Referrals by (programme, status, reason); judged ones only."""
    rows = await db.fetch("SELECT program_id, status, coalesce(reason, '') AS reason, count(*) AS n FROM referrals "
                          "WHERE status <> 'new' GROUP BY program_id, status, reason")
    return {(r["program_id"], r["status"], r["reason"]): int(r["n"]) for r in rows}


@dataclass
class Tally:
    """Referrals of a programme or a referrer, by outcome, and their referees' spend after qualifying."""

    accepted: int = 0
    qualified: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    spend: dict[str, Decimal] = field(default_factory=dict)  # by currency
    spenders: int = 0  # qualified referees whose spend is counted


async def stats(db: asyncpg.Connection, program_id: str, quality_days: int, top: int
                ) -> tuple[Tally, list[tuple[str, Tally]]]:
    """The programme's tally and its top referrers' (by referrals rewarded, then qualified), in three statements."""
    rows = await db.fetch(
        """SELECT referrer_id, status, coalesce(reason, '') AS reason, count(*) AS n,
                  count(*) FILTER (WHERE qualified_at IS NOT NULL) AS qualified
           FROM referrals WHERE program_id = $1 AND status <> 'new' GROUP BY referrer_id, status, reason""",
        program_id)
    programme = Tally()
    referrers: dict[str, Tally] = defaultdict(Tally)
    for r in rows:
        for tally in (programme, referrers[r["referrer_id"]]):
            tally.accepted += r["n"]
            tally.qualified += r["qualified"]
            tally.by_status[r["status"]] = tally.by_status.get(r["status"], 0) + r["n"]
            if r["status"] == "rejected":
                tally.rejected[r["reason"]] = tally.rejected.get(r["reason"], 0) + r["n"]
    ranked = sorted(referrers.items(), key=lambda kv: (-kv[1].by_status.get("rewarded", 0), -kv[1].qualified,
                                                         kv[0]))[:top]
    # Spend of referees whose referral qualified and was not refused (rewarded, revoked, in review): what they
    # bought after the qualifying order, up to `quality_days` after it, less what was refunded of it.
    spend = await db.fetch(
        """SELECT r.referrer_id, p.currency, count(DISTINCT r.referee_id) AS referees,
                  sum(p.total - coalesce(f.refunded, 0)) AS spend
           FROM referrals r
           JOIN purchases p ON p.program_id = r.program_id AND p.member_id = r.referee_id
                           AND p.occurred_at >= r.qualified_at AND p.order_id <> r.order_id
                           AND p.occurred_at < r.qualified_at + make_interval(days => $2)
           LEFT JOIN LATERAL (SELECT sum(total) AS refunded FROM refunds f
                              WHERE f.program_id = p.program_id AND f.order_id = p.order_id) f ON true
           WHERE r.program_id = $1 AND r.qualified_at IS NOT NULL AND r.status IN ('rewarded', 'revoked', 'review')
           GROUP BY r.referrer_id, p.currency""", program_id, quality_days)
    spenders = await db.fetch(
        """SELECT referrer_id, count(*) AS n FROM referrals WHERE program_id = $1 AND qualified_at IS NOT NULL
             AND status IN ('rewarded', 'revoked', 'review') GROUP BY referrer_id""", program_id)
    for r in spenders:
        programme.spenders += r["n"]
        referrers[r["referrer_id"]].spenders += r["n"]
    for r in spend:
        amount = max(Decimal(r["spend"]), Decimal(0))
        for tally in (programme, referrers[r["referrer_id"]]):
            tally.spend[r["currency"]] = tally.spend.get(r["currency"], Decimal(0)) + amount
    return programme, [(member, referrers[member]) for member, _ in ranked]


async def invariants(db: asyncpg.Connection) -> list[str]:
    """What must hold of the service's own state once the topics are quiet; each broken rule, said once."""
    broken = []
    for sql, said in (
        ("SELECT referral_id FROM referrals WHERE status = 'rewarded' AND qualified_at IS NULL",
         "a rewarded referral without a qualifying purchase"),
        ("""SELECT r.referral_id FROM referrals r WHERE (r.live_referrer + r.live_referee + r.live_bonus) <> coalesce(
              (SELECT sum(c.amount) FROM credits c WHERE c.referral_id = r.referral_id AND c.reverse = 'none'
                 AND c.state <> 'refused'), 0)""",
         "points in force that differ from the credits not reversed"),
        ("SELECT key FROM credits WHERE state = 'sent' OR reverse IN ('wanted', 'sent', 'failed')",
         "a credit or a reversal the ledger has not answered, or refused"),
        ("""SELECT r.referral_id FROM referrals r WHERE r.status NOT IN ('rewarded')
              AND (r.live_referrer + r.live_referee + r.live_bonus) > 0""",
         "points in force for a referral that is not rewarded"),
        ("SELECT referral_id FROM referrals WHERE status = 'rejected' AND reason IS NULL",
         "a rejection without a reason"),
    ):
        found = await db.fetch(sql)
        if found:
            broken.append(f"{said}: {', '.join(str(r[0]) for r in found[:5])}")
    return broken
