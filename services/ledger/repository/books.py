"""Members' books: the accounts with their open lots, holds and debts, loaded for a batch in a few queries and
stored (what the batch added, the programme totals, the accounts' tips) with one multi-row statement per table."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import asyncpg
import orjson

from services.ledger.domain import (
    Account,
    Additions,
    DebtState,
    Entry,
    HoldState,
    LotState,
    MemberBook,
    spend_order,
)
from services.ledger.repository import LOT_RESERVED, LOT_USED
from services.ledger.rules import StoredEntry

AccountKey = tuple[str, str, str]  # (program_id, kind, member_id)


async def accounts(db: asyncpg.Connection, keys: Iterable[AccountKey]) -> dict[AccountKey, asyncpg.Record]:
    """Load accounts by key, creating the missing ones (in key order, so concurrent creators cannot deadlock)."""
    wanted = sorted(set(keys))
    found = await _select_accounts(db, wanted)
    missing = [k for k in wanted if k not in found]
    if missing:
        await db.execute(
            """INSERT INTO accounts (program_id, kind, member_id)
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) ON CONFLICT DO NOTHING""",
            [k[0] for k in missing], [k[1] for k in missing], [k[2] for k in missing])
        found.update(await _select_accounts(db, missing))
    return found


async def _select_accounts(db: asyncpg.Connection, keys: Sequence[AccountKey]) -> dict[AccountKey, asyncpg.Record]:
    rows = await db.fetch(
        """SELECT a.id, a.program_id, a.kind, a.member_id, a.balance, a.lifetime_earned, a.last_seq, a.last_hash,
                  a.debt, a.version
           FROM accounts a JOIN unnest($1::text[], $2::text[], $3::text[]) AS u(p, k, m)
             ON a.program_id = u.p AND a.kind = u.k AND a.member_id = u.m""",
        [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys])
    return {(r["program_id"], r["kind"], r["member_id"]): r for r in rows}


def member_account(row: asyncpg.Record) -> Account:
    return Account(id=row["id"], program_id=row["program_id"], member_id=row["member_id"], balance=row["balance"],
                   lifetime_earned=row["lifetime_earned"], seq=row["last_seq"], last_hash=bytes(row["last_hash"]),
                   debt=row["debt"], version=row["version"])


@dataclass
class Loaded:
    """Member books for a batch, plus what the batch's commands refer to."""

    books: dict[int, MemberBook]
    hold_ids_taken: set[str]  # every referenced hold id that exists, whoever it belongs to
    targets: dict[int, StoredEntry]  # entries named by reversals, by id or by command key
    posted_by: dict[tuple[str, int], list[StoredEntry]]  # the same targets by (command key, account id)


async def load_books(db: asyncpg.Connection, accounts_: Sequence[Account], complete: set[int],
                     hold_ids: Sequence[str], entry_ids: Sequence[int],
                     entry_keys: Sequence[tuple[str, int]]) -> Loaded:
    """Books for the given accounts. Accounts in `complete` get their open lots, open and referenced holds and
    outstanding debts; the others only their tip (enough to credit a member who owes nothing). Reversal targets
    are loaded by id and by (command key, account id), each entry once however many reversals name it."""
    books = {a.id: MemberBook(a, complete=a.id in complete) for a in accounts_}
    full = sorted(complete)
    lots: dict[int, LotState] = {}
    if full:
        for r in await db.fetch(
                f"""SELECT l.id, l.account_id, l.entry_id, l.amount, l.available_at, l.expires_at, l.origin_lot_id,
                           {LOT_USED} AS used, {LOT_RESERVED} AS reserved
                   FROM lots l
                   WHERE l.account_id = ANY($1::bigint[])
                     AND NOT EXISTS (SELECT 1 FROM lot_closures c WHERE c.lot_id = l.id)
                   ORDER BY l.id""", full):
            lot = LotState(id=r["id"], account_id=r["account_id"], amount=r["amount"], available_at=r["available_at"],
                           expires_at=r["expires_at"], ordinal=r["id"], used=int(r["used"]),
                           reserved=int(r["reserved"]), entry_id=r["entry_id"], origin_id=r["origin_lot_id"])
            lots[lot.id] = lot  # type: ignore[index]
            books[lot.account_id].lots.append(lot)
    taken: set[str] = set()
    if full or hold_ids:
        # Two index lookups (open holds of these accounts; the holds named by commands) rather than one OR.
        rows = await db.fetch(
            """SELECT h.hold_id, h.account_id, h.amount, h.expires_at, false AS resolved
               FROM holds h
               WHERE h.account_id = ANY($1::bigint[])
                 AND NOT EXISTS (SELECT 1 FROM hold_resolutions s WHERE s.hold_id = h.hold_id)
               UNION
               SELECT h.hold_id, h.account_id, h.amount, h.expires_at,
                      EXISTS (SELECT 1 FROM hold_resolutions s WHERE s.hold_id = h.hold_id)
               FROM holds h WHERE h.hold_id = ANY($2::text[])""",
            full, list(hold_ids))
        open_ids = []
        for r in rows:
            taken.add(r["hold_id"])
            book = books.get(r["account_id"])
            if book is None or not book.complete:
                continue
            book.holds[r["hold_id"]] = HoldState(r["hold_id"], r["account_id"], r["amount"], r["expires_at"], [],
                                                 resolved=r["resolved"])
            if not r["resolved"]:
                open_ids.append(r["hold_id"])
        if open_ids:
            for r in await db.fetch("SELECT hold_id, lot_id, amount FROM hold_reservations WHERE hold_id = ANY($1)",
                                    open_ids):
                hold = books[lots[r["lot_id"]].account_id].holds[r["hold_id"]]
                hold.reservations.append((lots[r["lot_id"]], r["amount"]))
            for book in books.values():
                for hold in book.holds.values():
                    hold.reservations.sort(key=lambda pair: spend_order(pair[0]))
    in_debt = [a.id for a in accounts_ if a.debt > 0]
    if in_debt:
        for r in await db.fetch(
                """SELECT d.entry_id, d.account_id,
                          e.amount - coalesce((SELECT sum(a.amount) FROM allocations a WHERE a.entry_id = d.entry_id),
                                              0) AS outstanding
                   FROM debts d JOIN entries e ON e.id = d.entry_id
                   WHERE d.account_id = ANY($1::bigint[]) ORDER BY d.entry_id""", in_debt):
            if r["outstanding"] > 0:
                books[r["account_id"]].debts.append(DebtState(r["entry_id"], int(r["outstanding"])))
    targets: dict[int, StoredEntry] = {}
    posted_by: dict[tuple[str, int], list[StoredEntry]] = {}
    if entry_ids or entry_keys:
        # By id, and by the (command_key) index then account; an entry named both ways is loaded once, so two
        # reversals of it in one batch share one StoredEntry and see each other.
        for r in await db.fetch(
                """SELECT e.id, e.account_id, e.kind, e.amount, e.command_key,
                          e.to_account_id = e.account_id AS incoming,
                          coalesce((SELECT sum(c.amount) FROM entries c WHERE c.corrects_entry_id = e.id), 0)
                              AS reversed
                   FROM entries e
                   WHERE e.id IN (SELECT unnest($1::bigint[])
                                  UNION
                                  SELECT x.id FROM entries x JOIN unnest($2::text[], $3::bigint[]) AS u(k, a)
                                      ON x.command_key = u.k AND x.account_id = u.a)
                   ORDER BY e.id""",
                list(entry_ids), [k for k, _ in entry_keys], [a for _, a in entry_keys]):
            target = StoredEntry(r["id"], r["account_id"], r["kind"], r["amount"], r["incoming"], int(r["reversed"]),
                                 [])
            targets[target.id] = target
            posted_by.setdefault((r["command_key"], target.account_id), []).append(target)
        for r in await db.fetch(
                """SELECT a.entry_id, a.lot_id, a.amount, l.available_at, l.expires_at
                   FROM allocations a JOIN lots l ON l.id = a.lot_id
                   WHERE a.entry_id = ANY($1::bigint[]) AND a.by_entry_id = a.entry_id ORDER BY a.id""",
                list(targets)):
            targets[r["entry_id"]].allocations.append((r["lot_id"], r["amount"], r["available_at"], r["expires_at"]))
    return Loaded(books, taken, targets, posted_by)


async def member_book(db: asyncpg.Connection, program_id: str, member_id: str) -> MemberBook | None:
    """A member's complete book (open lots, open holds, debts), or None for a member who never had an entry."""
    rows = await _select_accounts(db, [(program_id, "member", member_id)])
    row = rows.get((program_id, "member", member_id))
    if row is None:
        return None
    account = member_account(row)
    loaded = await load_books(db, [account], {account.id}, [], [], [])
    return loaded.books[account.id]


async def reserve_entry_ids(db: asyncpg.Connection, count: int) -> list[int]:
    """Entry ids for a batch, taken before its rules run (unused ones are left as gaps; ids are not a sequence
    that must be gapless, each account's `seq` is)."""
    ids: list[int] = await db.fetchval(
        "SELECT array(SELECT nextval('entries_id_seq') FROM generate_series(1, $1))", count)
    return ids[::-1]  # popped from the end: ascending in posting order


async def assign_ids(db: asyncpg.Connection, added: Additions) -> None:
    """Ids for the lots (and any entry beyond the reserved ids), so allocations can name them in the batch."""
    unnamed = [e for e in added.entries if e.id is None]
    row = await db.fetchrow(
        """SELECT array(SELECT nextval('entries_id_seq') FROM generate_series(1, $1)) AS entries,
                  array(SELECT nextval('lots_id_seq') FROM generate_series(1, $2)) AS lots""",
        len(unnamed), len(added.lots))
    assert row is not None
    for entry, entry_id in zip(unnamed, row["entries"], strict=True):
        entry.id = entry_id
    for lot, lot_id in zip(added.lots, row["lots"], strict=True):
        lot.id = lot_id


def _id(ref: Entry | int) -> int:
    if isinstance(ref, Entry):
        assert ref.id is not None
        return ref.id
    return ref


ENTRY_COLUMNS = ("id", "program_id", "account_id", "seq", "from_account_id", "to_account_id", "amount",
                 "balance_after", "kind", "command_key", "source_event_id", "rule_id", "rule_version", "reason",
                 "details", "occurred_at", "posted_at", "prev_hash", "hash", "corrects_entry_id", "hold_id", "arms",
                 "tier")
LOT_COLUMNS = ("id", "entry_id", "account_id", "amount", "available_at", "expires_at", "origin_lot_id")


async def store(db: asyncpg.Connection, added: Additions) -> None:
    """Insert everything a batch added, one multi-row statement per table."""
    # Entries and lots, the bulk of every batch, go in by binary COPY: cheaper on both sides than unnest().
    if added.entries:
        await db.copy_records_to_table("entries", columns=ENTRY_COLUMNS, records=[
            (e.id, e.program_id, e.account_id, e.seq, e.from_account_id, e.to_account_id, e.amount, e.balance_after,
             e.kind, e.command_key, e.cause.source_event_id, e.cause.rule_id, e.cause.rule_version, e.cause.reason,
             orjson.dumps(e.details).decode() if e.details is not None else None, e.occurred_at, e.posted_at,
             e.prev_hash, e.hash, e.corrects_entry_id, e.hold_id,
             orjson.dumps(e.cause.arms).decode() if e.cause.arms is not None else None, e.cause.tier)
            for e in added.entries])
    if added.lots:
        await db.copy_records_to_table("lots", columns=LOT_COLUMNS, records=[
            (lot.id, lot.made_by_entry_id, lot.account_id, lot.amount, lot.available_at, lot.expires_at,
             lot.origin.id if lot.origin is not None else lot.origin_id) for lot in added.lots])
    if added.holds:
        holds = added.holds
        await db.execute(
            """INSERT INTO holds (hold_id, program_id, account_id, amount, command_key, placed_at, expires_at)
               SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::text[],
                                    $6::timestamptz[], $7::timestamptz[])""",
            [h.hold_id for h, _, _, _ in holds], [program for _, program, _, _ in holds],
            [h.account_id for h, _, _, _ in holds], [h.amount for h, _, _, _ in holds],
            [key for _, _, key, _ in holds], [at for _, _, _, at in holds], [h.expires_at for h, _, _, _ in holds])
        reservations = [(h.hold_id, lot.id, n) for h, _, _, _ in holds for lot, n in h.reservations]
        if reservations:
            await db.execute(
                """INSERT INTO hold_reservations (hold_id, lot_id, amount)
                   SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[])""",
                *[list(c) for c in zip(*reservations, strict=True)])
    if added.allocations:
        allocs = added.allocations
        await db.execute(
            """INSERT INTO allocations (entry_id, lot_id, amount, by_entry_id)
               SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[])""",
            [_id(a.debit) for a in allocs], [a.lot.id for a in allocs], [a.amount for a in allocs],
            [_id(a.by) for a in allocs])
    if added.closures:
        await db.execute(
            """INSERT INTO lot_closures (lot_id, account_id, by_entry_id)
               SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[])""",
            [lot.id for lot, _ in added.closures], [lot.account_id for lot, _ in added.closures],
            [_id(e) for _, e in added.closures])
    if added.debts:
        await db.execute(
            """INSERT INTO debts (entry_id, account_id, amount)
               SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[])""",
            [_id(e) for e, _ in added.debts], [e.account_id for e, _ in added.debts],
            [n for _, n in added.debts])
    if added.resolutions:
        res = added.resolutions
        await db.execute(
            """INSERT INTO hold_resolutions (hold_id, outcome, captured, entry_id, command_key, resolved_at)
               SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::text[],
                                    $6::timestamptz[])""",
            [r.hold.hold_id for r in res], [r.outcome for r in res], [r.captured for r in res],
            [_id(r.entry) if r.entry is not None else None for r in res], [r.command_key for r in res],
            [r.resolved_at for r in res])


async def add_totals(db: asyncpg.Connection, entries: Sequence[Entry]) -> None:
    """Add a batch's entries to their programmes' totals, summed per (programme, kind) first: one statement."""
    sums: dict[tuple[str, str], list[int]] = {}
    for e in entries:
        total = sums.setdefault((e.program_id, e.kind), [0, 0, 0])
        total[0] += 1
        total[1 if e.to_account_id == e.account_id else 2] += e.amount
    if not sums:
        return
    keys = sorted(sums)  # in key order, so two ledgers adding to the same rows cannot deadlock
    await db.execute(
        """INSERT INTO programme_totals (program_id, kind, entries, points_in, points_out)
           SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[])
           ON CONFLICT (program_id, kind) DO UPDATE SET entries = programme_totals.entries + excluded.entries,
               points_in = programme_totals.points_in + excluded.points_in,
               points_out = programme_totals.points_out + excluded.points_out""",
        [p for p, _ in keys], [k for _, k in keys], [sums[k][0] for k in keys], [sums[k][1] for k in keys],
        [sums[k][2] for k in keys])


async def advance_accounts(db: asyncpg.Connection, books: Sequence[MemberBook]) -> bool:
    """Move each account's tip forward, only from the version it was read at (optimistic concurrency)."""
    if not books:
        return True
    result = await db.execute(
        """UPDATE accounts a SET balance = u.b, lifetime_earned = u.l, last_seq = u.s, last_hash = u.h, debt = u.d,
                                 version = u.prev + 1
           FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bytea[], $6::bigint[],
                       $7::bigint[]) AS u(id, b, l, s, h, d, prev)
           WHERE a.id = u.id AND a.version = u.prev""",
        [b.account.id for b in books], [b.account.balance for b in books],
        [b.account.lifetime_earned for b in books], [b.account.seq for b in books],
        [b.account.last_hash for b in books], [b.account.debt for b in books], [b.read_version for b in books])
    return int(result.split()[-1]) == len(books)
