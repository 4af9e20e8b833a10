"""A programme's points as a whole: issued, redeemed, expired, adjusted and outstanding, exact, from the totals the
ledger keeps per batch (`programme_totals`); what is pending and what expires month by month, from the lots. The
job that exports them for Prometheus is in jobs.py."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from services.ledger.repository import LOT_RESERVED, LOT_USED

MEASURES = ("issued", "redeemed", "expired", "adjusted", "outstanding")


@dataclass(frozen=True)
class Figures:
    """A programme's points. `issued`: earn credits less their reversals and cancels; `redeemed`: spent less what
    cancelled redemptions gave back; `expired`; `adjusted`: manual credits less manual debits; `outstanding`: what
    members hold (the sum of their balances, debts included), which the others add up to with transfers netting
    to zero."""

    program_id: str
    issued: int
    redeemed: int
    expired: int
    adjusted: int
    outstanding: int
    entries: int

    def get(self, measure: str) -> int:
        value: int = getattr(self, measure)
        return value


def figures(program_id: str, rows: list[asyncpg.Record] | list[dict[str, Any]]) -> Figures:
    by = {r["kind"]: (int(r["entries"]), int(r["points_in"]), int(r["points_out"])) for r in rows}

    def of(kind: str, part: int) -> int:
        return by.get(kind, (0, 0, 0))[part]

    # A reversal that takes points out corrects a credit (an earn, nearly always); one that brings points back
    # corrects a debit (a redemption cancelled).
    issued = of("earn", 1) - of("reversal", 2) - of("cancel", 2)
    redeemed = of("redeem", 2) - of("reversal", 1)
    adjusted = of("adjust_credit", 1) - of("adjust_debit", 2)
    outstanding = sum(i - o for _, i, o in by.values())
    return Figures(program_id, issued, redeemed, of("expire", 2), adjusted, outstanding,
                   sum(n for n, _, _ in by.values()))


async def programme_figures(db: asyncpg.Connection) -> list[Figures]:
    rows = await db.fetch("SELECT program_id, kind, entries, points_in, points_out FROM programme_totals "
                          "ORDER BY program_id, kind")
    grouped: dict[str, list[asyncpg.Record]] = {}
    for r in rows:
        grouped.setdefault(r["program_id"], []).append(r)
    return [figures(p, rs) for p, rs in grouped.items()]


async def members_of(db: asyncpg.Connection, program_id: str) -> int:
    return int(await db.fetchval("SELECT count(*) FROM accounts WHERE program_id = $1 AND kind = 'member'",
                                 program_id))


async def pending_and_expiring(db: asyncpg.Connection, program_id: str, now: datetime, zone: str = "UTC",
                               month: str | None = None) -> tuple[int, list[tuple[str, int]], int]:
    """Points not yet available (the return window open); what the open lots will expire, every month from now on
    (months of the programme's time zone; only `month`, YYYY-MM, when given); and the points of open lots that never
    expire."""
    pending = await db.fetchval(
        f"""SELECT coalesce(sum(l.amount - {LOT_USED} - {LOT_RESERVED}), 0)
            FROM lots l JOIN accounts a ON a.id = l.account_id
            WHERE a.program_id = $1 AND l.available_at > $2
              AND NOT EXISTS (SELECT 1 FROM lot_closures c WHERE c.lot_id = l.id)""", program_id, now)
    rows = await db.fetch(
        f"""SELECT to_char(date_trunc('month', l.expires_at AT TIME ZONE $3), 'YYYY-MM') AS month,
                   sum(l.amount - {LOT_USED}) AS points
            FROM lots l JOIN accounts a ON a.id = l.account_id
            WHERE a.program_id = $1 AND l.expires_at > $2
              AND ($4::text IS NULL OR to_char(l.expires_at AT TIME ZONE $3, 'YYYY-MM') = $4)
              AND NOT EXISTS (SELECT 1 FROM lot_closures c WHERE c.lot_id = l.id)
            GROUP BY 1 ORDER BY 1""", program_id, now, zone, month)
    never = await db.fetchval(
        f"""SELECT coalesce(sum(l.amount - {LOT_USED}), 0)
            FROM lots l JOIN accounts a ON a.id = l.account_id
            WHERE a.program_id = $1 AND l.expires_at IS NULL
              AND NOT EXISTS (SELECT 1 FROM lot_closures c WHERE c.lot_id = l.id)""", program_id)
    return int(pending), [(r["month"], int(r["points"])) for r in rows if r["points"]], int(never)
