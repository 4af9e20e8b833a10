"""The redemption service's tables and queries. A consumer batch reads what it settles in a few statements and writes
with one multi-row statement per table; an HTTP request touches the rows of one member."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from services.redemption.domain import Coupon, MemberView, Past, Payment, Redemption
from services.redemption.programme import Reward

MemberKey = tuple[str, str]  # (program_id, member_id)


def _json(value: Any) -> Any:
    """A jsonb column as read: text on a bare asyncpg connection, already decoded on an engine's."""
    return orjson.loads(value) if isinstance(value, str | bytes) else value


# --- members --------------------------------------------------------------------------------------------

async def lock_member(db: asyncpg.Connection, program_id: str, member_id: str) -> MemberView:
    """The member's row, made if new and locked until the transaction ends: one redemption request at a time per
    member counts the limits and records itself."""
    row = await db.fetchrow(
        """INSERT INTO members (program_id, member_id) VALUES ($1, $2)
           ON CONFLICT (program_id, member_id) DO UPDATE SET program_id = excluded.program_id
           RETURNING tier, blocked""", program_id, member_id)
    return MemberView(row["tier"], row["blocked"])


async def member_view(db: asyncpg.Connection, program_id: str, member_id: str) -> MemberView:
    row = await db.fetchrow("SELECT tier, blocked FROM members WHERE program_id = $1 AND member_id = $2",
                            program_id, member_id)
    return MemberView(row["tier"], row["blocked"]) if row is not None else MemberView()


async def store_tiers(db: asyncpg.Connection, rows: Sequence[tuple[str, str, str, datetime]]) -> None:
    """(program, member, tier, at): each member's tier as of the newest event, never an older one over it."""
    if rows:
        await db.execute(
            """INSERT INTO members (program_id, member_id, tier, tier_at)
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[])
               ON CONFLICT (program_id, member_id) DO UPDATE SET tier = excluded.tier, tier_at = excluded.tier_at
               WHERE members.tier_at IS NULL OR members.tier_at <= excluded.tier_at""",
            *map(list, zip(*rows, strict=True)))


async def store_blocks(db: asyncpg.Connection, rows: Sequence[tuple[str, str, bool, str, datetime]]) -> None:
    """(program, member, blocked, reason, at), newest event wins."""
    if rows:
        await db.execute(
            """INSERT INTO members (program_id, member_id, blocked, block_reason, block_at)
               SELECT * FROM unnest($1::text[], $2::text[], $3::boolean[], $4::text[], $5::timestamptz[])
               ON CONFLICT (program_id, member_id) DO UPDATE SET blocked = excluded.blocked,
                   block_reason = excluded.block_reason, block_at = excluded.block_at
               WHERE members.block_at IS NULL OR members.block_at <= excluded.block_at""",
            *map(list, zip(*rows, strict=True)))


async def history(db: asyncpg.Connection, program_id: str, member_id: str, since: datetime | None) -> list[Past]:
    """The member's redemptions that count towards limits (pending or completed), from `since` (None: all)."""
    rows = await db.fetch(
        """SELECT reward_id, quantity, points, created_at FROM redemptions
           WHERE program_id = $1 AND member_id = $2 AND status IN ('pending', 'completed')
             AND ($3::timestamptz IS NULL OR created_at >= $3)""", program_id, member_id, since)
    return [Past(r["reward_id"], r["quantity"], r["points"], r["created_at"]) for r in rows]


# --- stock ----------------------------------------------------------------------------------------------

async def take_stock(db: asyncpg.Connection, program_id: str, reward: Reward, quantity: int) -> bool:
    """Reserve `quantity` of the reward's stock; False when there is not that much left. The row lock makes
    concurrent requests take it one after the other, so stock never goes below zero."""
    assert reward.stock is not None
    take = """UPDATE stock SET remaining = remaining - $3 WHERE program_id = $1 AND reward_id = $2
              AND remaining >= $3 RETURNING remaining"""
    if await db.fetchval(take, program_id, reward.reward_id, quantity) is not None:
        return True
    if await _start_stock(db, program_id, reward.reward_id, reward.stock):
        return await db.fetchval(take, program_id, reward.reward_id, quantity) is not None
    return False


async def _start_stock(db: asyncpg.Connection, program_id: str, reward_id: str, initial: int) -> bool:
    """Make the reward's running count from the catalogue's initial stock; False when it existed already."""
    made = await db.fetchval(
        """INSERT INTO stock (program_id, reward_id, initial, remaining) VALUES ($1, $2, $3::integer, $3::integer)
           ON CONFLICT DO NOTHING RETURNING true""", program_id, reward_id, initial)
    return bool(made)


async def give_back_stock(db: asyncpg.Connection, taken: Iterable[tuple[str, str, int]]) -> None:
    """(program, reward, quantity) given back by rejected or cancelled redemptions, summed per reward first."""
    summed: dict[tuple[str, str], int] = {}
    for program_id, reward_id, quantity in taken:
        if quantity:
            summed[(program_id, reward_id)] = summed.get((program_id, reward_id), 0) + quantity
    if summed:
        keys = sorted(summed)  # in key order, so two writers cannot lock the same rows in opposite orders
        await db.execute(
            """UPDATE stock s SET remaining = s.remaining + u.q
               FROM unnest($1::text[], $2::text[], $3::bigint[]) AS u(p, r, q)
               WHERE s.program_id = u.p AND s.reward_id = u.r""",
            [k[0] for k in keys], [k[1] for k in keys], [summed[k] for k in keys])


async def add_stock(db: asyncpg.Connection, program_id: str, reward: Reward, quantity: int, key: str, added_by: str,
                    now: datetime) -> tuple[bool, int]:
    """Add stock once per key; returns whether it was added now (False: a replay) and what is left."""
    assert reward.stock is not None
    added = await db.fetchval(
        """INSERT INTO stock_additions (program_id, reward_id, idempotency_key, quantity, added_at, added_by)
           VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING true""",
        program_id, reward.reward_id, key, quantity, now, added_by)
    await _start_stock(db, program_id, reward.reward_id, reward.stock)
    if added:
        left = await db.fetchval("""UPDATE stock SET remaining = remaining + $3 WHERE program_id = $1
                                    AND reward_id = $2 RETURNING remaining""", program_id, reward.reward_id, quantity)
    else:
        left = await db.fetchval("SELECT remaining FROM stock WHERE program_id = $1 AND reward_id = $2",
                                 program_id, reward.reward_id)
    return bool(added), int(left)


async def stock_left(db: asyncpg.Connection, program_id: str) -> dict[str, int]:
    """The running counts of the programme's rewards that have one (a reward never redeemed has its initial)."""
    rows = await db.fetch("SELECT reward_id, remaining FROM stock WHERE program_id = $1", program_id)
    return {r["reward_id"]: int(r["remaining"]) for r in rows}


async def every_stock(db: asyncpg.Connection) -> list[asyncpg.Record]:
    return await db.fetch("SELECT program_id, reward_id, remaining FROM stock")


# --- redemptions ----------------------------------------------------------------------------------------

REDEMPTION = """redemption_id, program_id, member_id, reward_id, kind, quantity, points, status, terms, reason, detail,
    stock_taken, created_at, held_at, hold_expires_at, settled_at, cancelled_at"""


def _redemption(row: asyncpg.Record) -> Redemption:
    terms = _json(row["terms"]) or {}
    return Redemption(
        redemption_id=row["redemption_id"], program_id=row["program_id"], member_id=row["member_id"],
        reward_id=row["reward_id"], kind=row["kind"], quantity=row["quantity"], points=row["points"],
        status=row["status"], reward=Reward.model_validate(terms["reward"]) if terms.get("reward") else None,
        timezone=terms.get("timezone", "UTC"), created_at=row["created_at"], reason=row["reason"],
        detail=row["detail"], stock_taken=row["stock_taken"], held_at=row["held_at"],
        hold_expires_at=row["hold_expires_at"], settled_at=row["settled_at"], cancelled_at=row["cancelled_at"])


def terms_of(redemption: Redemption) -> str:
    reward = redemption.reward.model_dump(mode="json") if redemption.reward is not None else None
    return orjson.dumps({"reward": reward, "timezone": redemption.timezone}).decode()


async def redemption_by_key(db: asyncpg.Connection, program_id: str, key: str) -> tuple[Redemption, bytes] | None:
    row = await db.fetchrow(f"SELECT {REDEMPTION}, request_hash FROM redemptions WHERE program_id = $1 "
                            "AND idempotency_key = $2", program_id, key)
    return (_redemption(row), bytes(row["request_hash"])) if row is not None else None


async def insert_redemption(db: asyncpg.Connection, r: Redemption, tier: str | None, key: str,
                            request_hash: bytes) -> bool:
    """False when the key was taken meanwhile (by a request for another member: the same member's wait on its
    member row and find the first one)."""
    done = await db.fetchval(
        """INSERT INTO redemptions (redemption_id, program_id, member_id, reward_id, kind, quantity, points, tier,
                                    terms, status, reason, detail, idempotency_key, request_hash, stock_taken,
                                    created_at, settled_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10, $11, $12, $13, $14, $15, $16, $17)
           ON CONFLICT (program_id, idempotency_key) DO NOTHING RETURNING true""",
        r.redemption_id, r.program_id, r.member_id, r.reward_id, r.kind, r.quantity, r.points, tier, terms_of(r),
        r.status, r.reason, r.detail, key, request_hash, r.stock_taken, r.created_at, r.settled_at)
    return bool(done)


async def redemption(db: asyncpg.Connection, program_id: str, redemption_id: str,
                     lock: bool = False) -> Redemption | None:
    row = await db.fetchrow(f"SELECT {REDEMPTION} FROM redemptions WHERE program_id = $1 AND redemption_id = $2"
                            + (" FOR UPDATE" if lock else ""), program_id, redemption_id)
    return _redemption(row) if row is not None else None


async def redemptions_for_update(db: asyncpg.Connection, ids: Iterable[str]) -> dict[str, Redemption]:
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    rows = await db.fetch(f"SELECT {REDEMPTION} FROM redemptions WHERE redemption_id = ANY($1::text[]) "
                          "ORDER BY redemption_id FOR UPDATE", wanted)
    return {r["redemption_id"]: _redemption(r) for r in rows}


async def update_redemptions(db: asyncpg.Connection, changed: Sequence[Redemption]) -> None:
    """Store the redemptions' moving parts, one statement for the batch."""
    if not changed:
        return
    await db.execute(
        """UPDATE redemptions r SET status = u.status, reason = u.reason, detail = u.detail, held_at = u.held_at,
               hold_expires_at = u.hold_expires_at, settled_at = u.settled_at, cancelled_at = u.cancelled_at,
               fulfilment = CASE WHEN r.kind = 'coupon' THEN NULL
                                 WHEN u.status = 'completed' THEN 'to_fulfil'
                                 WHEN u.status IN ('rejected', 'cancelled') AND r.fulfilment IS NOT NULL
                                     THEN 'withdrawn'
                                 WHEN u.held_at IS NOT NULL THEN 'to_fulfil' ELSE r.fulfilment END
           FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::timestamptz[],
                       $7::timestamptz[], $8::timestamptz[])
                AS u(id, status, reason, detail, held_at, hold_expires_at, settled_at, cancelled_at)
           WHERE r.redemption_id = u.id""",
        [r.redemption_id for r in changed], [r.status for r in changed], [r.reason for r in changed],
        [r.detail for r in changed], [r.held_at for r in changed], [r.hold_expires_at for r in changed],
        [r.settled_at for r in changed], [r.cancelled_at for r in changed])


async def note_cancel_errors(db: asyncpg.Connection, errors: Sequence[tuple[str, str]]) -> None:
    if errors:
        await db.execute("""UPDATE redemptions r SET cancel_error = u.e FROM unnest($1::text[], $2::text[]) AS u(id, e)
                            WHERE r.redemption_id = u.id""", [i for i, _ in errors], [e for _, e in errors])


async def redemption_view(db: asyncpg.Connection, program_id: str,
                          redemption_id: str) -> tuple[Redemption, tuple[Coupon, bool] | None, str | None] | None:
    """A redemption as answered, in one query: with its coupon (and whether the code was shown) and its
    fulfilment."""
    row = await db.fetchrow(
        f"""SELECT {', '.join(f'r.{c.strip()}' for c in REDEMPTION.split(','))}, r.fulfilment,
                   {', '.join(f'c.{c.strip()} AS c_{c.strip()}' for c in COUPON.split(','))}
            FROM redemptions r LEFT JOIN coupons c USING (redemption_id)
            WHERE r.program_id = $1 AND r.redemption_id = $2""", program_id, redemption_id)
    if row is None:
        return None
    coupon = None
    if row["c_coupon_id"] is not None:
        fields = {c.strip(): row[f"c_{c.strip()}"] for c in COUPON.split(",")}
        coupon = (_coupon(fields), fields["code_shown_at"] is not None)
    return _redemption(row), coupon, row["fulfilment"]


async def oldest_pending(db: asyncpg.Connection) -> tuple[int, datetime | None]:
    row = await db.fetchrow("SELECT count(*) AS n, min(created_at) AS oldest FROM redemptions WHERE status = 'pending'")
    return int(row["n"]), row["oldest"]


# --- coupons --------------------------------------------------------------------------------------------

COUPON = """coupon_id, redemption_id, program_id, member_id, value, currency, issued_at, expires_at, state,
    used_order_id, used_at, code_shown_at"""


def _coupon(row: asyncpg.Record | dict[str, Any]) -> Coupon:
    return Coupon(coupon_id=row["coupon_id"], redemption_id=row["redemption_id"], program_id=row["program_id"],
                  member_id=row["member_id"], value=Decimal(row["value"]), currency=row["currency"],
                  issued_at=row["issued_at"], expires_at=row["expires_at"], state=row["state"],
                  used_order_id=row["used_order_id"], used_at=row["used_at"])


async def insert_coupons(db: asyncpg.Connection, issued: Sequence[tuple[Coupon, bytes, bytes]]) -> None:
    """(coupon, code hash, sealed code)."""
    if not issued:
        return
    coupons = [c for c, _, _ in issued]
    await db.execute(
        """INSERT INTO coupons (coupon_id, redemption_id, program_id, member_id, code_hash, code_sealed, value,
                                currency, issued_at, expires_at, state)
           SELECT *, 'active' FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::bytea[],
                                          $7::numeric[], $8::text[], $9::timestamptz[], $10::timestamptz[])""",
        [c.coupon_id for c in coupons], [c.redemption_id for c in coupons], [c.program_id for c in coupons],
        [c.member_id for c in coupons], [h for _, h, _ in issued], [s for _, _, s in issued],
        [c.value for c in coupons], [c.currency for c in coupons], [c.issued_at for c in coupons],
        [c.expires_at for c in coupons])


async def coupons_of(db: asyncpg.Connection, redemption_ids: Iterable[str],
                     lock: bool = False) -> dict[str, tuple[Coupon, bool]]:
    """The redemptions' coupons, each with whether its code was shown already."""
    wanted = sorted(set(redemption_ids))
    if not wanted:
        return {}
    rows = await db.fetch(f"SELECT {COUPON} FROM coupons WHERE redemption_id = ANY($1::text[]) ORDER BY coupon_id"
                          + (" FOR UPDATE" if lock else ""), wanted)
    return {r["redemption_id"]: (_coupon(r), r["code_shown_at"] is not None) for r in rows}


async def coupon_by_code(db: asyncpg.Connection, code_hash: bytes, lock: bool = False) -> Coupon | None:
    row = await db.fetchrow(f"SELECT {COUPON} FROM coupons WHERE code_hash = $1" + (" FOR UPDATE" if lock else ""),
                            code_hash)
    return _coupon(row) if row is not None else None


async def void_coupons(db: asyncpg.Connection, coupon_ids: Sequence[str], now: datetime) -> None:
    if coupon_ids:
        await db.execute("""UPDATE coupons SET state = 'void', voided_at = $2, code_sealed = NULL
                            WHERE coupon_id = ANY($1::text[]) AND state = 'active'""", list(coupon_ids), now)


async def use_coupon(db: asyncpg.Connection, coupon_id: str, order_id: str, now: datetime) -> None:
    await db.execute("UPDATE coupons SET state = 'used', used_order_id = $2, used_at = $3 WHERE coupon_id = $1",
                     coupon_id, order_id, now)


async def reveal_code(db: asyncpg.Connection, redemption_id: str,
                      now: datetime) -> tuple[str, bytes, bytes] | None:
    """Take the sealed code of the redemption's coupon out of the database, once: (coupon id, sealed code, code
    hash), or None when it was taken before. The row lock makes two answers at once show it to one of them only."""
    row = await db.fetchrow(
        """WITH sealed AS (SELECT coupon_id, code_sealed FROM coupons
                           WHERE redemption_id = $1 AND code_sealed IS NOT NULL FOR UPDATE)
           UPDATE coupons c SET code_sealed = NULL, code_shown_at = $2 FROM sealed
           WHERE c.coupon_id = sealed.coupon_id RETURNING sealed.coupon_id, sealed.code_sealed, c.code_hash""",
        redemption_id, now)
    return (row["coupon_id"], bytes(row["code_sealed"]), bytes(row["code_hash"])) if row is not None else None


# --- payments -------------------------------------------------------------------------------------------

PAYMENT = """payment_id, program_id, member_id, order_id, points, basket_total, currency, points_per_unit, decimals,
    status, created_at, reason, detail, expires_at, capture_points, captured_points, settled_at"""


def _payment(row: asyncpg.Record) -> Payment:
    return Payment(**{k: v for k, v in dict(row).items() if k in Payment.__dataclass_fields__})


async def payment_by_key(db: asyncpg.Connection, program_id: str, key: str) -> tuple[Payment, bytes] | None:
    row = await db.fetchrow(f"SELECT {PAYMENT}, request_hash FROM payments WHERE program_id = $1 "
                            "AND idempotency_key = $2", program_id, key)
    return (_payment(row), bytes(row["request_hash"])) if row is not None else None


async def live_payment_of_order(db: asyncpg.Connection, program_id: str, order_id: str) -> Payment | None:
    row = await db.fetchrow(f"SELECT {PAYMENT} FROM payments WHERE program_id = $1 AND order_id = $2 "
                            "AND status NOT IN ('voided', 'expired', 'rejected')", program_id, order_id)
    return _payment(row) if row is not None else None


async def insert_payment(db: asyncpg.Connection, p: Payment, key: str, request_hash: bytes) -> bool:
    """False when the key, or a live payment of the order, was there first."""
    done = await db.fetchval(
        """INSERT INTO payments (payment_id, program_id, member_id, order_id, points, basket_total, currency,
                                 points_per_unit, decimals, status, reason, detail, idempotency_key, request_hash,
                                 created_at, settled_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
           ON CONFLICT DO NOTHING RETURNING true""",
        p.payment_id, p.program_id, p.member_id, p.order_id, p.points, p.basket_total, p.currency,
        p.points_per_unit, p.decimals, p.status, p.reason, p.detail, key, request_hash, p.created_at, p.settled_at)
    return bool(done)


async def payment(db: asyncpg.Connection, program_id: str, payment_id: str, lock: bool = False) -> Payment | None:
    row = await db.fetchrow(f"SELECT {PAYMENT} FROM payments WHERE program_id = $1 AND payment_id = $2"
                            + (" FOR UPDATE" if lock else ""), program_id, payment_id)
    return _payment(row) if row is not None else None


async def payments_for_update(db: asyncpg.Connection, ids: Iterable[str]) -> dict[str, Payment]:
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    rows = await db.fetch(f"SELECT {PAYMENT} FROM payments WHERE payment_id = ANY($1::text[]) "
                          "ORDER BY payment_id FOR UPDATE", wanted)
    return {r["payment_id"]: _payment(r) for r in rows}


async def live_payments_of_orders(db: asyncpg.Connection, orders: Iterable[tuple[str, str]]) -> dict[tuple[str, str],
                                                                                                     Payment]:
    wanted = sorted(set(orders))
    if not wanted:
        return {}
    rows = await db.fetch(
        f"""SELECT {PAYMENT} FROM payments
            WHERE (program_id, order_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))
              AND status NOT IN ('voided', 'expired', 'rejected')
            ORDER BY payment_id FOR UPDATE""",
        [p for p, _ in wanted], [o for _, o in wanted])
    return {(r["program_id"], r["order_id"]): _payment(r) for r in rows}


async def update_payments(db: asyncpg.Connection, changed: Sequence[Payment]) -> None:
    if not changed:
        return
    await db.execute(
        """UPDATE payments p SET status = u.status, reason = u.reason, detail = u.detail, expires_at = u.expires_at,
               capture_points = u.capture_points, captured_points = u.captured_points, settled_at = u.settled_at
           FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::bigint[], $7::bigint[],
                       $8::timestamptz[])
                AS u(id, status, reason, detail, expires_at, capture_points, captured_points, settled_at)
           WHERE p.payment_id = u.id""",
        [p.payment_id for p in changed], [p.status for p in changed], [p.reason for p in changed],
        [p.detail for p in changed], [p.expires_at for p in changed], [p.capture_points for p in changed],
        [p.captured_points for p in changed], [p.settled_at for p in changed])


async def add_refunds(db: asyncpg.Connection, refunds: Sequence[tuple[str, str, Decimal, datetime]]) -> set[
        tuple[str, str]]:
    """(payment, refund id, total, at); returns the (payment, refund id) stored now (the others were before)."""
    if not refunds:
        return set()
    rows = await db.fetch(
        """INSERT INTO payment_refunds (payment_id, refund_id, total, refunded_at)
           SELECT * FROM unnest($1::text[], $2::text[], $3::numeric[], $4::timestamptz[])
           ON CONFLICT DO NOTHING RETURNING payment_id, refund_id""",
        *map(list, zip(*refunds, strict=True)))
    return {(r["payment_id"], r["refund_id"]) for r in rows}


async def refunds_of(db: asyncpg.Connection, payment_ids: Iterable[str]) -> dict[str, list[asyncpg.Record]]:
    """Each payment's refunds in the order they arrived: refund id, total, points given back (None: not yet)."""
    wanted = sorted(set(payment_ids))
    found: dict[str, list[asyncpg.Record]] = {p: [] for p in wanted}
    if wanted:
        for r in await db.fetch("""SELECT payment_id, refund_id, total, points FROM payment_refunds
                                   WHERE payment_id = ANY($1::text[]) ORDER BY seq""", wanted):
            found[r["payment_id"]].append(r)
    return found


async def set_refund_points(db: asyncpg.Connection, rows: Sequence[tuple[str, str, int]]) -> None:
    if rows:
        await db.execute("""UPDATE payment_refunds r SET points = u.n
                            FROM unnest($1::text[], $2::text[], $3::bigint[]) AS u(p, id, n)
                            WHERE r.payment_id = u.p AND r.refund_id = u.id""",
                         *map(list, zip(*rows, strict=True)))


async def points_returned(db: asyncpg.Connection, payment_id: str) -> int:
    return int(await db.fetchval("SELECT coalesce(sum(points), 0) FROM payment_refunds WHERE payment_id = $1",
                                 payment_id))
