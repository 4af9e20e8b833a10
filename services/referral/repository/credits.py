"""The credits the service asked of the ledger, by key, and what became of each: posted or refused, and its
reversal wanted (waiting for the credit's entry), sent, done or failed. One statement per batch for each."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import orjson

from services.referral.records import NewCredit, Reversal
from services.referral.repository import columns


async def add(db: asyncpg.Connection, new: Sequence[NewCredit]) -> None:
    if not new:
        return
    rows = [(c.key, c.program_id, c.referral_id, c.grant_no, c.role, c.member_id, c.amount, c.occurred_at,
             orjson.dumps(c.arms).decode() if c.arms else None) for c in new]
    await db.execute(
        """INSERT INTO credits (key, program_id, referral_id, grant_no, role, member_id, amount, occurred_at, arms)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::integer[], $5::text[], $6::text[],
                                $7::integer[], $8::timestamptz[], $9::jsonb[])
           ON CONFLICT (key) DO NOTHING""", *columns(rows, 9))


async def want_reversals(db: asyncpg.Connection, reversals: Sequence[Reversal]) -> list[asyncpg.Record]:
    """Mark the grants' credits for reversal. Returns the credits to reverse now: those the ledger has posted. The
    others wait for their entry (a reversal in the ledger's batch of its credit would not find it)."""
    if not reversals:
        return []
    marked = await db.fetch(
        """UPDATE credits c SET reverse = CASE WHEN c.state = 'posted' THEN 'sent' ELSE 'wanted' END,
                  reverse_at = coalesce(u.at, c.occurred_at), reverse_reason = u.reason, reverse_source = u.source
           FROM unnest($1::text[], $2::text[], $3::integer[], $4::timestamptz[], $5::text[], $6::text[])
             AS u(id, role, grant_no, at, reason, source)
           WHERE c.referral_id = u.id AND c.role = u.role AND c.grant_no = u.grant_no AND c.reverse = 'none'
             AND c.state <> 'refused'
           RETURNING c.*""",
        *columns([(r.referral_id, r.role, r.grant_no, r.at, r.reason, r.source) for r in reversals], 6))
    return [credit for credit in marked if credit["reverse"] == "sent"]


async def posted(db: asyncpg.Connection, keys: Sequence[str]) -> list[asyncpg.Record]:
    """Credits the ledger posted; returns those whose reversal was waiting for it (now to be sent)."""
    if not keys:
        return []
    await db.execute("UPDATE credits SET state = 'posted' WHERE key = ANY($1::text[]) AND state = 'sent'", list(keys))
    return await db.fetch("""UPDATE credits SET reverse = 'sent' WHERE key = ANY($1::text[]) AND state = 'posted'
                             AND reverse = 'wanted' RETURNING *""", list(keys))


async def refused(db: asyncpg.Connection, keys: Sequence[str]) -> list[asyncpg.Record]:
    """Credits the ledger refused: nothing to reverse."""
    if not keys:
        return []
    return await db.fetch(
        """UPDATE credits SET state = 'refused', reverse = CASE WHEN reverse = 'wanted' THEN 'none' ELSE reverse END
           WHERE key = ANY($1::text[]) AND state = 'sent' RETURNING program_id, key""", list(keys))


async def reversals_answered(db: asyncpg.Connection, keys: Sequence[str], outcome: str) -> list[asyncpg.Record]:
    """Reversals the ledger posted (`done`) or refused (`failed`), named by the credit each reverses."""
    if not keys:
        return []
    return await db.fetch("UPDATE credits SET reverse = $2 WHERE key = ANY($1::text[]) AND reverse = 'sent' "
                          "RETURNING program_id, key, reverse_reason", list(keys), outcome)
