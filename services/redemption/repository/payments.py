"""Points payments and the refunds of their orders (what each refund gave back)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal

import asyncpg

from services.redemption.paying import Payment

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
