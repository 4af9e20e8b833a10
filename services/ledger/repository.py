"""The ledger's tables and queries. Hot paths are one multi-row statement per batch (unnest arrays)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from services.ledger.domain import Account, Entry

AccountKey = tuple[str, str, str]  # (program_id, kind, member_id)


async def known_commands(db: asyncpg.Connection, keys: Sequence[str]) -> dict[str, bytes]:
    rows = await db.fetch("SELECT idempotency_key, payload_hash FROM commands WHERE idempotency_key = ANY($1::text[])",
                          list(keys))
    return {r["idempotency_key"]: bytes(r["payload_hash"]) for r in rows}


async def claim_commands(db: asyncpg.Connection, rows: Sequence[tuple[str, bytes, str, str, str, str, str | None]],
                         received_at: datetime) -> int:
    """Record commands as seen; returns how many were new (fewer means a concurrent writer claimed some)."""
    if not rows:
        return 0
    cols = list(zip(*rows, strict=True))
    claimed = await db.fetch(
        """INSERT INTO commands (idempotency_key, payload_hash, command_type, program_id, member_id, outcome,
                                 reason, received_at)
           SELECT k, h, t, p, m, o, r, $8 FROM unnest($1::text[], $2::bytea[], $3::text[], $4::text[], $5::text[],
                                                       $6::text[], $7::text[]) AS u(k, h, t, p, m, o, r)
           ON CONFLICT DO NOTHING RETURNING 1""",
        *[list(c) for c in cols], received_at)
    return len(claimed)


async def accounts(db: asyncpg.Connection, keys: Iterable[AccountKey]) -> dict[AccountKey, asyncpg.Record]:
    """Load accounts by key, creating the missing ones (in key order, so concurrent creators cannot deadlock)."""
    wanted = sorted(set(keys))
    found = await _select_accounts(db, wanted)
    missing = [k for k in wanted if k not in found]
    if missing:
        await db.execute(
            """INSERT INTO accounts (program_id, kind, member_id)
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) ON CONFLICT DO NOTHING""",
            [k[0] for k in missing], [k[1] for k in missing], [k[2] for k in missing])
        found.update(await _select_accounts(db, missing))
    return found


async def _select_accounts(db: asyncpg.Connection, keys: Sequence[AccountKey]) -> dict[AccountKey, asyncpg.Record]:
    rows = await db.fetch(
        """SELECT a.id, a.program_id, a.kind, a.member_id, a.balance, a.lifetime_earned, a.last_seq, a.last_hash
           FROM accounts a JOIN unnest($1::text[], $2::text[], $3::text[]) AS u(p, k, m)
             ON a.program_id = u.p AND a.kind = u.k AND a.member_id = u.m""",
        [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys])
    return {(r["program_id"], r["kind"], r["member_id"]): r for r in rows}


def member_account(row: asyncpg.Record) -> Account:
    return Account(id=row["id"], program_id=row["program_id"], member_id=row["member_id"], balance=row["balance"],
                   lifetime_earned=row["lifetime_earned"], seq=row["last_seq"], last_hash=bytes(row["last_hash"]))


async def insert_entries(db: asyncpg.Connection, entries: Sequence[Entry]) -> list[int]:
    """Insert entries and their lots; returns the entry ids in the order given."""
    if not entries:
        return []
    rows = await db.fetch(
        """INSERT INTO entries (program_id, account_id, seq, from_account_id, to_account_id, amount, balance_after,
                                kind, command_key, source_event_id, rule_id, rule_version, reason, details,
                                occurred_at, posted_at, prev_hash, hash)
           SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[],
                                $7::bigint[], $8::text[], $9::text[], $10::text[], $11::text[], $12::int[],
                                $13::text[], $14::jsonb[], $15::timestamptz[], $16::timestamptz[], $17::bytea[],
                                $18::bytea[])
           RETURNING id, account_id, seq""",
        [e.program_id for e in entries], [e.account_id for e in entries], [e.seq for e in entries],
        [e.from_account_id for e in entries], [e.to_account_id for e in entries], [e.amount for e in entries],
        [e.balance_after for e in entries], [e.kind for e in entries], [e.command_key for e in entries],
        [e.cause.source_event_id for e in entries], [e.cause.rule_id for e in entries],
        [e.cause.rule_version for e in entries], [e.cause.reason for e in entries],
        [orjson.dumps(e.details).decode() if e.details is not None else None for e in entries],
        [e.occurred_at for e in entries], [e.posted_at for e in entries], [e.prev_hash for e in entries],
        [e.hash for e in entries])
    ids = {(r["account_id"], r["seq"]): r["id"] for r in rows}
    entry_ids = [ids[(e.account_id, e.seq)] for e in entries]
    lots = [(i, e) for i, e in zip(entry_ids, entries, strict=True) if e.lot is not None]
    if lots:
        await db.execute(
            """INSERT INTO lots (entry_id, account_id, amount, available_at, expires_at)
               SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::timestamptz[], $5::timestamptz[])""",
            [i for i, _ in lots], [e.account_id for _, e in lots], [e.lot.amount for _, e in lots if e.lot],
            [e.lot.available_at for _, e in lots if e.lot], [e.lot.expires_at for _, e in lots if e.lot])
    return entry_ids


async def advance_accounts(db: asyncpg.Connection, changed: Sequence[tuple[Account, int]]) -> bool:
    """Move each account's tip forward, only from the sequence it was read at (optimistic concurrency)."""
    if not changed:
        return True
    result = await db.execute(
        """UPDATE accounts a SET balance = u.b, lifetime_earned = u.l, last_seq = u.s, last_hash = u.h
           FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bytea[], $6::bigint[])
                AS u(id, b, l, s, h, prev)
           WHERE a.id = u.id AND a.last_seq = u.prev""",
        [a.id for a, _ in changed], [a.balance for a, _ in changed], [a.lifetime_earned for a, _ in changed],
        [a.seq for a, _ in changed], [a.last_hash for a, _ in changed], [prev for _, prev in changed])
    return int(result.split()[-1]) == len(changed)


# --- queries for the HTTP side ---------------------------------------------------------------------------

async def balance(db: asyncpg.Connection, program_id: str, member_id: str, now: datetime) -> dict[str, Any] | None:
    row = await db.fetchrow(
        """SELECT a.id, a.balance, a.lifetime_earned,
                  coalesce((SELECT sum(l.amount) FROM lots l WHERE l.account_id = a.id AND l.available_at > $3), 0)
                      AS pending
           FROM accounts a WHERE a.program_id = $1 AND a.kind = 'member' AND a.member_id = $2""",
        program_id, member_id, now)
    if row is None:
        return None
    expiry = await db.fetchrow(
        """SELECT expires_at, sum(amount) AS points FROM lots
           WHERE account_id = $1 AND expires_at > $2
           GROUP BY expires_at ORDER BY expires_at LIMIT 1""", row["id"], now)
    return {"balance": row["balance"], "pending": int(row["pending"]), "lifetime_earned": row["lifetime_earned"],
            "next_expiry": dict(expiry) if expiry else None}


async def entries_page(db: asyncpg.Connection, program_id: str, member_id: str, before_seq: int | None,
                       limit: int) -> list[asyncpg.Record]:
    return await db.fetch(
        """SELECT e.id, e.seq, e.kind, e.amount, e.to_account_id = e.account_id AS incoming, e.balance_after,
                  e.command_key, e.source_event_id, e.rule_id, e.rule_version, e.reason, e.details,
                  e.occurred_at, e.posted_at, e.hash, l.available_at, l.expires_at
           FROM accounts a
           JOIN entries e ON e.account_id = a.id
           LEFT JOIN lots l ON l.entry_id = e.id
           WHERE a.program_id = $1 AND a.kind = 'member' AND a.member_id = $2
             AND ($3::bigint IS NULL OR e.seq < $3)
           ORDER BY e.seq DESC LIMIT $4""",
        program_id, member_id, before_seq, limit)
