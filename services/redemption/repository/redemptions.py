"""Redemptions: recorded by a request (with its idempotency key), moved by the ledger's answers, read by the
limits (a member's history) and the answers; rejected ones pruned once past their retention."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from services.redemption.domain import Coupon, Past, Redemption
from services.redemption.programme import Reward
from services.redemption.repository.coupons import COUPON, read_coupon


def _json(value: Any) -> Any:
    """A jsonb column as read: text on a bare asyncpg connection, already decoded on an engine's."""
    return orjson.loads(value) if isinstance(value, str | bytes) else value

async def history(db: asyncpg.Connection, program_id: str, member_id: str, since: datetime | None) -> list[Past]:
    """The member's redemptions that count towards limits (pending or completed), from `since` (None: all)."""
    rows = await db.fetch(
        """SELECT reward_id, quantity, points, created_at FROM redemptions
           WHERE program_id = $1 AND member_id = $2 AND status IN ('pending', 'completed')
             AND ($3::timestamptz IS NULL OR created_at >= $3)""", program_id, member_id, since)
    return [Past(r["reward_id"], r["quantity"], r["points"], r["created_at"]) for r in rows]


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
        hold_expires_at=row["hold_expires_at"], settled_at=row["settled_at"], cancelled_at=row["cancelled_at"],
        arms=terms.get("arms") or {})


def terms_of(redemption: Redemption) -> str:
    reward = redemption.reward.model_dump(mode="json") if redemption.reward is not None else None
    terms: dict[str, Any] = {"reward": reward, "timezone": redemption.timezone}
    if redemption.arms:  # the arm that priced it, read back with the terms (none: the terms as before arms existed)
        terms["arms"] = redemption.arms
    return orjson.dumps(terms).decode()


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
        coupon = (read_coupon(fields), fields["code_shown_at"] is not None)
    return _redemption(row), coupon, row["fulfilment"]


async def oldest_pending(db: asyncpg.Connection) -> tuple[int, datetime | None]:
    row = await db.fetchrow("SELECT count(*) AS n, min(created_at) AS oldest FROM redemptions WHERE status = 'pending'")
    return int(row["n"]), row["oldest"]



async def prune_rejected(db: asyncpg.Connection, settled_before: datetime, limit: int) -> int:
    """Delete a page of redemptions rejected before `settled_before`, oldest first, with their void coupons (a
    coupon issued before its hold expired): a rejected redemption took no points and counts towards no limit or
    stock, and nothing else refers to it."""
    return int(await db.fetchval(
        """WITH old AS (SELECT redemption_id FROM redemptions WHERE status = 'rejected' AND settled_at < $1
                        ORDER BY settled_at LIMIT $2 FOR UPDATE SKIP LOCKED),
                void AS (DELETE FROM coupons c USING old WHERE c.redemption_id = old.redemption_id),
                gone AS (DELETE FROM redemptions r USING old WHERE r.redemption_id = old.redemption_id RETURNING 1)
           SELECT count(*) FROM gone""", settled_before, limit))
