"""Checks the ledger's invariants from its tables: what `jifen ledger verify` and the tests rely on.

Each check recomputes something from the append-only rows and compares it with what the ledger stored or
promised; a problem names the programme, account, entry, lot or hold it was found on. The checks run in
order, entries first, so the first problem reported is the most specific one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg

from services.ledger.domain import EARNING_KINDS, GENESIS_HASH, chain_hash


@dataclass
class Report:
    checked: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


Check = Callable[[asyncpg.Connection, str | None, Report], Awaitable[None]]


async def verify(db: asyncpg.Connection, program_id: str | None = None, *, stop_at_first: bool = False,
                 progress: Callable[[str], None] | None = None) -> Report:
    report = Report()
    for check in CHECKS:
        await check(db, program_id, report)
        if progress is not None and report.checked:
            progress(report.checked[-1])
        if stop_at_first and report.problems:
            break
    return report


async def _chains(db: asyncpg.Connection, program_id: str | None, report: Report) -> None:
    entries = 0
    async with db.transaction():
        cursor = db.cursor(
            """SELECT e.id, e.account_id, e.seq, e.from_account_id, e.to_account_id, e.amount, e.balance_after,
                      e.kind, e.command_key, e.occurred_at, e.prev_hash, e.hash
               FROM entries e WHERE $1::text IS NULL OR e.program_id = $1 ORDER BY e.account_id, e.seq""",
            program_id, prefetch=5000)
        previous: tuple[int, bytes, int] | None = None  # (account, hash, balance)
        async for e in cursor:
            entries += 1
            if previous is None or previous[0] != e["account_id"]:
                prev_hash, prev_balance = GENESIS_HASH, 0
            else:
                prev_hash, prev_balance = previous[1], previous[2]
            signed = e["amount"] if e["to_account_id"] == e["account_id"] else -e["amount"]
            expected = chain_hash(prev_hash, account_id=e["account_id"], seq=e["seq"],
                                  from_account_id=e["from_account_id"], to_account_id=e["to_account_id"],
                                  amount=e["amount"], balance_after=e["balance_after"], kind=e["kind"],
                                  command_key=e["command_key"], occurred_at=e["occurred_at"])
            where = f"entry {e['id']} (account {e['account_id']}, seq {e['seq']})"
            if bytes(e["prev_hash"]) != prev_hash or bytes(e["hash"]) != expected:
                report.problems.append(f"{where}: hash chain broken (stored content does not match its hash)")
            if e["balance_after"] != prev_balance + signed:
                report.problems.append(f"{where}: balance_after {e['balance_after']} but previous "
                                       f"{prev_balance} {signed:+d}")
            previous = (e["account_id"], bytes(e["hash"]), e["balance_after"])
    report.checked.append(f"{entries:,} entries: hash chains and running balances verify")


async def _accounts(db: asyncpg.Connection, program_id: str | None, report: Report) -> None:
    rows = await db.fetch(
        """SELECT a.id, a.program_id, a.member_id, a.balance, a.last_seq, a.lifetime_earned, a.debt,
                  coalesce(sum(CASE WHEN e.to_account_id = a.id THEN e.amount ELSE -e.amount END), 0) AS derived,
                  count(e.id) AS entries, coalesce(min(e.seq), 0) AS min_seq, coalesce(max(e.seq), 0) AS max_seq,
                  coalesce(sum(e.amount) FILTER (WHERE e.kind = ANY($2::text[])), 0)
                  - coalesce(sum(e.amount) FILTER (WHERE e.corrects_entry_id IS NOT NULL
                              AND (SELECT t.kind FROM entries t WHERE t.id = e.corrects_entry_id) = ANY($2::text[])),
                             0) AS earned
           FROM accounts a LEFT JOIN entries e ON e.account_id = a.id
           WHERE a.kind = 'member' AND ($1::text IS NULL OR a.program_id = $1)
           GROUP BY a.id ORDER BY a.id""", program_id, sorted(EARNING_KINDS))
    for r in rows:
        who = f"account {r['id']} ({r['program_id']}/{r['member_id']})"
        if r["balance"] != r["derived"]:
            report.problems.append(f"{who}: stored balance {r['balance']} but entries sum to {r['derived']}")
        if r["entries"] and (r["min_seq"] != 1 or r["max_seq"] != r["entries"] or r["last_seq"] != r["max_seq"]):
            report.problems.append(f"{who}: sequence not gapless (min {r['min_seq']}, max {r['max_seq']}, "
                                   f"{r['entries']} entries, account tip {r['last_seq']})")
        if r["lifetime_earned"] != r["earned"]:
            report.problems.append(f"{who}: lifetime_earned {r['lifetime_earned']} but earning entries net "
                                   f"{r['earned']}")
    report.checked.append(f"{len(rows):,} member accounts: balances equal their entries, sequences gapless from 1, "
                          "lifetime earned equals earning entries less their reversals")


async def _zero_sum(db: asyncpg.Connection, program_id: str | None, report: Report) -> None:
    # Member accounts by their stored balances, system accounts by their entries: a drift on either side shows.
    rows = await db.fetch(
        """WITH members AS (
               SELECT program_id, sum(balance) AS total FROM accounts
               WHERE kind = 'member' AND ($1::text IS NULL OR program_id = $1) GROUP BY program_id),
           legs AS (
               SELECT to_account_id AS account_id, amount FROM entries WHERE $1::text IS NULL OR program_id = $1
               UNION ALL
               SELECT from_account_id, -amount FROM entries WHERE $1::text IS NULL OR program_id = $1),
           system AS (
               SELECT a.program_id, sum(l.amount) AS total
               FROM legs l JOIN accounts a ON a.id = l.account_id WHERE a.kind <> 'member' GROUP BY a.program_id)
           SELECT coalesce(m.program_id, s.program_id) AS program_id,
                  coalesce(m.total, 0) AS members, coalesce(s.total, 0) AS system
           FROM members m FULL JOIN system s ON s.program_id = m.program_id""", program_id)
    for r in rows:
        if r["members"] + r["system"] != 0:
            report.problems.append(f"programme {r['program_id']}: member balances {r['members']} and system "
                                   f"accounts {r['system']} do not sum to zero")
    report.checked.append(f"{len(rows):,} programmes: accounts sum to zero")


async def _lots(db: asyncpg.Connection, program_id: str | None, report: Report) -> None:
    rows = await db.fetch(
        """SELECT l.id, l.account_id, l.amount,
                  coalesce((SELECT sum(x.amount) FROM allocations x WHERE x.lot_id = l.id), 0) AS used,
                  coalesce((SELECT sum(r.amount) FROM hold_reservations r WHERE r.lot_id = l.id
                              AND NOT EXISTS (SELECT 1 FROM hold_resolutions s WHERE s.hold_id = r.hold_id)), 0)
                      AS reserved,
                  EXISTS (SELECT 1 FROM lot_closures c WHERE c.lot_id = l.id) AS closed
           FROM lots l JOIN accounts a ON a.id = l.account_id
           WHERE $1::text IS NULL OR a.program_id = $1""", program_id)
    for r in rows:
        where = f"lot {r['id']} (account {r['account_id']})"
        remainder = r["amount"] - r["used"]
        if remainder < 0 or remainder < r["reserved"]:
            report.problems.append(f"{where}: amount {r['amount']}, allocated {r['used']}, reserved by open holds "
                                   f"{r['reserved']}: remainder below zero")
        if r["closed"] != (remainder == 0):
            report.problems.append(f"{where}: marked {'closed' if r['closed'] else 'open'} with remainder {remainder}")
    over = await db.fetch(
        """SELECT e.id, e.account_id, e.amount, sum(x.amount) AS allocated FROM entries e
           JOIN allocations x ON x.entry_id = e.id
           WHERE $1::text IS NULL OR e.program_id = $1
           GROUP BY e.id HAVING sum(x.amount) > e.amount""", program_id)
    report.problems += [f"entry {r['id']} (account {r['account_id']}): lots paid {r['allocated']} for an entry of "
                        f"{r['amount']}" for r in over]
    # Each member's balance is its lots' remainders less what it owes.
    accounts = await db.fetch(
        """SELECT a.id, a.balance, a.debt,
                  coalesce((SELECT sum(l.amount) FROM lots l WHERE l.account_id = a.id), 0)
                  - coalesce((SELECT sum(x.amount) FROM allocations x JOIN lots l ON l.id = x.lot_id
                              WHERE l.account_id = a.id), 0) AS remainders,
                  coalesce((SELECT sum(e.amount) - coalesce(sum((SELECT sum(x.amount) FROM allocations x
                                                                 WHERE x.entry_id = d.entry_id)), 0)
                            FROM debts d JOIN entries e ON e.id = d.entry_id WHERE d.account_id = a.id), 0) AS owed
           FROM accounts a WHERE a.kind = 'member' AND ($1::text IS NULL OR a.program_id = $1)""", program_id)
    for r in accounts:
        who = f"account {r['id']}"
        if r["debt"] != r["owed"]:
            report.problems.append(f"{who}: stored debt {r['debt']} but its debts leave {r['owed']} unpaid")
        if r["balance"] != r["remainders"] - r["owed"]:
            report.problems.append(f"{who}: balance {r['balance']} but lot remainders {r['remainders']} less debt "
                                   f"{r['owed']}")
    report.checked.append(f"{len(rows):,} lots: remainders ≥ 0 and ≥ what open holds reserve; closures match; "
                          f"{len(accounts):,} balances equal lot remainders less debt")


async def _holds(db: asyncpg.Connection, program_id: str | None, report: Report) -> None:
    rows = await db.fetch(
        """SELECT h.hold_id, h.account_id, h.amount,
                  (SELECT count(*) FROM hold_resolutions s WHERE s.hold_id = h.hold_id) AS resolutions,
                  (SELECT s.captured FROM hold_resolutions s WHERE s.hold_id = h.hold_id LIMIT 1) AS captured,
                  (SELECT e.amount FROM hold_resolutions s JOIN entries e ON e.id = s.entry_id
                   WHERE s.hold_id = h.hold_id LIMIT 1) AS capture_entry,
                  coalesce((SELECT sum(r.amount) FROM hold_reservations r WHERE r.hold_id = h.hold_id), 0) AS reserved
           FROM holds h WHERE $1::text IS NULL OR h.program_id = $1""", program_id)
    for r in rows:
        where = f"hold {r['hold_id']!r} (account {r['account_id']})"
        if r["resolutions"] > 1:
            report.problems.append(f"{where}: resolved {r['resolutions']} times")
        if r["reserved"] != r["amount"]:
            report.problems.append(f"{where}: reserves {r['reserved']} for a hold of {r['amount']}")
        if r["captured"] is not None and (r["captured"] > r["amount"]
                                          or (r["captured"] or 0) != (r["capture_entry"] or 0)):
            report.problems.append(f"{where}: captured {r['captured']} of {r['amount']} with an entry of "
                                   f"{r['capture_entry']}")
    report.checked.append(f"{len(rows):,} holds: resolved at most once, reservations equal the hold, "
                          "captures within the hold")


async def _totals(db: asyncpg.Connection, program_id: str | None, report: Report) -> None:
    """The programme totals kept per batch equal the entries they sum."""
    if not await db.fetchval("SELECT to_regclass('programme_totals') IS NOT NULL"):
        return
    rows = await db.fetch(
        """WITH derived AS (
               SELECT program_id, kind, count(*) AS entries,
                      coalesce(sum(amount) FILTER (WHERE to_account_id = account_id), 0) AS points_in,
                      coalesce(sum(amount) FILTER (WHERE to_account_id <> account_id), 0) AS points_out
               FROM entries WHERE $1::text IS NULL OR program_id = $1 GROUP BY program_id, kind)
           SELECT coalesce(d.program_id, t.program_id) AS program_id, coalesce(d.kind, t.kind) AS kind,
                  d.entries AS d_entries, d.points_in AS d_in, d.points_out AS d_out,
                  t.entries AS t_entries, t.points_in AS t_in, t.points_out AS t_out
           FROM derived d FULL JOIN (SELECT * FROM programme_totals WHERE $1::text IS NULL OR program_id = $1) t
             ON t.program_id = d.program_id AND t.kind = d.kind""", program_id)
    for r in rows:
        if (r["d_entries"], r["d_in"], r["d_out"]) != (r["t_entries"], r["t_in"], r["t_out"]):
            report.problems.append(
                f"programme {r['program_id']}: totals of {r['kind']} entries say {r['t_entries']} entries, "
                f"{r['t_in']} in, {r['t_out']} out; the entries sum to {r['d_entries']}, {r['d_in']}, {r['d_out']}")
    report.checked.append(f"{len(rows)} programme totals (by entry kind) equal their entries")


CHECKS: list[Check] = [_chains, _accounts, _zero_sum, _lots, _holds, _totals]
