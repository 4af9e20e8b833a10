"""The tiers service's tables: contributions, members' tiers, the changes announced, manual assignments. Every batch
reads what it needs in a few statements and writes with one multi-row statement per table."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import asyncpg
import orjson

from services.tiers.domain import Before, Change, Contribution, Member
from services.tiers.windows import Span
from shared import keys
from shared.db import advisory_key

MemberKey = tuple[str, str]  # (program_id, member_id)


def lock_key(schema: str) -> int:
    """Held exclusively by `jifen tiers rebuild`, shared by every batch and review page of the live service."""
    return advisory_key(keys.tiers_projection_lock(schema))


async def share_projection(db: asyncpg.Connection, schema: str) -> bool:
    """Take the projection's lock shared for this transaction; False while a rebuild holds it."""
    return bool(await db.fetchval("SELECT pg_try_advisory_xact_lock_shared($1)", lock_key(schema)))


@dataclass(frozen=True, slots=True)
class NewContribution:
    program_id: str
    member_id: str
    key: str
    ref: str | None
    contribution: Contribution


async def members(db: asyncpg.Connection, wanted: dict[MemberKey, tuple[datetime, timedelta]],
                  with_contributions: bool = True) -> dict[MemberKey, Member]:
    """The members' states and, for each, the contributions a change at `wanted[member][0]` can look at: those from
    `reach` before the earliest of that time, the end of the member's tier period and the window its last upgrade
    was crossed in. Members never seen are absent."""
    if not wanted:
        return {}
    keys = list(wanted)
    columns = ([p for p, _ in keys], [m for _, m in keys], [at for at, _ in wanted.values()],
               [reach for _, reach in wanted.values()])
    rows = await db.fetch(
        """SELECT m.* FROM members m JOIN unnest($1::text[], $2::text[]) AS u(p, m)
             ON m.program_id = u.p AND m.member_id = u.m""", columns[0], columns[1])
    found = {(r["program_id"], r["member_id"]): _member(r) for r in rows}
    if not with_contributions or not found:
        return found
    for r in await db.fetch(
            """SELECT c.program_id, c.member_id, c.occurred_at, c.points, c.spend, c.purchases
               FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::interval[]) AS u(p, m, at, reach)
               JOIN members s ON s.program_id = u.p AND s.member_id = u.m
               JOIN contributions c ON c.program_id = u.p AND c.member_id = u.m
                AND c.occurred_at >= least(u.at, s.valid_until, s.upgraded_from) - u.reach
               ORDER BY c.occurred_at""", *columns):
        found[(r["program_id"], r["member_id"])].contributions.append(
            Contribution(r["occurred_at"], r["points"], r["spend"], r["purchases"]))
    return found


def _member(r: asyncpg.Record) -> Member:
    before = r["before"]
    if isinstance(before, str):
        before = orjson.loads(before)
    return Member(
        tier=r["tier"], since=r["since"], valid_until=r["valid_until"], anchor=r["anchor"], manual=r["manual"],
        before=Before(before["tier"], _time(before["since"]), _time(before["valid_until"])) if before else None,
        upgraded_in=Span(r["upgraded_from"], r["upgraded_to"]) if r["upgraded_from"] is not None else None,
        warned_for=r["warned_for"], announced=r["changes"])


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


async def referenced(db: asyncpg.Connection, refs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], asyncpg.Record]:
    """The contributions reversals and refunds correct, by (program, key), with what refunds took back so far."""
    if not refs:
        return {}
    rows = await db.fetch(
        """SELECT c.program_id, c.key, c.member_id, c.occurred_at, c.points, c.spend, c.purchases,
                  coalesce((SELECT sum(-r.spend) FROM contributions r
                            WHERE r.program_id = c.program_id AND r.ref = c.key), 0) AS refunded
           FROM contributions c JOIN unnest($1::text[], $2::text[]) AS u(p, k) ON c.program_id = u.p AND c.key = u.k""",
        [p for p, _ in refs], [k for _, k in refs])
    return {(r["program_id"], r["key"]): r for r in rows}


async def add_contributions(db: asyncpg.Connection, added: Sequence[NewContribution]) -> set[tuple[str, str]]:
    """Insert contributions; returns the (program, key) of those not stored before (the others are replays)."""
    if not added:
        return set()
    rows = await db.fetch(
        """INSERT INTO contributions (program_id, member_id, key, ref, occurred_at, points, spend, purchases)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::bigint[],
                                $7::numeric[], $8::integer[])
           ON CONFLICT DO NOTHING RETURNING program_id, key""",
        [a.program_id for a in added], [a.member_id for a in added], [a.key for a in added], [a.ref for a in added],
        [a.contribution.occurred_at for a in added], [a.contribution.points for a in added],
        [a.contribution.spend for a in added], [a.contribution.purchases for a in added])
    return {(r["program_id"], r["key"]) for r in rows}


async def add_assignment(db: asyncpg.Connection, event_id: str, program_id: str, member_id: str, tier: str,
                         until: datetime | None, at: datetime, assigned_by: str, reason: str) -> bool:
    """Record a manual assignment; False when this event was recorded before (a replay)."""
    done = await db.fetchval(
        """INSERT INTO assignments (event_id, program_id, member_id, tier, until, at, assigned_by, reason)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING RETURNING true""",
        event_id, program_id, member_id, tier, until, at, assigned_by, reason)
    return bool(done)


@dataclass(frozen=True, slots=True)
class Stored:
    key: MemberKey
    member: Member
    due_at: datetime | None  # when the review job must look at the member next


async def store(db: asyncpg.Connection, states: Sequence[Stored],
                announced: Sequence[tuple[MemberKey, int, Change]]) -> None:
    """Write the members' states and the changes announced, one statement each."""
    if states:
        await db.execute(
            """INSERT INTO members (program_id, member_id, tier, since, valid_until, anchor, manual, before,
                                    upgraded_from, upgraded_to, warned_for, changes, due_at)
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[],
                                    $6::timestamptz[], $7::boolean[], $8::jsonb[], $9::timestamptz[],
                                    $10::timestamptz[], $11::timestamptz[], $12::integer[], $13::timestamptz[])
               ON CONFLICT (program_id, member_id) DO UPDATE SET
                   tier = excluded.tier, since = excluded.since, valid_until = excluded.valid_until,
                   anchor = excluded.anchor, manual = excluded.manual, before = excluded.before,
                   upgraded_from = excluded.upgraded_from, upgraded_to = excluded.upgraded_to,
                   warned_for = excluded.warned_for, changes = excluded.changes, due_at = excluded.due_at""",
            [s.key[0] for s in states], [s.key[1] for s in states], [s.member.tier for s in states],
            [s.member.since for s in states], [s.member.valid_until for s in states],
            [s.member.anchor for s in states], [s.member.manual for s in states],
            [_before(s.member.before) for s in states],
            [s.member.upgraded_in.start if s.member.upgraded_in else None for s in states],
            [s.member.upgraded_in.end if s.member.upgraded_in else None for s in states],
            [s.member.warned_for for s in states], [s.member.announced for s in states], [s.due_at for s in states])
    if announced:
        await db.execute(
            """INSERT INTO changes (program_id, member_id, seq, at, tier, previous_tier, reason, detail, valid_until,
                                    qualifying_value)
               SELECT * FROM unnest($1::text[], $2::text[], $3::integer[], $4::timestamptz[], $5::text[], $6::text[],
                                    $7::text[], $8::text[], $9::timestamptz[], $10::numeric[])""",
            [k[0] for k, _, _ in announced], [k[1] for k, _, _ in announced], [n for _, n, _ in announced],
            [c.at for _, _, c in announced], [c.tier for _, _, c in announced],
            [c.previous for _, _, c in announced], [c.reason for _, _, c in announced],
            [c.detail for _, _, c in announced], [c.valid_until for _, _, c in announced],
            [c.qualifying_value for _, _, c in announced])


def _before(before: Before | None) -> str | None:
    if before is None:
        return None
    return orjson.dumps({"tier": before.tier, "since": before.since.isoformat() if before.since else None,
                         "valid_until": before.valid_until.isoformat() if before.valid_until else None}).decode()


async def due(db: asyncpg.Connection, now: datetime, limit: int) -> list[MemberKey]:
    rows = await db.fetch("SELECT program_id, member_id FROM members WHERE due_at <= $1 ORDER BY due_at LIMIT $2",
                          now, limit)
    return [(r["program_id"], r["member_id"]) for r in rows]


async def forget_due(db: asyncpg.Connection, keys: Sequence[MemberKey]) -> None:
    """Members of a programme that has no tiers now: nothing is due for them."""
    if keys:
        await db.execute("""UPDATE members m SET due_at = NULL FROM unnest($1::text[], $2::text[]) AS u(p, m)
                            WHERE m.program_id = u.p AND m.member_id = u.m""",
                         [p for p, _ in keys], [m for _, m in keys])


async def counts(db: asyncpg.Connection) -> dict[tuple[str, str], int]:
    rows = await db.fetch("SELECT program_id, tier, count(*) AS n FROM members GROUP BY program_id, tier")
    return {(r["program_id"], r["tier"]): int(r["n"]) for r in rows}


# --- the HTTP side ------------------------------------------------------------------------------------------

async def history(db: asyncpg.Connection, program_id: str, member_id: str, limit: int,
                  before_seq: int | None) -> list[asyncpg.Record]:
    return await db.fetch(
        """SELECT seq, at, tier, previous_tier, reason, detail, valid_until, qualifying_value FROM changes
           WHERE program_id = $1 AND member_id = $2 AND seq < $3 ORDER BY seq DESC LIMIT $4""",
        program_id, member_id, before_seq if before_seq is not None else 2**31 - 1, limit)


def spend_of(value: object) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))
