"""Referrals: stored by id (the earliest acceptance stands), the referrers new facts touch, what judging reads of a
set of referrers, verdicts written back, reviewers' decisions, the expiry job's due ones, and the HTTP side's reads."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime

import asyncpg

from services.referral.domain import ROLES, STATUSES, Peer, Role, Status
from services.referral.records import Judged, MemberKey, NewReferral, Span, Stored
from services.referral.repository import columns

PENDING = ("pending", "new")  # a referral not judged yet (`new`) is pending to its members


async def add_referrals(db: asyncpg.Connection, referrals: Sequence[NewReferral]) -> None:
    """Referrals by id; announced again, the earliest acceptance (by time, then event id) stands."""
    if not referrals:
        return
    first: dict[str, NewReferral] = {}
    for r in sorted(referrals, key=lambda r: (r.accepted_at, r.event_id)):
        first.setdefault(r.referral_id, r)
    rows = [(r.referral_id, r.program_id, r.referrer, r.referee, r.accepted_at, r.via, r.event_id)
            for r in first.values()]
    await db.execute(
        """INSERT INTO referrals (referral_id, program_id, referrer_id, referee_id, accepted_at, via, event_id)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[],
                                $7::text[])
           ON CONFLICT (referral_id) DO UPDATE
             SET accepted_at = excluded.accepted_at, via = excluded.via, event_id = excluded.event_id
             WHERE (excluded.accepted_at, excluded.event_id) < (referrals.accepted_at, referrals.event_id)""",
        *columns(rows, 7))


async def touched(db: asyncpg.Connection, referees: Iterable[MemberKey], members: Iterable[MemberKey],
                  devices: Iterable[MemberKey]) -> set[MemberKey]:
    """The referrers (program, referrer) whose referrals new facts may change: those of referrals with one of
    `referees` as referee, with one of `members` on either side, and with a referee sharing a device with one of
    `devices`."""
    by_referee = sorted(set(referees) | set(members))
    either = sorted(set(members))
    on_device = sorted(set(devices))
    if not (by_referee or on_device):
        return set()
    rows = await db.fetch(
        """SELECT r.program_id, r.referrer_id FROM referrals r
             JOIN unnest($1::text[], $2::text[]) AS u(p, m) ON r.program_id = u.p AND r.referee_id = u.m
           UNION
           SELECT r.program_id, r.referrer_id FROM referrals r
             JOIN unnest($3::text[], $4::text[]) AS u(p, m) ON r.program_id = u.p AND r.referrer_id = u.m
           UNION
           SELECT r.program_id, r.referrer_id FROM unnest($5::text[], $6::text[]) AS u(p, m)
             JOIN fingerprints mine ON mine.program_id = u.p AND mine.member_id = u.m AND mine.kind = 'device'
             JOIN fingerprints peer ON peer.program_id = mine.program_id AND peer.kind = 'device'
                                   AND peer.hash = mine.hash
             JOIN referrals r ON r.program_id = peer.program_id AND r.referee_id = peer.member_id""",
        *columns(by_referee, 2), *columns(either, 2), *columns(on_device, 2))
    return {(r["program_id"], r["referrer_id"]) for r in rows}


async def referrals_of(db: asyncpg.Connection, referrers: Iterable[MemberKey]) -> list[Stored]:
    wanted = sorted(set(referrers))
    if not wanted:
        return []
    rows = await db.fetch(
        """SELECT r.* FROM referrals r
           JOIN unnest($1::text[], $2::text[]) AS u(p, m) ON r.program_id = u.p AND r.referrer_id = u.m
           ORDER BY r.accepted_at, r.referral_id""", *columns(wanted, 2))
    return [_stored(r) for r in rows]



def _stored(r: asyncpg.Record) -> Stored:
    live: dict[Role, int] = {role: r[f"live_{role}"] for role in ROLES if r[f"live_{role}"]}
    grants: dict[Role, int] = {role: r[f"grant_{role}"] for role in ROLES if r[f"grant_{role}"]}
    status = _status(r["status"])
    judged = None if status is None else Judged(
        r["referral_id"], status, r["reason"], r["detail"], r["verdict_at"], r["order_id"], r["qualified_at"],
        r["position"], r["rule_version"], r["available_at"], grants, live, r["announced"], r["due_at"])
    decision = r["decision"]
    return Stored(r["referral_id"], r["program_id"], r["referrer_id"], r["referee_id"], r["accepted_at"],
                  r["event_id"], status, r["reason"], grants, live,
                  "approved" if decision == "approved" else "rejected" if decision == "rejected" else None,
                  r["decided_at"], judged)


def _status(value: str) -> Status | None:
    """A stored status as the domain's; `new` (stored, never judged) is None."""
    for status in STATUSES:
        if value == status:
            return status
    return None


async def first_referrals(db: asyncpg.Connection, referees: Iterable[MemberKey]
                          ) -> dict[MemberKey, tuple[datetime, str]]:
    """Each referee's earliest referral, by anyone: (accepted_at, referral_id)."""
    wanted = sorted(set(referees))
    if not wanted:
        return {}
    rows = await db.fetch(
        """SELECT DISTINCT ON (r.program_id, r.referee_id) r.program_id, r.referee_id, r.accepted_at, r.referral_id
           FROM referrals r JOIN unnest($1::text[], $2::text[]) AS u(p, m)
             ON r.program_id = u.p AND r.referee_id = u.m
           ORDER BY r.program_id, r.referee_id, r.accepted_at, r.referral_id""", *columns(wanted, 2))
    return {(r["program_id"], r["referee_id"]): (r["accepted_at"], r["referral_id"]) for r in rows}


async def device_peers(db: asyncpg.Connection, spans: Sequence[Span]) -> dict[tuple[str, str], list[Peer]]:
    """Referrals accepted within each device's span whose referee uses the device, by (program, device hash)."""
    if not spans:
        return {}
    rows = await db.fetch(
        """SELECT u.p AS program_id, u.hash, r.accepted_at, r.referral_id, r.referee_id
           FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[]) AS u(p, hash, since, until)
           JOIN fingerprints f ON f.program_id = u.p AND f.kind = 'device' AND f.hash = u.hash
           JOIN referrals r ON r.program_id = f.program_id AND r.referee_id = f.member_id
                           AND r.accepted_at BETWEEN u.since AND u.until""",
        *columns([(s.program_id, s.key, s.since, s.until) for s in spans], 4))
    found: dict[tuple[str, str], list[Peer]] = defaultdict(list)
    for r in rows:
        found[(r["program_id"], r["hash"])].append(Peer(r["accepted_at"], r["referral_id"], r["referee_id"]))
    return found


async def store_verdicts(db: asyncpg.Connection, judged: Sequence[Judged]) -> None:
    if not judged:
        return
    rows = [(j.referral_id, j.status, j.reason, j.detail, j.verdict_at, j.order_id, j.qualified_at, j.position,
             j.rule_version, j.available_at, *(j.grants.get(role, 0) for role in ROLES),
             *(j.live.get(role, 0) for role in ROLES), j.announced, j.due_at) for j in judged]
    await db.execute(
        """UPDATE referrals r SET status = u.status, reason = u.reason, detail = u.detail, verdict_at = u.verdict_at,
                  order_id = u.order_id, qualified_at = u.qualified_at, position = u.position,
                  rule_version = u.rule_version, available_at = u.available_at, grant_referrer = u.grant_referrer,
                  grant_referee = u.grant_referee, grant_bonus = u.grant_bonus, live_referrer = u.live_referrer,
                  live_referee = u.live_referee, live_bonus = u.live_bonus, announced = u.announced, due_at = u.due_at
           FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[],
                       $7::timestamptz[], $8::integer[], $9::integer[], $10::timestamptz[], $11::integer[],
                       $12::integer[], $13::integer[], $14::integer[], $15::integer[], $16::integer[],
                       $17::integer[], $18::timestamptz[])
             AS u(id, status, reason, detail, verdict_at, order_id, qualified_at, position, rule_version,
                  available_at, grant_referrer, grant_referee, grant_bonus, live_referrer, live_referee, live_bonus,
                  announced, due_at)
           WHERE r.referral_id = u.id""", *columns(rows, 18))


async def due(db: asyncpg.Connection, now: datetime, limit: int) -> tuple[list[MemberKey], bool]:
    """Referrers with a referral whose deadline passed while it waited for a qualifying purchase (the referrers of
    up to `limit` such referrals), and whether there may be more."""
    rows = await db.fetch("SELECT program_id, referrer_id FROM referrals WHERE due_at < $1 ORDER BY due_at LIMIT $2",
                          now, limit)
    return sorted({(r["program_id"], r["referrer_id"]) for r in rows}), len(rows) == limit


async def forget_due(db: asyncpg.Connection, referral_ids: Sequence[str]) -> None:
    """Referrals no programme version can judge any more (the file was removed): the job stops looking at them."""
    if referral_ids:
        await db.execute("UPDATE referrals SET due_at = NULL WHERE referral_id = ANY($1::text[])", list(referral_ids))


async def decide(db: asyncpg.Connection, referral_id: str, decision: str, at: datetime, by: str) -> None:
    await db.execute("UPDATE referrals SET decision = $2, decided_at = $3, decided_by = $4 WHERE referral_id = $1",
                     referral_id, decision, at, by)



# --- the HTTP side's reads -----------------------------------------------------------------------------------

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
    """The programme's referrals of a status as its members see it, oldest first (`review`: the review queue;
    `pending`: with those not judged yet)."""
    return await db.fetch("""SELECT * FROM referrals WHERE program_id = $1 AND status = ANY($2::text[])
                             ORDER BY accepted_at, referral_id LIMIT $3""",
                          program_id, list(PENDING) if status == "pending" else [status], limit)


async def counts(db: asyncpg.Connection) -> dict[tuple[str, str, str], int]:
    """Referrals by (programme, status, reason); judged ones only."""
    rows = await db.fetch("SELECT program_id, status, coalesce(reason, '') AS reason, count(*) AS n FROM referrals "
                          "WHERE status <> 'new' GROUP BY program_id, status, reason")
    return {(r["program_id"], r["status"], r["reason"]): int(r["n"]) for r in rows}

