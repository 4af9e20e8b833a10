"""The programme's referral figures and its top referrers', read for the HTTP side in three statements."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

import asyncpg


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

