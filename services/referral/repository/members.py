"""Members as the service knows them: enrolments with their fingerprints, purchases and refunds (facts in, one
statement per table and batch), what judging reads of them for a set of referrals, and the prune of old purchases."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal

import asyncpg

from services.referral.domain import Member, Purchase, Refund
from services.referral.records import MemberKey, NewMember, NewPurchase, NewRefund, Span
from services.referral.repository import columns


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

