"""Earn's tables: orders with what each rule earned per line, and the refunds taken back from them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from services.earn.activity import granted
from services.earn.domain import MemberTier
from services.earn.refunds import Earned, Order
from shared.consumer import Retryable
from shared.contracts.purchases import PurchaseLine, PurchaseRefunded
from shared.contracts.tasks import PointsAwarded

TierHistory = dict[tuple[str, str], list[tuple[datetime, MemberTier]]]


def _json(value: Any) -> Any:
    """jsonb as read: text on a bare asyncpg connection, already decoded on the engine's (SQLAlchemy sets a codec)."""
    return orjson.loads(value) if isinstance(value, str | bytes) else value


@dataclass
class NewOrder:
    program_id: str
    order: Order
    event_id: str
    occurred_at: datetime


async def order_events(db: asyncpg.Connection, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """The purchase event already recorded for each (programme, order) that has one."""
    if not keys:
        return {}
    rows = await db.fetch(
        """SELECT o.program_id, o.order_id, o.event_id FROM orders o
           JOIN unnest($1::text[], $2::text[]) AS k(p, o) ON o.program_id = k.p AND o.order_id = k.o""",
        [k[0] for k in keys], [k[1] for k in keys])
    return {(r["program_id"], r["order_id"]): r["event_id"] for r in rows}


async def add_orders(db: asyncpg.Connection, orders: Sequence[NewOrder]) -> None:
    if not orders:
        return
    await db.execute(
        """INSERT INTO orders (program_id, order_id, member_id, event_id, total, lines, occurred_at)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::numeric[], $6::jsonb[],
                                $7::timestamptz[])""",
        [o.program_id for o in orders], [o.order.order_id for o in orders], [o.order.member_id for o in orders],
        [o.event_id for o in orders], [o.order.total for o in orders],
        [orjson.dumps([[sku, str(total)] for sku, total in o.order.lines]).decode() for o in orders],
        [o.occurred_at for o in orders])
    earnings = [(o.program_id, o.order.order_id, e) for o in orders for e in o.order.earned]
    if earnings:
        await db.execute(
            """INSERT INTO order_earnings (program_id, order_id, rule_id, credit_key, points, line_points)
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::jsonb[])""",
            [p for p, _, _ in earnings], [o for _, o, _ in earnings], [e.rule_id for _, _, e in earnings],
            [e.credit_key for _, _, e in earnings], [e.points for _, _, e in earnings],
            [orjson.dumps({str(i): str(v) for i, v in e.line_points.items()}).decode() for _, _, e in earnings])


async def order_with_refunds(db: asyncpg.Connection, program_id: str,
                             order_id: str) -> tuple[Order, list[PurchaseRefunded]] | None:
    row = await db.fetchrow("SELECT member_id, total, lines, occurred_at FROM orders WHERE program_id = $1 "
                            "AND order_id = $2", program_id, order_id)
    if row is None:
        return None
    earned = [Earned(r["rule_id"], r["credit_key"], r["points"],
                     {int(i): Decimal(v) for i, v in _json(r["line_points"]).items()})
              for r in await db.fetch("""SELECT rule_id, credit_key, points, line_points FROM order_earnings
                                         WHERE program_id = $1 AND order_id = $2 ORDER BY rule_id""",
                                      program_id, order_id)]
    lines = [(sku, Decimal(total)) for sku, total in _json(row["lines"])]
    refunds = [
        PurchaseRefunded(program_id=program_id, member_id=row["member_id"], order_id=order_id,
                         refund_id=r["refund_id"], currency="XXX", total=r["total"],
                         lines=[PurchaseLine(sku=sku, quantity=Decimal(1), unit_price=Decimal(t), total=Decimal(t))
                                for sku, t in _json(r["lines"])] if r["lines"] else None)
        for r in await db.fetch("""SELECT refund_id, total, lines FROM refunds
                                   WHERE program_id = $1 AND order_id = $2 ORDER BY occurred_at, refund_id""",
                                program_id, order_id)]
    return Order(order_id, row["member_id"], row["total"], lines, earned, row["occurred_at"]), refunds


async def add_refund(db: asyncpg.Connection, program_id: str, refund: PurchaseRefunded, event_id: str,
                     taken_back: dict[str, int], occurred_at: datetime) -> None:
    await db.execute(
        """INSERT INTO refunds (program_id, refund_id, order_id, event_id, total, lines, taken_back, occurred_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
        program_id, refund.refund_id, refund.order_id, event_id, refund.total,
        orjson.dumps([[ln.sku, str(ln.total)] for ln in refund.lines]).decode() if refund.lines else None,
        orjson.dumps(taken_back).decode(), occurred_at)


async def check_in(db: asyncpg.Connection, program_id: str, member_id: str, day: date, event_id: str,
                   lookback_days: int) -> set[date] | None:
    """Record the day's check-in; None if the member checked in that day already, else the earlier days within
    the lookback (to measure the streak)."""
    added = await db.fetchval(
        """INSERT INTO checkins (program_id, member_id, day, event_id) VALUES ($1, $2, $3, $4)
           ON CONFLICT DO NOTHING RETURNING 1""", program_id, member_id, day, event_id)
    if added is None:
        return None
    rows = await db.fetch(
        """SELECT day FROM checkins WHERE program_id = $1 AND member_id = $2 AND day < $3 AND day >= $4""",
        program_id, member_id, day, day - timedelta(days=lookback_days))
    return {r["day"] for r in rows}


async def use_rule(db: asyncpg.Connection, program_id: str, member_id: str, rule_id: str, period: str,
                   cap: int) -> bool:
    """Count one use of a capped rule in its period, unless the cap is full (then False, nothing counted)."""
    used = await db.fetchval(
        """INSERT INTO rule_usage (program_id, member_id, rule_id, period, used) VALUES ($1, $2, $3, $4, 1)
           ON CONFLICT (program_id, member_id, rule_id, period)
           DO UPDATE SET used = rule_usage.used + 1 WHERE rule_usage.used < $5
           RETURNING used""", program_id, member_id, rule_id, period, cap)
    return used is not None


async def record_capped(db: asyncpg.Connection, program_id: str, member_id: str, rule_id: str, event_id: str,
                        period: str, why: str, at: datetime) -> None:
    await db.execute(
        """INSERT INTO capped (program_id, member_id, rule_id, event_id, period, why, at)
           VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING""",
        program_id, member_id, rule_id, event_id, period, why, at)


async def enrol(db: asyncpg.Connection, program_id: str, member_id: str, birthday: str | None,
                enrolled_at: datetime, at: datetime) -> None:
    """Record or update a member; the birthday's set time moves only when the birthday changes."""
    await db.execute(
        """INSERT INTO members (program_id, member_id, birthday, birthday_set_at, enrolled_at)
           VALUES ($1, $2, $3, CASE WHEN $3::text IS NULL THEN NULL ELSE $5::timestamptz END, $4)
           ON CONFLICT (program_id, member_id) DO UPDATE SET
               birthday = coalesce(EXCLUDED.birthday, members.birthday),
               birthday_set_at = CASE WHEN EXCLUDED.birthday IS NOT NULL
                                           AND EXCLUDED.birthday IS DISTINCT FROM members.birthday
                                      THEN EXCLUDED.birthday_set_at ELSE members.birthday_set_at END""",
        program_id, member_id, birthday, enrolled_at, at)


async def birthdays_due(db: asyncpg.Connection, program_id: str, days: Sequence[str], year: int,
                        limit: int) -> list[asyncpg.Record]:
    """Members of the programme whose birthday is one of `days` (MM-DD) and not paid for `year`."""
    return await db.fetch(
        """SELECT m.member_id, m.birthday, m.birthday_set_at FROM members m
           WHERE m.program_id = $1 AND m.birthday = ANY($2::text[])
             AND NOT EXISTS (SELECT 1 FROM birthdays_paid p WHERE p.program_id = m.program_id
                             AND p.member_id = m.member_id AND p.year = $3)
           ORDER BY m.member_id LIMIT $4""", program_id, list(days), year, limit)


async def birthday_paid(db: asyncpg.Connection, program_id: str, member_id: str, year: int) -> None:
    await db.execute("INSERT INTO birthdays_paid (program_id, member_id, year) VALUES ($1, $2, $3) "
                     "ON CONFLICT DO NOTHING", program_id, member_id, year)


CapKey = tuple[str, str, str, str]  # program, member, rule, period
BudgetKey = tuple[str, str]  # program, period


class CapRaced(Retryable):
    """Another consumer (during a rebalance, or another earn sharing a budget) used a limit this batch read
    before it: the batch must be retried, reading the limit anew under its lock."""


class Limit:
    """One table of limits a batch draws on (a member's points per rule per period, or a programme's budget per
    period): each row it uses is read once and locked (`FOR UPDATE`), grants are counted in memory, and the sums
    are written back in one statement. A row that did not exist cannot be locked, so the write-back checks that
    each row now holds exactly what this batch read plus what it granted; if a concurrent writer got there first
    it raises `CapRaced` and the batch is retried, so a limit holds however consumers overlap. (The check is on
    the sum, not on a limit: events of one batch may be judged by programme versions with different limits.)"""

    def __init__(self, db: asyncpg.Connection, table: str, key: tuple[str, ...]) -> None:
        self.db, self.table, self.key = db, table, key
        self.used: dict[tuple[str, ...], int] = {}  # what the database holds plus what this batch granted
        self.added: dict[tuple[str, ...], int] = {}  # granted and not yet written back
        columns = ", ".join(key)
        keys = ", ".join(f"${n}::text[]" for n in range(1, len(key) + 1))
        on = " AND ".join(f"t.{c} = k.{c}" for c in key)
        n = len(key)
        # The table and column names are this module's constants, never input.
        self._select = (f"SELECT {', '.join(f't.{c}' for c in key)}, t.points FROM {table} t "
                        f"JOIN unnest({keys}) AS k({columns}) ON {on} ORDER BY {columns} FOR UPDATE OF t")
        self._write_back = (
            f"WITH t AS (INSERT INTO {table} ({columns}, points) SELECT * FROM unnest({keys}, ${n + 1}::bigint[]) "
            f"ON CONFLICT ({columns}) DO UPDATE SET points = {table}.points + EXCLUDED.points "
            f"RETURNING {columns}, points) "
            f"SELECT count(*) FROM t JOIN unnest({keys}, ${n + 2}::bigint[]) AS k({columns}, total) ON {on} "
            f"WHERE t.points <> k.total")

    async def load(self, keys: Sequence[tuple[str, ...]]) -> None:
        """Read (and lock) rows the batch may use, in key order so that batches lock in one order."""
        new = sorted(set(keys) - self.used.keys())
        if not new:
            return
        rows = await self.db.fetch(self._select, *(list(column) for column in zip(*new, strict=True)))
        self.used.update(dict.fromkeys(new, 0))
        self.used.update({tuple(r)[:-1]: r["points"] for r in rows})

    async def take(self, key: tuple[str, ...], wanted: int, limit: int) -> int:
        """Grant what the limit still allows of `wanted`, and count it."""
        await self.load([key])
        given = granted(wanted, self.used[key], limit)
        self.used[key] += given
        self.added[key] = self.added.get(key, 0) + given
        return given

    async def flush(self) -> None:
        added, self.added = self.added, {}
        keys = sorted(k for k, points in added.items() if points)
        if not keys:
            return
        raced = await self.db.fetchval(self._write_back, *(list(column) for column in zip(*keys, strict=True)),
                                       [added[k] for k in keys], [self.used[k] for k in keys])
        if raced:
            raise CapRaced(f"{raced} row(s) of {self.table} were used by another consumer during this batch")


class Usage:
    """A batch's caps (points per member per rule per period) and budgets (points per programme per period)."""

    def __init__(self, db: asyncpg.Connection) -> None:
        self.caps = Limit(db, "points_usage", ("program_id", "member_id", "rule_id", "period"))
        self.budgets = Limit(db, "budgets", ("program_id", "period"))

    async def load(self, caps: Sequence[CapKey], budgets: Sequence[BudgetKey]) -> None:
        await self.caps.load(caps)
        await self.budgets.load(budgets)

    async def take_cap(self, key: CapKey, wanted: int, limit: int) -> int:
        return await self.caps.take(key, wanted, limit)

    async def take_budget(self, key: BudgetKey, wanted: int, limit: int) -> int:
        return await self.budgets.take(key, wanted, limit)

    async def flush(self) -> None:
        await self.caps.flush()
        await self.budgets.flush()
async def tier_histories(db: asyncpg.Connection, keys: Sequence[tuple[str, str]]) -> TierHistory:
    """Each (programme, member)'s tiers with the time each took effect, oldest first (members with none: absent)."""
    if not keys:
        return {}
    rows = await db.fetch(
        """SELECT t.program_id, t.member_id, t.effective_at, t.tier, t.multiplier FROM member_tiers t
           JOIN (SELECT DISTINCT * FROM unnest($1::text[], $2::text[])) AS k(p, m)
             ON t.program_id = k.p AND t.member_id = k.m
           ORDER BY t.effective_at, t.event_id""", [k[0] for k in keys], [k[1] for k in keys])
    history: TierHistory = {}
    for r in rows:
        history.setdefault((r["program_id"], r["member_id"]), []).append(
            (r["effective_at"], MemberTier(r["tier"], r["multiplier"])))
    return history


async def add_tier(db: asyncpg.Connection, program_id: str, member_id: str, effective_at: datetime, event_id: str,
                   tier: MemberTier) -> None:
    await db.execute(
        """INSERT INTO member_tiers (program_id, member_id, effective_at, event_id, tier, multiplier)
           VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING""",
        program_id, member_id, effective_at, event_id, tier.tier, tier.multiplier)


async def record_award(db: asyncpg.Connection, award: PointsAwarded, event_id: str, source: str,
                       at: datetime) -> str | None:
    """Record a manual award as paid; if its award id was paid before, the event that paid it (else None)."""
    added = await db.fetchval(
        """INSERT INTO manual_awards (program_id, award_id, event_id, member_id, points, source, awarded_by, reason, at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING RETURNING 1""",
        award.program_id, award.award_id, event_id, award.member_id, award.points, source, award.awarded_by,
        award.reason, at)
    if added is not None:
        return None
    return await db.fetchval("SELECT event_id FROM manual_awards WHERE program_id = $1 AND award_id = $2",
                             award.program_id, award.award_id)
