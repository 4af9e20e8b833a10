"""The invariants of the service's own state that the tests check after every run."""

from __future__ import annotations

import asyncpg


async def broken(db: asyncpg.Connection) -> list[str]:
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

