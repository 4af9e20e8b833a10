"""Coupons: found by the hash of their code; the sealed code kept until its reveal window closes."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from services.redemption.domain import Coupon

COUPON = """coupon_id, redemption_id, program_id, member_id, value, currency, issued_at, expires_at, state,
    used_order_id, used_at, code_shown_at"""


def read_coupon(row: asyncpg.Record | dict[str, Any]) -> Coupon:
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
    return {r["redemption_id"]: (read_coupon(r), r["code_shown_at"] is not None) for r in rows}


async def coupon_by_code(db: asyncpg.Connection, code_hash: bytes, lock: bool = False) -> Coupon | None:
    row = await db.fetchrow(f"SELECT {COUPON} FROM coupons WHERE code_hash = $1" + (" FOR UPDATE" if lock else ""),
                            code_hash)
    return read_coupon(row) if row is not None else None


async def void_coupons(db: asyncpg.Connection, coupon_ids: Sequence[str], now: datetime) -> None:
    if coupon_ids:
        await db.execute("""UPDATE coupons SET state = 'void', voided_at = $2, code_sealed = NULL
                            WHERE coupon_id = ANY($1::text[]) AND state = 'active'""", list(coupon_ids), now)


async def use_coupon(db: asyncpg.Connection, coupon_id: str, order_id: str, now: datetime) -> None:
    await db.execute("UPDATE coupons SET state = 'used', used_order_id = $2, used_at = $3 WHERE coupon_id = $1",
                     coupon_id, order_id, now)


async def reveal_code(db: asyncpg.Connection, redemption_id: str, now: datetime,
                      keep: bool) -> tuple[str, bytes, bytes] | None:
    """Mark the redemption's coupon code shown, once, and hand over its sealed copy: (coupon id, sealed code, code
    hash), or None when it was shown before. The copy stays (`keep`) only for the reveal window (`forget_codes`
    drops it). The row lock makes two answers at once show it to one of them only."""
    row = await db.fetchrow(
        """WITH sealed AS (SELECT coupon_id, code_sealed FROM coupons
                           WHERE redemption_id = $1 AND code_sealed IS NOT NULL AND code_shown_at IS NULL FOR UPDATE)
           UPDATE coupons c SET code_shown_at = $2, code_sealed = CASE WHEN $3::boolean THEN c.code_sealed END
           FROM sealed WHERE c.coupon_id = sealed.coupon_id
           RETURNING sealed.coupon_id, sealed.code_sealed AS sealed, c.code_hash""",
        redemption_id, now, keep)
    return (row["coupon_id"], bytes(row["sealed"]), bytes(row["code_hash"])) if row is not None else None


async def shown_code(db: asyncpg.Connection, redemption_id: str, since: datetime) -> tuple[str, bytes, bytes] | None:
    """The sealed copy of a code shown after `since` (inside its reveal window), for the same request again."""
    row = await db.fetchrow(
        """SELECT coupon_id, code_sealed, code_hash FROM coupons
           WHERE redemption_id = $1 AND code_sealed IS NOT NULL AND code_shown_at > $2""", redemption_id, since)
    return (row["coupon_id"], bytes(row["code_sealed"]), bytes(row["code_hash"])) if row is not None else None


async def forget_codes(db: asyncpg.Connection, shown_before: datetime, limit: int) -> int:
    """Drop the sealed copies of codes shown before `shown_before` (their reveal window closed): a page of them."""
    return int(await db.fetchval(
        """WITH old AS (SELECT coupon_id FROM coupons WHERE code_sealed IS NOT NULL AND code_shown_at < $1
                        ORDER BY code_shown_at LIMIT $2 FOR UPDATE SKIP LOCKED),
                gone AS (UPDATE coupons c SET code_sealed = NULL FROM old WHERE c.coupon_id = old.coupon_id
                         RETURNING 1)
           SELECT count(*) FROM gone""", shown_before, limit))
