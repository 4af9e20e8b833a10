"""Ledger rules: what each command does to a member's book. Pure: no I/O; `now` is passed in.

Every rule either refuses (raises `Refused` before changing anything) or changes the books and records
each change in the journal's `Additions`. Points always move between a member account and a system
account, so each programme's accounts sum to zero.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from services.ledger.domain import (
    EARNING_KINDS,
    Additions,
    Allocation,
    DebtState,
    Entry,
    HoldState,
    LotState,
    MemberBook,
    Resolution,
    chain_hash,
    spend_order,
)
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
from shared.refusal import Refusal

# Which entries a reversal may correct, and the system account the points go back to or come from.
REVERSIBLE_CREDITS = {"earn": "issued", "adjust_credit": "adjustments"}
REVERSIBLE_DEBITS = {"redeem": "redeemed", "adjust_debit": "adjustments"}


class Refused(Refusal):
    """A command that breaks a rule; nothing was changed."""


@dataclass(eq=False, slots=True)
class StoredEntry:
    """An entry a reversal names, as stored: what it was and how much of it is already reversed."""

    id: int
    account_id: int
    kind: str
    amount: int
    incoming: bool
    reversed: int
    allocations: list[tuple[int, int, datetime, datetime | None]]  # (lot id, amount, available_at, expires_at)


def posted_by(key: str, entries: list[StoredEntry]) -> StoredEntry | None:
    """The entry a reversal names by command key, among that command's entries on the member's account: the one
    entry, or the one reversible entry (a capture also posts the expiry of lots that lapsed while held)."""
    if len(entries) <= 1:
        return entries[0] if entries else None
    reversible = [e for e in entries if e.kind in REVERSIBLE_CREDITS or e.kind in REVERSIBLE_DEBITS]
    if len(reversible) == 1:
        return reversible[0]
    raise Refused("entry_not_found",
                  f"command {key!r} posted {len(entries)} entries on this member's account "
                  f"({', '.join(f'{e.id} {e.kind}' for e in entries)}), {len(reversible)} of them reversible: "
                  "name the entry by entry_id")


@dataclass
class Outcome:
    """What one command did: its entries, the hold it placed, the holds it resolved; and a rejection when
    it was refused after all (a capture of a hold that had timed out resolves the hold and is refused)."""

    entries: list[Entry] = field(default_factory=list)
    placed: HoldState | None = None
    resolutions: list[Resolution] = field(default_factory=list)
    rejection: tuple[str, str] | None = None


@dataclass
class Journal:
    """Applies commands to books, in order, recording every change for the repository to store."""

    now: datetime
    system_account: Callable[[str, str], int]  # (program_id, kind) -> account id
    added: Additions = field(default_factory=Additions)  # what the batch adds, for the repository
    touched: set[int] = field(default_factory=set)  # member account ids whose state moved
    # Ids reserved for this batch's entries, so an entry can be named (reversed) by a later command of the batch.
    entry_ids: list[int] = field(default_factory=list)
    _posted_here: dict[int, StoredEntry] = field(default_factory=dict)

    def posted_here(self, account_id: int, key: str) -> list[StoredEntry]:
        """Entries this batch posted on the account for command `key`, as a reversal sees stored ones."""
        found = []
        for entry in self.added.entries:
            if entry.command_key != key or entry.account_id != account_id or entry.id is None:
                continue
            if entry.id not in self._posted_here:
                spent = [(a.lot.id or 0, a.amount, a.lot.available_at, a.lot.expires_at)
                         for a in self.added.allocations if a.debit is entry and a.by is entry]
                self._posted_here[entry.id] = StoredEntry(entry.id, entry.account_id, entry.kind, entry.amount,
                                                          entry.to_account_id == entry.account_id, 0, spent)
            found.append(self._posted_here[entry.id])
        return found

    # --- commands ----------------------------------------------------------------------------------

    def credit(self, book: MemberBook, cmd: PostCredit) -> Outcome:
        entry = self._post(book, cmd, counter="issued", amount=cmd.amount, incoming=True, kind=cmd.kind)
        book.account.lifetime_earned += cmd.amount
        lot = self._new_lot(book, entry, cmd.amount, cmd.available_at or cmd.occurred_at, cmd.expires_at)
        self._repay(book, entry, [lot])
        return Outcome(entries=[entry])

    def debit(self, book: MemberBook, cmd: PostDebit) -> Outcome:
        self._ensure_can_spend(book, cmd.amount)
        entry = self._post(book, cmd, counter="redeemed", amount=cmd.amount, incoming=False, kind=cmd.kind)
        self._take(book, entry, self._spendable(book), cmd.amount)
        return Outcome(entries=[entry])

    def place_hold(self, book: MemberBook, cmd: PlaceHold, hold_ids_taken: set[str]) -> Outcome:
        if cmd.hold_id in book.holds or cmd.hold_id in hold_ids_taken:
            raise Refused("hold_exists", f"hold {cmd.hold_id!r} was placed before")
        self._ensure_can_spend(book, cmd.amount)
        reservations: list[tuple[LotState, int]] = []
        left = cmd.amount
        for lot in self._spendable(book):
            take = min(lot.free, left)
            lot.reserved += take
            reservations.append((lot, take))
            left -= take
            if left == 0:
                break
        hold = HoldState(cmd.hold_id, book.account.id, cmd.amount, cmd.occurred_at + timedelta(seconds=cmd.ttl_seconds),
                         reservations)
        book.holds[hold.hold_id] = hold
        hold_ids_taken.add(hold.hold_id)  # hold ids are unique across members: refuse it later in this batch too
        self.added.holds.append((hold, book.account.program_id, cmd.idempotency_key, self.now))
        self.touched.add(book.account.id)
        return Outcome(placed=hold)

    def capture(self, book: MemberBook, cmd: CaptureHold) -> Outcome:
        hold = self._open_hold(book, cmd.hold_id)
        if self.now >= hold.expires_at:
            outcome = self._resolve(book, hold, cmd, "expired", captured=0)
            outcome.rejection = ("hold_expired", f"hold {hold.hold_id!r} timed out at {hold.expires_at.isoformat()}")
            return outcome
        if cmd.amount > hold.amount:
            raise Refused("capture_exceeds_hold", f"capture of {cmd.amount} but hold {hold.hold_id!r} is {hold.amount}")
        return self._resolve(book, hold, cmd, "captured", captured=cmd.amount)

    def release(self, book: MemberBook, cmd: ReleaseHold) -> Outcome:
        return self._resolve(book, self._open_hold(book, cmd.hold_id), cmd, "released", captured=0)

    def expire_hold(self, book: MemberBook, cmd: ExpireHold) -> Outcome:
        hold = self._open_hold(book, cmd.hold_id)
        if self.now < hold.expires_at:
            raise Refused("hold_not_due", f"hold {hold.hold_id!r} runs until {hold.expires_at.isoformat()}")
        return self._resolve(book, hold, cmd, "expired", captured=0)

    def expire_lot(self, book: MemberBook, cmd: ExpireLot) -> Outcome:
        lot = next((lot for lot in book.lots if lot.id == cmd.lot_id), None)
        if lot is None or lot.free <= 0:
            raise Refused("nothing_to_expire", f"lot {cmd.lot_id} of this member has no unreserved points left")
        if not lot.expired(self.now):
            raise Refused("lot_not_due", f"lot {cmd.lot_id} expires at {lot.expires_at}")
        entry = self._post(book, cmd, counter="expired", amount=lot.free, incoming=False, kind="expire")
        self._take(book, entry, [lot], lot.free)
        return Outcome(entries=[entry])

    def reverse(self, book: MemberBook, cmd: ReverseEntry, target: StoredEntry | None) -> Outcome:
        if target is None or target.account_id != book.account.id:
            named = f"entry {cmd.entry_id}" if cmd.entry_id is not None else f"the entry of command {cmd.entry_key!r}"
            raise Refused("entry_not_found", f"{named} is not a stored entry of this member in this programme")
        if target.kind not in REVERSIBLE_CREDITS and target.kind not in REVERSIBLE_DEBITS:
            raise Refused("not_reversible", f"entry {target.id} is a {target.kind!r} entry, which is not reversed")
        remaining = target.amount - target.reversed
        amount = cmd.amount if cmd.amount is not None else remaining
        if amount > remaining or amount <= 0:
            raise Refused("reversal_exceeds_entry",
                          f"entry {target.id} has {remaining} of {target.amount} points left to reverse, not {amount}")
        target.reversed += amount
        if target.incoming:
            entry = self._reverse_credit(book, cmd, target, amount)
        else:
            entry = self._reverse_debit(book, cmd, target, amount)
        return Outcome(entries=[entry])

    def adjust(self, book: MemberBook, cmd: AdjustPoints) -> Outcome:
        cause = cmd.cause.model_copy(update={"reason": cmd.reason})
        details = {**(cmd.details or {}), "reason": cmd.reason, "actor": cmd.actor}
        if cmd.direction == "credit":
            entry = self._post(book, cmd, counter="adjustments", amount=cmd.amount, incoming=True,
                               kind="adjust_credit", cause=cause, details=details)
            book.account.lifetime_earned += cmd.amount
            lot = self._new_lot(book, entry, cmd.amount, cmd.occurred_at, cmd.expires_at)
            self._repay(book, entry, [lot])
        else:
            self._ensure_can_spend(book, cmd.amount)
            entry = self._post(book, cmd, counter="adjustments", amount=cmd.amount, incoming=False,
                               kind="adjust_debit", cause=cause, details=details)
            self._take(book, entry, self._spendable(book), cmd.amount)
        return Outcome(entries=[entry])

    def transfer(self, book: MemberBook, to: MemberBook, cmd: TransferPoints) -> Outcome:
        self._ensure_can_spend(book, cmd.amount)
        out = self._post(book, cmd, counter="transfers", amount=cmd.amount, incoming=False, kind="transfer_out",
                         details={**(cmd.details or {}), "to_member_id": to.account.member_id})
        taken = self._take(book, out, self._spendable(book), cmd.amount)
        into = self._post(to, cmd, counter="transfers", amount=cmd.amount, incoming=True, kind="transfer_in",
                          details={**(cmd.details or {}), "from_member_id": book.account.member_id})
        # The receiving side keeps the expiry (and maturity) of each piece it received.
        lots = [self._new_lot(to, into, amount, lot.available_at, lot.expires_at, origin=lot) for lot, amount in taken]
        self._repay(to, into, lots)
        return Outcome(entries=[out, into])

    # --- parts ----------------------------------------------------------------------------------------

    def _reverse_credit(self, book: MemberBook, cmd: ReverseEntry, target: StoredEntry, amount: int) -> Entry:
        own = sorted((lot for lot in book.lots if lot.made_by_entry_id == target.id), key=spend_order)
        # Points still pending on the refunded purchase are cancelled; matured ones are clawed back.
        cancel = all(lot.pending(self.now) for lot in own) and sum(lot.free for lot in own) >= amount and bool(own)
        entry = self._post(book, cmd, counter=REVERSIBLE_CREDITS[target.kind], amount=amount, incoming=False,
                           kind="cancel" if cancel else "reversal", corrects=target.id)
        if target.kind in EARNING_KINDS:
            book.account.lifetime_earned -= amount
        taken = sum(n for _, n in self._take(book, entry, own, amount))
        others = sorted((lot for lot in book.lots if lot.free > 0 and lot not in own), key=spend_order)
        taken += sum(n for _, n in self._take(book, entry, others, amount - taken))
        shortfall = amount - taken
        if shortfall:
            # The points were spent already: the member owes them, repaid first by later credits.
            book.account.debt += shortfall
            book.debts.append(DebtState(entry, shortfall))
            self.added.debts.append((entry, shortfall))
        return entry

    def _reverse_debit(self, book: MemberBook, cmd: ReverseEntry, target: StoredEntry, amount: int) -> Entry:
        entry = self._post(book, cmd, counter=REVERSIBLE_DEBITS[target.kind], amount=amount, incoming=True,
                           kind="reversal", corrects=target.id)
        # Restored points come back with the maturity and expiry of the lots they were spent from, skipping
        # the part earlier reversals restored already.
        skip, left, lots = target.reversed - amount, amount, []
        for _lot_id, taken, available_at, expires_at in target.allocations:
            part = taken - min(skip, taken)
            skip = max(0, skip - taken)
            part = min(part, left)
            if part > 0:
                lots.append(self._new_lot(book, entry, part, available_at, expires_at))
                left -= part
        if left:
            lots.append(self._new_lot(book, entry, left, self.now, None))
        self._repay(book, entry, lots)
        return entry

    def _resolve(self, book: MemberBook, hold: HoldState, cmd: LedgerCommand, outcome: str, captured: int) -> Outcome:
        for lot, reserved in hold.reservations:
            lot.reserved -= reserved
        hold.resolved = True
        entries: list[Entry] = []
        capture_entry = None
        taken: dict[int, int] = {}
        if captured:
            capture_entry = self._post(book, cmd, counter="redeemed", amount=captured, incoming=False, kind="redeem",
                                       hold_id=hold.hold_id)
            entries.append(capture_entry)
            left = captured
            for lot, reserved in hold.reservations:
                part = min(reserved, left)
                if part:
                    self._allocate(book, capture_entry, lot, part)
                    taken[id(lot)] = part
                    left -= part
        # Released points of lots that expired while held expire at once.
        lapsed = [(lot, reserved - taken.get(id(lot), 0)) for lot, reserved in hold.reservations
                  if lot.expired(self.now) and reserved > taken.get(id(lot), 0)]
        if lapsed:
            expire = self._post(book, cmd, counter="expired", amount=sum(n for _, n in lapsed), incoming=False,
                                kind="expire", hold_id=hold.hold_id)
            entries.append(expire)
            for lot, part in lapsed:
                self._allocate(book, expire, lot, part)
        # Released points that are still good pay what the member owes (a refund while the hold was open).
        self._repay(book, None, [lot for lot, _ in hold.reservations if not lot.expired(self.now)])
        resolution = Resolution(hold, outcome, captured, capture_entry, cmd.idempotency_key, self.now)
        self.added.resolutions.append(resolution)
        self.touched.add(book.account.id)
        return Outcome(entries=entries, resolutions=[resolution])

    def _open_hold(self, book: MemberBook, hold_id: str) -> HoldState:
        hold = book.holds.get(hold_id)
        if hold is None:
            raise Refused("hold_not_found", f"no hold {hold_id!r} for this member in this programme")
        if hold.resolved:
            raise Refused("hold_already_resolved", f"hold {hold_id!r} was resolved before")
        return hold

    def _ensure_can_spend(self, book: MemberBook, amount: int) -> None:
        if book.account.balance < 0:
            raise Refused("negative_balance",
                          f"balance is {book.account.balance}: the member owes points, nothing can be spent")
        available = book.available(self.now)
        if available < amount:
            raise Refused("insufficient_points", f"{amount} asked, {available} available")

    def _spendable(self, book: MemberBook) -> list[LotState]:
        return sorted((lot for lot in book.lots if lot.free > 0 and lot.spendable(self.now)), key=spend_order)

    def _take(self, book: MemberBook, entry: Entry, lots: list[LotState], amount: int) -> list[tuple[LotState, int]]:
        """Allocate up to `amount` from the free points of `lots`, in the order given."""
        taken: list[tuple[LotState, int]] = []
        for lot in lots:
            if amount <= 0:
                break
            part = min(lot.free, amount)
            if part > 0:
                self._allocate(book, entry, lot, part)
                taken.append((lot, part))
                amount -= part
        return taken

    def _allocate(self, book: MemberBook, debit: Entry | int, lot: LotState, amount: int,
                  by: Entry | int | None = None) -> None:
        lot.used += amount
        by_entry = by if by is not None else debit
        self.added.allocations.append(Allocation(debit, lot, amount, by_entry))
        if lot.used == lot.amount:
            self.added.closures.append((lot, by_entry))

    def _repay(self, book: MemberBook, by: Entry | None, lots: list[LotState]) -> None:
        """New points pay the member's oldest debts first. `by` is the entry that brought them; points freed by
        a released hold have none, and the allocation is then made in the debt's own name."""
        for lot in lots:
            while book.debts and lot.free > 0:
                debt = book.debts[0]
                part = min(debt.outstanding, lot.free)
                self._allocate(book, debt.entry, lot, part, by=by if by is not None else debt.entry)
                debt.outstanding -= part
                book.account.debt -= part
                if debt.outstanding == 0:
                    book.debts.pop(0)

    def _new_lot(self, book: MemberBook, entry: Entry, amount: int, available_at: datetime,
                 expires_at: datetime | None, origin: LotState | None = None) -> LotState:
        self.added.next_ordinal += 1
        lot = LotState(id=None, account_id=book.account.id, amount=amount, available_at=available_at,
                       expires_at=expires_at, ordinal=self.added.next_ordinal, entry=entry, origin=origin)
        book.lots.append(lot)
        entry.lots.append(lot)
        self.added.lots.append(lot)
        return lot

    def _post(self, book: MemberBook, cmd: LedgerCommand, *, counter: str, amount: int, incoming: bool, kind: str,
              corrects: int | None = None, hold_id: str | None = None, cause: object = None,
              details: dict[str, object] | None = None) -> Entry:
        account = book.account
        counter_id = self.system_account(account.program_id, counter)
        seq = account.seq + 1
        balance_after = account.balance + (amount if incoming else -amount)
        from_id, to_id = (counter_id, account.id) if incoming else (account.id, counter_id)
        digest = chain_hash(account.last_hash, account_id=account.id, seq=seq, from_account_id=from_id,
                            to_account_id=to_id, amount=amount, balance_after=balance_after, kind=kind,
                            command_key=cmd.idempotency_key, occurred_at=cmd.occurred_at)
        entry = Entry(
            program_id=account.program_id, member_id=account.member_id, account_id=account.id, seq=seq,
            from_account_id=from_id, to_account_id=to_id, amount=amount, balance_after=balance_after, kind=kind,
            command_key=cmd.idempotency_key, cause=cause or cmd.cause,  # type: ignore[arg-type]
            details=details if details is not None else cmd.details, occurred_at=cmd.occurred_at,
            posted_at=self.now, prev_hash=account.last_hash, hash=digest, corrects_entry_id=corrects, hold_id=hold_id,
            id=self.entry_ids.pop() if self.entry_ids else None)
        account.seq, account.balance, account.last_hash = seq, balance_after, digest
        self.added.entries.append(entry)
        self.touched.add(account.id)
        return entry
