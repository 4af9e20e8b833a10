"""The ledger's handler: a run of commands in, entries and outcomes out, in the batch's unit of work.

`load` reads what the whole run needs in a few multi-row queries (which commands are replays; the accounts with
their lots, holds and debts; the entries reversals name); the kit then calls each command's method, in order, which
hands the command to the pure `Journal` (rules.py); `store` writes what the journal added with multi-row statements,
records every command's outcome with its key, wakes the admin calls waiting for their commands, and emits the
outcomes in command order. Idempotent by command key and payload hash: a replay of any command, accepted or
refused, changes nothing and publishes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.ledger import domain
from services.ledger.domain import ADMIN_SOURCE, Entry, HoldState, MemberBook, Resolution
from services.ledger.metrics import LedgerMetrics
from services.ledger.repository import books, commands
from services.ledger.repository.books import Loaded
from services.ledger.rules import Journal, Outcome, Refused, posted_by
from shared import keys, waiting
from shared.consumer import Retryable
from shared.contracts.base import Contract
from shared.contracts.ledger_commands import (
    AdjustPoints,
    CaptureHold,
    ExpireHold,
    ExpireLot,
    LedgerCommand,
    PlaceHold,
    PostCredit,
    PostDebit,
    ReleaseHold,
    ReverseEntry,
    TransferPoints,
)
from shared.contracts.ledger_entries import CommandRejected, HoldPlaced, HoldResolved, PointsEntryPosted
from shared.subscription import Batch, Handler, Inbound
from shared.uow import UnitOfWork

__all__ = ["ApplyCommands", "Changes", "LedgerMetrics", "posted_data"]

Command = Inbound[LedgerCommand]
Member = tuple[str, str]  # (program_id, member_id)
Rejection = tuple[str, str]  # (reason, detail)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """An outcome to emit once the batch is decided: its contract, its JSON and its envelope."""

    contract: type[Contract]
    data: dict[str, Any]
    at: datetime
    event_id: str
    member_id: str
    subject: str

    def emit(self, uow: UnitOfWork) -> None:
        uow.emit_json(self.contract, self.data, at=self.at, event_id=self.event_id, key=self.member_id,
                      subject=self.subject)


def _no_account(program_id: str, kind: str) -> int:
    raise AssertionError(f"no command of this run needs the {kind} account of {program_id}")


@dataclass(eq=False)
class Changes:
    """A run of commands being applied: the books it touches, the journal recording what it adds, each fresh
    command's outcome, and the answers already decided (conflicting replays)."""

    uow: UnitOfWork
    now: datetime
    commands: list[Command]
    fresh: dict[int, bytes] = field(default_factory=dict)  # id(item) → payload hash, for first sightings
    outgoing: dict[int, list[Outgoing]] = field(default_factory=dict)  # id(item) → its outcomes, in order
    books: dict[Member, MemberBook] = field(default_factory=dict)
    loaded: Loaded = field(default_factory=lambda: Loaded({}, set(), {}, {}))
    journal: Journal = field(init=False)
    results: list[tuple[Command, bytes, Outcome | None, Rejection | None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.journal = Journal(self.now, _no_account)

    def apply(self, item: Command, rule: Callable[[MemberBook], Outcome]) -> None:
        """Apply a fresh command's rule to its member's book and keep what it did, or why it was refused; a replay
        (or a conflict, answered at load) is left alone."""
        digest = self.fresh.get(id(item))
        if digest is None:
            return
        cmd = item.data
        try:
            done = rule(self.books[(cmd.program_id, cmd.member_id)])
            self.results.append((item, digest, done, done.rejection))
        except Refused as refused:
            self.results.append((item, digest, None, (refused.reason, refused.detail)))


@dataclass
class ApplyCommands(Handler[Changes]):
    """Apply a run of ledger commands in one unit of work. Every command's outcome is stored with its key (posted
    or rejected, with the reason)."""

    metrics: LedgerMetrics
    clock: Callable[[], datetime]

    async def load(self, batch: Batch) -> Changes:
        uow = batch.uow
        changes = Changes(uow, self.clock(), batch.of(LedgerCommand))
        members = self._sort_out_replays(changes, await commands.known_commands(
            uow.db, [i.data.idempotency_key for i in changes.commands]))
        if changes.fresh:
            await self._read_books(batch, changes, members)
        return changes

    def _sort_out_replays(self, changes: Changes, known: dict[str, bytes]) -> set[Member]:
        """Keep first sightings; drop replays; answer conflicting replays with a rejection. Returns the members
        the first sightings are for."""
        members: set[Member] = set()
        for item in changes.commands:
            cmd = item.data
            key = cmd.idempotency_key
            digest = domain.payload_hash(cmd)
            prior = known.get(key)
            if prior is None:
                known[key] = digest
                changes.fresh[id(item)] = digest
                members.add((cmd.program_id, cmd.member_id))
            elif prior == digest:
                changes.uow.after_commit.append(self.metrics.replays.labels().inc)
            else:
                changes.outgoing[id(item)] = [self._rejected(changes.uow, item, "idempotency_conflict",
                                                             f"key {key!r} was already used for a command with "
                                                             "another payload", changes.now)]
        return members

    async def _read_books(self, batch: Batch, changes: Changes, members: set[Member]) -> None:
        """The accounts the fresh commands touch (created when missing), with their books: credits need only the
        tip, everything else the open lots; the holds and entries commands name."""
        fresh = changes.fresh
        credits = {id(i) for i in batch.of(PostCredit)}
        needs_lots = {(i.data.program_id, i.data.member_id) for i in changes.commands
                      if id(i) in fresh and id(i) not in credits}
        for transfer in batch.of(TransferPoints):
            if id(transfer) in fresh:
                receiver = (transfer.data.program_id, transfer.data.to_member_id)
                members.add(receiver)
                needs_lots.add(receiver)
        holds: list[Inbound[PlaceHold | CaptureHold | ReleaseHold | ExpireHold]] = [
            *batch.of(PlaceHold), *batch.of(CaptureHold), *batch.of(ReleaseHold), *batch.of(ExpireHold)]
        hold_ids = [i.data.hold_id for i in holds if id(i) in fresh]
        reversals = [i for i in batch.of(ReverseEntry) if id(i) in fresh]
        entry_ids = [i.data.entry_id for i in reversals if i.data.entry_id is not None]
        entry_keys = [(i.data.entry_key, (i.data.program_id, i.data.member_id)) for i in reversals
                      if i.data.entry_id is None and i.data.entry_key is not None]
        wanted: list[books.AccountKey] = [(p, "member", m) for p, m in members]
        wanted += [(p, kind, "") for p in {p for p, _ in members} for kind in domain.SYSTEM_ACCOUNTS]
        db = changes.uow.db
        rows = await books.accounts(db, wanted)
        accounts = {(k[0], k[2]): books.member_account(r) for k, r in rows.items() if k[1] == "member"}
        complete = {a.id for key, a in accounts.items() if key in needs_lots or a.debt > 0}
        loaded = await books.load_books(db, list(accounts.values()), complete, hold_ids, entry_ids,
                                        [(key, accounts[member].id) for key, member in entry_keys])
        changes.loaded = loaded
        changes.books = {(b.account.program_id, b.account.member_id): b for b in loaded.books.values()}
        # Two entries at most per command (a capture and the expiry of lots that lapsed while held; a transfer).
        changes.journal = Journal(changes.now, lambda program, kind: rows[(program, kind, "")]["id"],
                                  entry_ids=await books.reserve_entry_ids(db, 2 * len(fresh)))

    # --- one method per command: each hands its command to the journal ---------------------------------------

    async def credit(self, item: Inbound[PostCredit], changes: Changes) -> None:
        changes.apply(item, lambda book: changes.journal.credit(book, item.data))

    async def debit(self, item: Inbound[PostDebit], changes: Changes) -> None:
        changes.apply(item, lambda book: changes.journal.debit(book, item.data))

    async def place_hold(self, item: Inbound[PlaceHold], changes: Changes) -> None:
        changes.apply(item, lambda book: changes.journal.place_hold(book, item.data, changes.loaded.hold_ids_taken))

    async def capture(self, item: Inbound[CaptureHold], changes: Changes) -> None:
        changes.apply(item, lambda book: changes.journal.capture(book, item.data))

    async def release(self, item: Inbound[ReleaseHold], changes: Changes) -> None:
        changes.apply(item, lambda book: changes.journal.release(book, item.data))

    async def expire_hold(self, item: Inbound[ExpireHold], changes: Changes) -> None:
        changes.apply(item, lambda book: changes.journal.expire_hold(book, item.data))

    async def expire_lot(self, item: Inbound[ExpireLot], changes: Changes) -> None:
        changes.apply(item, lambda book: changes.journal.expire_lot(book, item.data))

    async def reverse(self, item: Inbound[ReverseEntry], changes: Changes) -> None:
        cmd = item.data

        def rule(book: MemberBook) -> Outcome:
            if cmd.entry_id is not None:
                return changes.journal.reverse(book, cmd, changes.loaded.targets.get(cmd.entry_id))
            if cmd.entry_key is None:
                raise Refused("entry_not_found", "a reversal names its entry by entry_id or entry_key")
            # A stored entry, or one an earlier command of this batch posted (a refund right behind its purchase).
            key, journal = cmd.entry_key, changes.journal
            named = changes.loaded.posted_by.get((key, book.account.id)) or journal.posted_here(book.account.id, key)
            return journal.reverse(book, cmd, posted_by(key, named))

        changes.apply(item, rule)

    async def adjust(self, item: Inbound[AdjustPoints], changes: Changes) -> None:
        changes.apply(item, lambda book: changes.journal.adjust(book, item.data))

    async def transfer(self, item: Inbound[TransferPoints], changes: Changes) -> None:
        cmd = item.data
        changes.apply(item, lambda book: changes.journal.transfer(
            book, changes.books[(cmd.program_id, cmd.to_member_id)], cmd))

    # --- the run, stored ----------------------------------------------------------------------------------------

    async def store(self, changes: Changes) -> None:
        uow = changes.uow
        if changes.results:
            await self._store_results(changes)
        # Outcomes go out in command order, so a member's outcomes arrive in the order of their commands.
        for item in changes.commands:
            for outgoing in changes.outgoing.get(id(item), ()):
                outgoing.emit(uow)

    async def _store_results(self, changes: Changes) -> None:
        uow, now, results = changes.uow, changes.now, changes.results
        added = changes.journal.added
        await books.assign_ids(uow.db, added)
        claimed = await commands.claim_commands(uow.db, [
            (item.data.idempotency_key, digest, item.event.type, item.data.program_id, item.data.member_id,
             "rejected" if rejection else "posted", rejection[0] if rejection else None)
            for item, digest, _, rejection in results], now)
        if claimed != len(results):
            raise Retryable("another consumer claimed some of these commands first")
        await books.store(uow.db, added)
        await books.add_totals(uow.db, added.entries)
        touched = [b for b in changes.loaded.books.values() if b.account.id in changes.journal.touched]
        if not await books.advance_accounts(uow.db, touched):
            raise Retryable("an account moved on since it was read")
        settled: list[str] = []  # the admin calls' commands, whose callers may be waiting (?wait)
        for item, _, outcome, rejection in results:
            messages = changes.outgoing.setdefault(id(item), [])
            if outcome is not None:
                messages += [self._posted(entry) for entry in outcome.entries]
                if outcome.placed is not None:
                    messages.append(self._hold_placed(item, outcome.placed))
                messages += [self._hold_resolved(item, r) for r in outcome.resolutions]
            if rejection is not None:
                messages.append(self._rejected(uow, item, *rejection, now))
            if item.event.source == ADMIN_SOURCE:
                settled.append(item.data.idempotency_key)
        await waiting.announce(uow, settled)  # one statement, only for a batch with admin commands in it
        uow.after_commit.append(lambda: self._count_entries(added.entries))

    def _count_entries(self, entries: list[Entry]) -> None:
        counts: dict[tuple[str, str], list[int]] = {}
        for entry in entries:
            count = counts.setdefault((entry.program_id, entry.kind), [0, 0])
            count[0] += 1
            count[1] += entry.amount
        for (program, kind), (n, points) in counts.items():
            self.metrics.entries.labels(program, kind).inc(n)
            self.metrics.points.labels(program, kind).inc(points)

    def _rejected(self, uow: UnitOfWork, item: Command, reason: str, detail: str, now: datetime) -> Outgoing:
        cmd = item.data
        rejected = CommandRejected(program_id=cmd.program_id, member_id=cmd.member_id,
                                   idempotency_key=cmd.idempotency_key, command_type=item.event.type, reason=reason,
                                   detail=detail)
        uow.after_commit.append(self.metrics.rejected.labels(reason).inc)
        return _outgoing(keys.rejected_event(item.event.event_id), now, rejected)

    def _hold_placed(self, item: Command, hold: HoldState) -> Outgoing:
        cmd = item.data
        placed = HoldPlaced(hold_id=hold.hold_id, program_id=cmd.program_id, member_id=cmd.member_id,
                            amount=hold.amount, expires_at=hold.expires_at, idempotency_key=cmd.idempotency_key)
        return _outgoing(keys.hold_placed_event(hold.hold_id), self.clock(), placed)

    def _hold_resolved(self, item: Command, resolution: Resolution) -> Outgoing:
        cmd = item.data
        hold = resolution.hold
        resolved = HoldResolved(hold_id=hold.hold_id, program_id=cmd.program_id, member_id=cmd.member_id,
                                outcome=resolution.outcome, captured=resolution.captured,
                                released=hold.amount - resolution.captured, idempotency_key=cmd.idempotency_key)
        return _outgoing(keys.hold_resolved_event(hold.hold_id), resolution.resolved_at, resolved)

    def _posted(self, entry: Entry) -> Outgoing:
        assert entry.id is not None  # assigned before the outcomes are built
        return Outgoing(PointsEntryPosted, posted_data(entry), entry.posted_at, keys.posted_event(entry.id),
                        entry.member_id, entry.command_key)


def _outgoing(event_id: str, at: datetime, body: CommandRejected | HoldPlaced | HoldResolved) -> Outgoing:
    return Outgoing(type(body), body.model_dump(mode="json"), at, event_id, body.member_id, body.idempotency_key)


def posted_data(entry: Entry) -> dict[str, Any]:
    """The `PointsEntryPosted` contract's data, built as a plain dict: one per entry is the hot path, and
    building and dumping the pydantic model cost a tenth of the ledger's time. A unit test holds the two equal."""
    lots = [{"lot_id": lot.id, "amount": lot.amount, "available_at": lot.available_at, "expires_at": lot.expires_at}
            for lot in entry.lots]
    return {
        "entry_id": entry.id, "program_id": entry.program_id, "member_id": entry.member_id, "seq": entry.seq,
        "amount": entry.signed_amount, "balance_after": entry.balance_after, "kind": entry.kind,
        "idempotency_key": entry.command_key, "cause": entry.cause.model_dump(), "occurred_at": entry.occurred_at,
        "posted_at": entry.posted_at, "lot": lots[0] if lots else None, "lots": lots,
        "corrects_entry_id": entry.corrects_entry_id, "hold_id": entry.hold_id, "hash": entry.hash.hex(),
    }
