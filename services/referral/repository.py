"""The referral service's tables: facts in (one multi-row statement per table and batch), what judging a set of
referrers needs (a few statements for the whole set), verdicts and credits out, and the reads of the HTTP side."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import asyncpg

from services.referral.domain import ROLES, STATUSES, Decision, Member, Peer, Purchase, Refund, Role, Status
from shared.db import advisory_key

MemberKey = tuple[str, str]  # (program_id, member_id)


def columns(rows: Sequence[tuple[object, ...]], width: int) -> list[list[object]]:
    """Rows as columns, for `unnest`."""
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


async def lock(db: asyncpg.Connection, schema: str, program_ids: Iterable[str]) -> None:
    """Judging is serialised per programme, across processes: a referrer's referrals arrive on several partitions
    (each keyed by its referee), and the cap, the bonus and velocity by device count across members. Taken before
    a batch stores its facts, so what one batch stores is seen by the next batch's judging. In name order, so two
    batches of several programmes cannot deadlock."""
    for program_id in sorted(set(program_ids)):
        await db.execute("SELECT pg_advisory_xact_lock($1)", advisory_key(f"referral:{schema}:{program_id}"))


# --- facts --------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class NewMember:
    program_id: str
    member_id: str
    enrolled_at: datetime
    fingerprints: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class NewPurchase:
    program_id: str
    order_id: str
    member_id: str
    event_id: str
    occurred_at: datetime
    currency: str
    total: Decimal


@dataclass(frozen=True, slots=True)
class NewRefund:
    program_id: str
    refund_id: str
    order_id: str
    member_id: str
    event_id: str
    occurred_at: datetime
    total: Decimal


@dataclass(frozen=True, slots=True)
class NewReferral:
    referral_id: str
    program_id: str
    referrer: str
    referee: str
    accepted_at: datetime
    via: str
    event_id: str


async def add_members(db: asyncpg.Connection, members: Sequence[NewMember]) -> None:
    """Members enrolled, with their fingerprints (a second enrolment adds to them; the earliest time stays)."""
    if not members:
        return
    earliest: dict[MemberKey, datetime] = {}
    for m in members:  # one row per member: a statement may not upsert the same row twice
        key = (m.program_id, m.member_id)
        earliest[key] = min(m.enrolled_at, earliest.get(key, m.enrolled_at))
    await db.execute(
        """INSERT INTO members (program_id, member_id, enrolled_at)
           SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[])
           ON CONFLICT (program_id, member_id) DO UPDATE SET enrolled_at = excluded.enrolled_at
             WHERE members.enrolled_at IS NULL OR excluded.enrolled_at < members.enrolled_at""",
        *columns([(p, m, at) for (p, m), at in earliest.items()], 3))
    prints = sorted({(m.program_id, kind, value, m.member_id) for m in members for kind, value in m.fingerprints})
    if prints:
        await db.execute(
            """INSERT INTO fingerprints (program_id, kind, hash, member_id)
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) ON CONFLICT DO NOTHING""",
            *columns(prints, 4))


async def add_purchases(db: asyncpg.Connection, purchases: Sequence[NewPurchase]) -> None:
    """Purchases by order, and each member's first purchase. Two events for one order: the earlier by time (then
    event id) is the order, whichever arrived first."""
    if not purchases:
        return
    first: dict[tuple[str, str], NewPurchase] = {}
    for p in sorted(purchases, key=lambda p: (p.occurred_at, p.event_id)):
        first.setdefault((p.program_id, p.order_id), p)
    rows = [(p.program_id, p.order_id, p.member_id, p.event_id, p.occurred_at, p.currency, p.total)
            for p in first.values()]
    await db.execute(
        """INSERT INTO purchases (program_id, order_id, member_id, event_id, occurred_at, currency, total)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[],
                                $7::numeric[])
           ON CONFLICT (program_id, order_id) DO UPDATE
             SET member_id = excluded.member_id, event_id = excluded.event_id, occurred_at = excluded.occurred_at,
                 currency = excluded.currency, total = excluded.total
             WHERE (excluded.occurred_at, excluded.event_id) < (purchases.occurred_at, purchases.event_id)""",
        *columns(rows, 7))
    earliest: dict[MemberKey, datetime] = {}
    for p in purchases:
        key = (p.program_id, p.member_id)
        earliest[key] = min(p.occurred_at, earliest.get(key, p.occurred_at))
    await db.execute(
        """INSERT INTO members (program_id, member_id, first_purchase_at)
           SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[])
           ON CONFLICT (program_id, member_id) DO UPDATE SET first_purchase_at = excluded.first_purchase_at
             -- most purchases are not a member's first: leave their row alone
             WHERE members.first_purchase_at IS NULL OR excluded.first_purchase_at < members.first_purchase_at""",
        *columns([(p, m, at) for (p, m), at in earliest.items()], 3))


async def add_refunds(db: asyncpg.Connection, refunds: Sequence[NewRefund]) -> None:
    if not refunds:
        return
    first: dict[tuple[str, str], NewRefund] = {}
    for r in sorted(refunds, key=lambda r: (r.occurred_at, r.event_id)):
        first.setdefault((r.program_id, r.refund_id), r)
    rows = [(r.program_id, r.refund_id, r.order_id, r.member_id, r.event_id, r.occurred_at, r.total)
            for r in first.values()]
    await db.execute(
        """INSERT INTO refunds (program_id, refund_id, order_id, member_id, event_id, occurred_at, total)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
                                $7::numeric[])
           ON CONFLICT (program_id, refund_id) DO UPDATE
             SET order_id = excluded.order_id, member_id = excluded.member_id, event_id = excluded.event_id,
                 occurred_at = excluded.occurred_at, total = excluded.total
             WHERE (excluded.occurred_at, excluded.event_id) < (refunds.occurred_at, refunds.event_id)""",
        *columns(rows, 7))


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


async def code_owners(db: asyncpg.Connection, codes: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """The members whose codes these are, by (programme, code)."""
    wanted = sorted(set(codes))
    if not wanted:
        return {}
    rows = await db.fetch(
        """SELECT c.program_id, c.code, c.member_id FROM codes c
           JOIN unnest($1::text[], $2::text[]) AS u(p, code) ON c.program_id = u.p AND c.code = u.code""",
        *columns(wanted, 2))
    return {(r["program_id"], r["code"]): r["member_id"] for r in rows}


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


# --- what judging needs -------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Stored:
    """A referral as stored: its facts and what was decided of it last (`status` None: never judged)."""

    referral_id: str
    program_id: str
    referrer: str
    referee: str
    accepted_at: datetime
    event_id: str
    status: Status | None
    reason: str | None
    grants: dict[Role, int]  # each side's grants so far
    live: dict[Role, int]
    decision: Decision | None
    decided_at: datetime | None
    judged: Judged | None  # as it would be written again, to see whether a new verdict changes anything

    @property
    def announced(self) -> int:
        return self.judged.announced if self.judged is not None else 0

    @classmethod
    def of(cls, r: asyncpg.Record) -> Stored:
        live: dict[Role, int] = {role: r[f"live_{role}"] for role in ROLES if r[f"live_{role}"]}
        grants: dict[Role, int] = {role: r[f"grant_{role}"] for role in ROLES if r[f"grant_{role}"]}
        status = _status(r["status"])
        judged = None if status is None else Judged(
            r["referral_id"], status, r["reason"], r["detail"], r["verdict_at"], r["order_id"], r["qualified_at"],
            r["position"], r["rule_version"], r["available_at"], grants, live, r["announced"], r["due_at"])
        decision = r["decision"]
        return cls(r["referral_id"], r["program_id"], r["referrer_id"], r["referee_id"], r["accepted_at"],
                   r["event_id"], status, r["reason"], grants, live,
                   "approved" if decision == "approved" else "rejected" if decision == "rejected" else None,
                   r["decided_at"], judged)


def _status(value: str) -> Status | None:
    """A stored status as the domain's; `new` (stored, never judged) is None."""
    for status in STATUSES:
        if value == status:
            return status
    return None


async def referrals_of(db: asyncpg.Connection, referrers: Iterable[MemberKey]) -> list[Stored]:
    wanted = sorted(set(referrers))
    if not wanted:
        return []
    rows = await db.fetch(
        """SELECT r.* FROM referrals r
           JOIN unnest($1::text[], $2::text[]) AS u(p, m) ON r.program_id = u.p AND r.referrer_id = u.m
           ORDER BY r.accepted_at, r.referral_id""", *columns(wanted, 2))
    return [Stored.of(r) for r in rows]


async def members_of(db: asyncpg.Connection, keys: Iterable[MemberKey]) -> dict[MemberKey, Member]:
    """Members' fingerprints and first purchases (purchases themselves come from `purchases_of`)."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    firsts = await db.fetch(
        """SELECT m.program_id, m.member_id, m.first_purchase_at FROM members m
           JOIN unnest($1::text[], $2::text[]) AS u(p, m) ON m.program_id = u.p AND m.member_id = u.m""",
        *columns(wanted, 2))
    prints = await db.fetch(
        """SELECT f.program_id, f.member_id, f.kind, f.hash FROM fingerprints f
           JOIN unnest($1::text[], $2::text[]) AS u(p, m) ON f.program_id = u.p AND f.member_id = u.m""",
        *columns(wanted, 2))
    found: dict[MemberKey, set[tuple[str, str]]] = defaultdict(set)
    for r in prints:
        found[(r["program_id"], r["member_id"])].add((r["kind"], r["hash"]))
    first = {(r["program_id"], r["member_id"]): r["first_purchase_at"] for r in firsts}
    return {key: Member(frozenset(found.get(key, ())), first.get(key)) for key in wanted}


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


@dataclass(frozen=True, slots=True)
class Span:
    """A member's (or a device's) events worth loading: from `since` to `until`, both included."""

    program_id: str
    key: str
    since: datetime
    until: datetime


async def purchases_of(db: asyncpg.Connection, spans: Sequence[Span]) -> dict[MemberKey, tuple[Purchase, ...]]:
    """Members' purchases within their spans, each with its refunds, in (time, order id) order."""
    if not spans:
        return {}
    rows = await db.fetch(
        """SELECT p.program_id, p.member_id, p.order_id, p.event_id, p.occurred_at, p.currency, p.total
           FROM purchases p JOIN unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[])
             AS u(p, m, since, until)
             ON p.program_id = u.p AND p.member_id = u.m AND p.occurred_at BETWEEN u.since AND u.until
           ORDER BY p.occurred_at, p.order_id""",
        *columns([(s.program_id, s.key, s.since, s.until) for s in spans], 4))
    refunds: dict[tuple[str, str], list[Refund]] = defaultdict(list)
    if rows:
        for r in await db.fetch(
                """SELECT f.program_id, f.order_id, f.refund_id, f.event_id, f.occurred_at, f.total FROM refunds f
                   JOIN unnest($1::text[], $2::text[]) AS u(p, o) ON f.program_id = u.p AND f.order_id = u.o
                   ORDER BY f.occurred_at, f.refund_id""",
                *columns(sorted({(r["program_id"], r["order_id"]) for r in rows}), 2)):
            refunds[(r["program_id"], r["order_id"])].append(
                Refund(r["refund_id"], r["event_id"], r["occurred_at"], Decimal(r["total"])))
    found: dict[MemberKey, list[Purchase]] = defaultdict(list)
    for r in rows:
        found[(r["program_id"], r["member_id"])].append(Purchase(
            r["order_id"], r["event_id"], r["occurred_at"], r["currency"], Decimal(r["total"]),
            tuple(refunds.get((r["program_id"], r["order_id"]), ()))))
    return {key: tuple(found_) for key, found_ in found.items()}


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


# --- verdicts and credits -----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Judged:
    """A referral's verdict as stored."""

    referral_id: str
    status: Status
    reason: str | None
    detail: str
    verdict_at: datetime
    order_id: str | None
    qualified_at: datetime | None
    position: int | None
    rule_version: int
    available_at: datetime | None
    grants: dict[Role, int]
    live: dict[Role, int]
    announced: int
    due_at: datetime | None


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


async def prune_purchases(db: asyncpg.Connection, before: datetime, limit: int) -> int:
    """Forget up to `limit` purchases (with their refunds) and lone refunds from before `before` of members who are
    nobody's referee; returns how many rows went. Their first purchase stays in `members`, which is all a later
    referral of theirs needs (`existing_customer`); referees' purchases stay, for verdicts and quality."""
    gone = await db.fetchval(
        """WITH old AS (SELECT p.program_id, p.order_id FROM purchases p WHERE p.occurred_at < $1
                          AND NOT EXISTS (SELECT 1 FROM referrals r
                                          WHERE r.program_id = p.program_id AND r.referee_id = p.member_id)
                        LIMIT $2),
                orders AS (DELETE FROM purchases p USING old
                           WHERE p.program_id = old.program_id AND p.order_id = old.order_id
                           RETURNING p.program_id, p.order_id),
                refunded AS (DELETE FROM refunds f USING orders
                             WHERE f.program_id = orders.program_id AND f.order_id = orders.order_id RETURNING 1)
           SELECT (SELECT count(*) FROM orders) + (SELECT count(*) FROM refunded)""", before, limit)
    lone = await db.fetchval(
        """WITH old AS (SELECT f.program_id, f.refund_id FROM refunds f WHERE f.occurred_at < $1
                          AND NOT EXISTS (SELECT 1 FROM referrals r
                                          WHERE r.program_id = f.program_id AND r.referee_id = f.member_id)
                        LIMIT $2),
                gone AS (DELETE FROM refunds f USING old
                         WHERE f.program_id = old.program_id AND f.refund_id = old.refund_id RETURNING 1)
           SELECT count(*) FROM gone""", before, limit)
    return int(gone) + int(lone)


async def decide(db: asyncpg.Connection, referral_id: str, decision: str, at: datetime, by: str) -> None:
    await db.execute("UPDATE referrals SET decision = $2, decided_at = $3, decided_by = $4 WHERE referral_id = $1",
                     referral_id, decision, at, by)
