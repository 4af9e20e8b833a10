"""The ledger's rules on in-memory books: what a member sees (balances, entries, lots) after each command."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.ledger.domain import GENESIS_HASH, Account, DebtState, Entry, LotState, MemberBook
from services.ledger.rules import Journal, Outcome, Refused, StoredEntry, posted_by
from shared.contracts.ledger_commands import (
    AdjustPoints,
    CaptureHold,
    Cause,
    ExpireHold,
    ExpireLot,
    PlaceHold,
    PostCredit,
    PostDebit,
    ReleaseHold,
    ReverseEntry,
    TransferPoints,
)

NOW = datetime(2026, 11, 1, 10, tzinfo=UTC)
DAY = timedelta(days=1)
SYSTEM = {"issued": 1, "redeemed": 2, "expired": 3, "adjustments": 4, "transfers": 5}
_keys = itertools.count(1)
_ids = itertools.count(1000)


def system_account(program_id: str, kind: str) -> int:
    return SYSTEM[kind]


def new_book(account_id: int = 10, member_id: str = "m1") -> MemberBook:
    return MemberBook(Account(id=account_id, program_id="p", member_id=member_id, balance=0, lifetime_earned=0,
                              seq=0, last_hash=GENESIS_HASH))


def at(now: datetime = NOW) -> Journal:
    return Journal(now, system_account)


def store(journal: Journal) -> None:
    """Give new entries and lots ids, as the repository does before storing them."""
    for entry in journal.added.entries:
        entry.id = entry.id if entry.id is not None else next(_ids)
    for lot in journal.added.lots:
        lot.id = lot.id if lot.id is not None else next(_ids)


def stored(entry: Entry, journal: Journal, reversed_: int = 0) -> StoredEntry:
    """The entry as a reversal loads it: with the allocations it made itself."""
    assert entry.id is not None
    allocations = [(a.lot.id, a.amount, a.lot.available_at, a.lot.expires_at) for a in journal.added.allocations
                   if a.by is entry and a.debit is entry and a.lot.id is not None]
    return StoredEntry(entry.id, entry.account_id, entry.kind, entry.amount, entry.to_account_id == entry.account_id,
                       reversed_, allocations)


def common(member_id: str = "m1", when: datetime = NOW) -> dict[str, Any]:
    n = next(_keys)
    return {"idempotency_key": f"k{n}", "program_id": "p", "member_id": member_id,
            "cause": Cause(source_event_id=f"s{n}"), "occurred_at": when}


def earn(amount: int, *, expires: datetime | None = None, available: datetime | None = None,
         member_id: str = "m1") -> PostCredit:
    return PostCredit(**common(member_id), amount=amount, expires_at=expires, available_at=available)


def redeem(amount: int) -> PostDebit:
    return PostDebit(**common(), amount=amount)


def hold(hold_id: str, amount: int, ttl: timedelta = timedelta(minutes=15), member_id: str = "m1") -> PlaceHold:
    return PlaceHold(**common(member_id), hold_id=hold_id, amount=amount, ttl_seconds=int(ttl.total_seconds()))


def capture(hold_id: str, amount: int, when: datetime = NOW) -> CaptureHold:
    return CaptureHold(**common(when=when), hold_id=hold_id, amount=amount)


def release(hold_id: str, when: datetime = NOW) -> ReleaseHold:
    return ReleaseHold(**common(when=when), hold_id=hold_id)


def expire_hold(hold_id: str, when: datetime = NOW) -> ExpireHold:
    return ExpireHold(**common(when=when), hold_id=hold_id)


def expire_lot(lot_id: int | None, when: datetime = NOW) -> ExpireLot:
    assert lot_id is not None
    return ExpireLot(**common(when=when), lot_id=lot_id)


def reverse(entry_id: int | None, amount: int | None = None, when: datetime = NOW) -> ReverseEntry:
    assert entry_id is not None
    return ReverseEntry(**common(when=when), entry_id=entry_id, amount=amount)


def reverse_key(entry_key: str, amount: int | None = None) -> ReverseEntry:
    return ReverseEntry(**common(), entry_key=entry_key, amount=amount)


def adjust(direction: str, amount: int, expires: datetime | None = None) -> AdjustPoints:
    return AdjustPoints(**common(), direction=direction, amount=amount, reason="goodwill", actor="agent:7",
                        expires_at=expires, details={"ticket": "T-1"})


def transfer(amount: int, to_member_id: str = "m2", member_id: str = "m1") -> TransferPoints:
    return TransferPoints(**common(member_id), to_member_id=to_member_id, amount=amount)


def refused(reason: str) -> Any:
    return pytest.raises(Refused, match=f"^{reason}:")


def only(outcome: Outcome) -> Entry:
    [entry] = outcome.entries
    return entry


def lot_of(outcome: Outcome) -> LotState:
    [lot] = only(outcome).lots
    return lot


def assert_balances_add_up(book: MemberBook, now: datetime) -> None:
    """The member's balance is what they can spend, what matures later, what is held and what awaits the sweeper,
    less what they owe (already inside `available`)."""
    balance = book.account.balance
    assert balance == book.available(now) + book.pending(now) + book.held() + book.awaiting_expiry(now)
    assert balance == sum(lot.free + lot.reserved for lot in book.lots) - book.account.debt
    assert book.account.debt == sum(d.outstanding for d in book.debts) >= 0
    assert book.held() == sum(lot.reserved for lot in book.lots)
    assert all(min(lot.used, lot.reserved) >= 0 and lot.used + lot.reserved <= lot.amount for lot in book.lots)


# --- spending order ---------------------------------------------------------------------------------------------

def test_debits_take_the_soonest_expiring_lots_first_then_those_that_never_expire_oldest_first() -> None:
    book, journal = new_book(), at()
    never_old = lot_of(journal.credit(book, earn(100)))
    late = lot_of(journal.credit(book, earn(100, expires=NOW + 30 * DAY)))
    soon = lot_of(journal.credit(book, earn(100, expires=NOW + 10 * DAY)))
    soon_too = lot_of(journal.credit(book, earn(100, expires=NOW + 10 * DAY)))
    never_new = lot_of(journal.credit(book, earn(100)))

    debit = only(journal.debit(book, redeem(350)))

    assert (debit.kind, debit.amount, debit.from_account_id, debit.to_account_id) == ("redeem", 350, 10, 2)
    assert [(a.lot, a.amount) for a in journal.added.allocations] == [
        (soon, 100), (soon_too, 100), (late, 100), (never_old, 50)]
    assert all(a.debit is debit and a.by is debit for a in journal.added.allocations)
    assert journal.added.closures == [(soon, debit), (soon_too, debit), (late, debit)]
    assert [lot.used for lot in (never_old, late, soon, soon_too, never_new)] == [50, 100, 100, 100, 0]
    assert (book.account.balance, book.available(NOW)) == (150, 150)
    assert_balances_add_up(book, NOW)


def test_a_debit_for_more_than_is_available_is_refused_and_changes_nothing() -> None:
    book, journal = new_book(), at()
    journal.credit(book, earn(100))
    with refused("insufficient_points"):
        journal.debit(book, redeem(101))
    assert (book.account.balance, book.account.seq, len(journal.added.entries)) == (100, 1, 1)


# --- pending points ---------------------------------------------------------------------------------------------

def test_points_in_their_return_window_cannot_be_spent_until_it_closes() -> None:
    book, journal = new_book(), at()
    journal.credit(book, earn(100, available=NOW + 14 * DAY))
    assert (book.available(NOW), book.pending(NOW), book.account.balance) == (0, 100, 100)
    assert_balances_add_up(book, NOW)
    for spend in (lambda: journal.debit(book, redeem(1)), lambda: journal.place_hold(book, hold("h", 1), set()),
                  lambda: journal.transfer(book, new_book(11, "m2"), transfer(1))):
        with refused("insufficient_points"):
            spend()

    later = at(NOW + 14 * DAY)
    assert (book.available(later.now), book.pending(later.now)) == (100, 0)
    assert only(later.debit(book, redeem(100))).amount == 100


def test_reversing_an_earn_still_pending_cancels_it() -> None:
    book, journal = new_book(), at()
    credit = journal.credit(book, earn(100, available=NOW + 14 * DAY))
    store(journal)
    lot = lot_of(credit)
    entry = only(credit)

    cancel = only(journal.reverse(book, reverse(entry.id), stored(entry, journal)))

    assert (cancel.kind, cancel.amount, cancel.corrects_entry_id) == ("cancel", 100, entry.id)
    assert (cancel.from_account_id, cancel.to_account_id) == (10, SYSTEM["issued"])
    assert (lot.used, book.pending(NOW), book.account.balance, book.account.lifetime_earned) == (100, 0, 0, 0)
    assert journal.added.closures == [(lot, cancel)] and journal.added.debts == []


def test_reversing_a_matured_earn_is_a_reversal_not_a_cancel() -> None:
    book, journal = new_book(), at()
    entry = only(journal.credit(book, earn(100)))
    store(journal)
    reversal = only(journal.reverse(book, reverse(entry.id), stored(entry, journal)))
    assert (reversal.kind, reversal.amount, book.account.balance, book.account.debt) == ("reversal", 100, 0, 0)


# --- holds ------------------------------------------------------------------------------------------------------

def held_book() -> tuple[MemberBook, Journal, LotState, LotState]:
    """160 points (60 expiring in ten days, 100 that never expire) and hold "h" on 80 of them."""
    book, journal = new_book(), at()
    soon = lot_of(journal.credit(book, earn(60, expires=NOW + 10 * DAY)))
    never = lot_of(journal.credit(book, earn(100)))
    journal.place_hold(book, hold("h", 80), set())
    return book, journal, soon, never


def test_placing_a_hold_reserves_the_soonest_expiring_points_and_lowers_what_is_available() -> None:
    book, journal, soon, never = held_book()
    placed = book.holds["h"]
    assert (placed.amount, placed.expires_at, placed.resolved) == (80, NOW + timedelta(minutes=15), False)
    assert placed.reservations == [(soon, 60), (never, 20)]
    assert (soon.reserved, never.reserved, soon.used, never.used) == (60, 20, 0, 0)
    assert (book.account.balance, book.available(NOW), book.held()) == (160, 80, 80)
    assert [e.kind for e in journal.added.entries] == ["earn", "earn"]  # a hold posts no entry
    assert [(h, program) for h, program, _, _ in journal.added.holds] == [(placed, "p")]
    assert_balances_add_up(book, NOW)
    with refused("insufficient_points"):
        journal.place_hold(book, hold("h2", 81), set())


def test_capture_spends_at_most_the_held_points_and_releases_the_rest() -> None:
    book, journal, soon, never = held_book()
    outcome = journal.capture(book, capture("h", 50))
    spent = only(outcome)
    assert (spent.kind, spent.amount, spent.hold_id, spent.to_account_id) == ("redeem", 50, "h", SYSTEM["redeemed"])
    assert [(a.lot, a.amount) for a in journal.added.allocations] == [(soon, 50)]
    assert [(r.outcome, r.captured, r.entry) for r in outcome.resolutions] == [("captured", 50, spent)]
    assert (soon.used, soon.reserved, never.used, never.reserved) == (50, 0, 0, 0)
    assert (book.account.balance, book.available(NOW), book.held()) == (110, 110, 0)
    assert_balances_add_up(book, NOW)


def test_capturing_more_than_is_held_is_refused_and_the_hold_stays() -> None:
    book, journal, _, _ = held_book()
    with refused("capture_exceeds_hold"):
        journal.capture(book, capture("h", 81))
    assert (book.held(), book.available(NOW), book.holds["h"].resolved) == (80, 80, False)
    assert only(journal.capture(book, capture("h", 80))).amount == 80


def test_releasing_a_hold_gives_the_points_back() -> None:
    book, journal, soon, never = held_book()
    outcome = journal.release(book, release("h"))
    assert outcome.entries == []
    assert [(r.outcome, r.captured, r.entry) for r in outcome.resolutions] == [("released", 0, None)]
    assert (book.account.balance, book.available(NOW), book.held(), soon.reserved, never.reserved) == (
        160, 160, 0, 0, 0)


@pytest.mark.parametrize("first", ["capture", "release", "expire"])
def test_a_hold_resolves_at_most_once(first: str) -> None:
    book, journal, _, _ = held_book()
    due = at(NOW + timedelta(minutes=15))
    if first == "capture":
        journal.capture(book, capture("h", 30))
    elif first == "release":
        journal.release(book, release("h"))
    else:
        due.expire_hold(book, expire_hold("h", due.now))
    balance = book.account.balance
    for again in (lambda: due.capture(book, capture("h", 1, due.now)), lambda: due.release(book, release("h", due.now)),
                  lambda: due.expire_hold(book, expire_hold("h", due.now))):
        with refused("hold_already_resolved"):
            again()
    assert (book.account.balance, book.held()) == (balance, 0)


def test_a_capture_after_the_hold_timed_out_expires_the_hold_and_is_rejected() -> None:
    book, _, _, _ = held_book()
    late = at(NOW + timedelta(minutes=15))
    outcome = late.capture(book, capture("h", 50, late.now))
    assert outcome.rejection is not None and outcome.rejection[0] == "hold_expired"
    assert outcome.entries == [] and late.added.entries == []
    assert [(r.outcome, r.captured) for r in outcome.resolutions] == [("expired", 0)]
    assert book.holds["h"].resolved
    assert (book.account.balance, book.available(late.now), book.held()) == (160, 160, 0)


def test_a_hold_expires_only_once_its_time_is_up() -> None:
    book, _, _, _ = held_book()
    early = at(NOW + timedelta(minutes=14))
    with refused("hold_not_due"):
        early.expire_hold(book, expire_hold("h", early.now))
    due = at(NOW + timedelta(minutes=15))
    outcome = due.expire_hold(book, expire_hold("h", due.now))
    assert outcome.entries == [] and [r.outcome for r in outcome.resolutions] == ["expired"]
    assert (book.available(due.now), book.held()) == (160, 0)


def test_an_unknown_hold_or_another_members_hold_is_not_found() -> None:
    book, journal, _, _ = held_book()
    other = new_book(11, "m2")
    for missing in (lambda: journal.capture(book, capture("nope", 1)), lambda: journal.release(book, release("nope")),
                    lambda: journal.expire_hold(book, expire_hold("nope")),
                    lambda: journal.release(other, release("h"))):
        with refused("hold_not_found"):
            missing()


def test_a_hold_id_is_placed_once_whoever_places_it() -> None:
    book, journal, _, _ = held_book()
    with refused("hold_exists"):
        journal.place_hold(book, hold("h", 1), set())
    other = new_book(11, "m2")
    journal.credit(other, earn(100, member_id="m2"))
    with refused("hold_exists"):  # placed before, stored under another member
        journal.place_hold(other, hold("elsewhere", 1, member_id="m2"), {"elsewhere"})
    taken: set[str] = set()
    journal.place_hold(book, hold("batch", 1), taken)
    with refused("hold_exists"):  # placed earlier in the same batch, for another member
        journal.place_hold(other, hold("batch", 1, member_id="m2"), taken)
    assert other.held() == 0


# --- expiry -----------------------------------------------------------------------------------------------------

def test_expiring_a_lot_takes_only_its_unreserved_remainder() -> None:
    book, journal = new_book(), at()
    lot = lot_of(journal.credit(book, earn(100, expires=NOW + 10 * DAY)))
    store(journal)
    journal.place_hold(book, hold("h", 30, ttl=timedelta(days=30)), set())
    due = at(NOW + 10 * DAY)
    assert (book.available(due.now), book.awaiting_expiry(due.now), book.held()) == (0, 70, 30)
    assert_balances_add_up(book, due.now)

    expired = only(due.expire_lot(book, expire_lot(lot.id, due.now)))

    assert (expired.kind, expired.amount, expired.to_account_id) == ("expire", 70, SYSTEM["expired"])
    assert (lot.used, lot.reserved, due.added.closures) == (70, 30, [])
    assert (book.account.balance, book.awaiting_expiry(due.now), book.held()) == (30, 0, 30)
    assert_balances_add_up(book, due.now)
    with refused("nothing_to_expire"):  # what is left is held
        due.expire_lot(book, expire_lot(lot.id, due.now))


def test_points_released_from_a_hold_after_their_lot_expired_expire_at_once() -> None:
    book, journal = new_book(), at()
    lot = lot_of(journal.credit(book, earn(100, expires=NOW + 10 * DAY)))
    store(journal)
    journal.place_hold(book, hold("h", 30, ttl=timedelta(days=30)), set())
    due = at(NOW + 10 * DAY)
    due.expire_lot(book, expire_lot(lot.id, due.now))

    later = at(NOW + 11 * DAY)
    outcome = later.release(book, release("h", later.now))

    expired = only(outcome)
    assert (expired.kind, expired.amount, expired.hold_id) == ("expire", 30, "h")
    assert [r.outcome for r in outcome.resolutions] == ["released"]
    assert later.added.closures == [(lot, expired)]
    assert (book.account.balance, book.available(later.now), book.awaiting_expiry(later.now)) == (0, 0, 0)


def test_a_lot_expires_only_when_due() -> None:
    book, journal = new_book(), at()
    expiring = lot_of(journal.credit(book, earn(100, expires=NOW + 10 * DAY)))
    lasting = lot_of(journal.credit(book, earn(100)))
    store(journal)
    nearly = at(NOW + 10 * DAY - timedelta(seconds=1))
    for lot in (expiring, lasting):
        with refused("lot_not_due"):
            nearly.expire_lot(book, expire_lot(lot.id, nearly.now))
    assert book.account.balance == 200


def test_an_unknown_or_used_up_lot_has_nothing_to_expire() -> None:
    book, journal = new_book(), at()
    lot = lot_of(journal.credit(book, earn(100, expires=NOW + DAY)))
    store(journal)
    journal.debit(book, redeem(100))
    due = at(NOW + DAY)
    for lot_id in (lot.id, 999_999):
        with refused("nothing_to_expire"):
            due.expire_lot(book, expire_lot(lot_id, due.now))


# --- reversals and debt -----------------------------------------------------------------------------------------

def spent_and_refunded() -> tuple[MemberBook, Journal, Entry]:
    """100 earned, 80 of them spent, then the earn reversed: the member owes 80."""
    book, journal = new_book(), at()
    earned = only(journal.credit(book, earn(100)))
    journal.debit(book, redeem(80))
    store(journal)
    reversal = only(journal.reverse(book, reverse(earned.id), stored(earned, journal)))
    store(journal)
    return book, journal, reversal


def test_reversing_points_already_spent_leaves_the_member_owing_them() -> None:
    book, journal, reversal = spent_and_refunded()
    assert (reversal.kind, reversal.amount, reversal.balance_after) == ("reversal", 100, -80)
    assert [(a.amount, a.debit) for a in journal.added.allocations if a.by is reversal] == [(20, reversal)]
    assert journal.added.debts == [(reversal, 80)]
    assert (book.account.balance, book.account.debt, book.available(NOW), book.account.lifetime_earned) == (
        -80, 80, -80, 0)
    assert_balances_add_up(book, NOW)


def test_nothing_can_be_spent_while_the_balance_is_negative() -> None:
    book, journal, _ = spent_and_refunded()
    for spend in (lambda: journal.debit(book, redeem(1)), lambda: journal.place_hold(book, hold("h", 1), set()),
                  lambda: journal.adjust(book, adjust("debit", 1)),
                  lambda: journal.transfer(book, new_book(11, "m2"), transfer(1))):
        with refused("negative_balance"):
            spend()
    assert (book.account.balance, book.held()) == (-80, 0)


def test_later_credits_repay_the_debt_first() -> None:
    book, journal, reversal = spent_and_refunded()
    first = journal.credit(book, earn(50))
    assert [(a.debit, a.lot, a.amount, a.by) for a in journal.added.allocations[-1:]] == [
        (reversal, lot_of(first), 50, only(first))]
    assert (book.account.balance, book.account.debt, book.available(NOW)) == (-30, 30, -30)
    with refused("negative_balance"):
        journal.debit(book, redeem(1))

    second = journal.credit(book, earn(100))
    assert [(a.debit, a.amount) for a in journal.added.allocations[-1:]] == [(reversal, 30)]
    assert (lot_of(first).used, lot_of(second).used, book.debts) == (50, 30, [])
    assert (book.account.balance, book.account.debt, book.available(NOW)) == (70, 0, 70)
    assert_balances_add_up(book, NOW)
    assert only(journal.debit(book, redeem(70))).balance_after == 0


def test_a_debt_stored_earlier_is_repaid_against_its_entry_id() -> None:
    book = new_book()
    book.account.balance, book.account.debt = -30, 30
    book.debts.append(DebtState(555, 30))
    journal = at()
    journal.credit(book, earn(50))
    assert [(a.debit, a.amount) for a in journal.added.allocations] == [(555, 30)]
    assert (book.account.balance, book.account.debt, book.available(NOW), book.debts) == (20, 0, 20, [])


def test_a_reversal_takes_back_at_most_what_is_left_of_the_entry() -> None:
    book, journal = new_book(), at()
    earned = only(journal.credit(book, earn(100)))
    store(journal)
    target = stored(earned, journal)
    with refused("reversal_exceeds_entry"):
        journal.reverse(book, reverse(earned.id, 101), target)
    assert only(journal.reverse(book, reverse(earned.id, 60), target)).amount == 60
    with refused("reversal_exceeds_entry"):
        journal.reverse(book, reverse(earned.id, 41), target)
    assert only(journal.reverse(book, reverse(earned.id), target)).amount == 40  # all that is left
    with refused("reversal_exceeds_entry"):
        journal.reverse(book, reverse(earned.id), target)
    with refused("reversal_exceeds_entry"):  # as loaded again, with its reversals summed
        journal.reverse(book, reverse(earned.id), stored(earned, journal, reversed_=100))
    assert (book.account.balance, book.account.debt) == (0, 0)


@pytest.mark.parametrize("kind", ["expire", "cancel", "reversal", "transfer_out", "transfer_in"])
def test_only_earns_redemptions_and_adjustments_are_reversed(kind: str) -> None:
    book, journal = new_book(), at()
    journal.credit(book, earn(100))
    with refused("not_reversible"):
        journal.reverse(book, reverse(77), StoredEntry(77, book.account.id, kind, 10, kind == "transfer_in", 0, []))
    assert book.account.balance == 100


def test_a_reversal_of_an_entry_of_someone_else_or_of_nobody_is_refused() -> None:
    book, journal = new_book(), at()
    other = new_book(11, "m2")
    theirs = only(journal.credit(other, earn(100, member_id="m2")))
    journal.credit(book, earn(100))
    store(journal)
    for target in (stored(theirs, journal), None):
        with refused("entry_not_found"):
            journal.reverse(book, reverse(theirs.id), target)
    assert (book.account.balance, other.account.balance) == (100, 100)


def test_a_key_names_the_one_entry_its_command_posted_on_the_account() -> None:
    book, journal = new_book(), at()
    cmd = earn(100)
    earned = only(journal.credit(book, cmd))
    store(journal)
    target = posted_by(cmd.idempotency_key, [stored(earned, journal)])
    reversal = only(journal.reverse(book, reverse_key(cmd.idempotency_key, 30), target))
    assert (reversal.kind, reversal.amount, reversal.corrects_entry_id) == ("reversal", 30, earned.id)
    assert posted_by("earn:unknown", []) is None
    with pytest.raises(Refused, match=r"^entry_not_found: the entry of command 'earn:unknown' is not a stored entry"):
        journal.reverse(book, reverse_key("earn:unknown"), None)
    assert book.account.balance == 70


def test_a_key_whose_command_posted_two_entries_names_the_reversible_one() -> None:
    """A capture of a hold whose lot lapsed meanwhile posts a redeem and an expiry under one key."""
    book, journal = new_book(), at()
    journal.credit(book, earn(100, expires=NOW + timedelta(minutes=5)))
    journal.place_hold(book, hold("h", 100), set())
    later = at(NOW + timedelta(minutes=10))
    cmd = capture("h", 60, later.now)
    redeemed, lapsed = later.capture(book, cmd).entries
    store(journal)
    store(later)
    assert (redeemed.kind, lapsed.kind) == ("redeem", "expire")
    candidates = [stored(lapsed, later), stored(redeemed, later)]
    assert posted_by(cmd.idempotency_key, candidates) is candidates[1]


def test_a_key_that_names_two_reversible_entries_is_refused_and_asks_for_the_id() -> None:
    def entry(entry_id: int, kind: str) -> StoredEntry:
        return StoredEntry(entry_id, 10, kind, 10, kind == "earn", 0, [])

    with pytest.raises(Refused, match=r"^entry_not_found: command 'k' posted 2 entries .*\(7 earn, 8 redeem\), "
                                      r"2 of them reversible: name the entry by entry_id"):
        posted_by("k", [entry(7, "earn"), entry(8, "redeem")])
    with refused("entry_not_found"):
        posted_by("k", [entry(7, "expire"), entry(8, "transfer_in")])


def test_points_released_after_their_earn_was_reversed_pay_the_debt_it_left() -> None:
    book, journal = new_book(), at()
    earned = only(journal.credit(book, earn(100, expires=NOW + 10 * DAY)))
    store(journal)
    journal.place_hold(book, hold("h", 100), set())
    journal.reverse(book, reverse(earned.id), stored(earned, journal))  # refunded while held: owes 100
    journal.release(book, release("h"))
    assert (book.account.balance, book.account.debt, book.available(NOW)) == (0, 0, 0)
    due = at(NOW + 10 * DAY)
    with refused("nothing_to_expire"):  # the refunded points must not expire a second time, as a debt
        due.expire_lot(book, expire_lot(earned.lots[0].id, due.now))


def test_reversing_a_debit_restores_the_points_with_the_expiry_they_had() -> None:
    book, journal = new_book(), at()
    soon = lot_of(journal.credit(book, earn(50, expires=NOW + 10 * DAY)))
    late = lot_of(journal.credit(book, earn(50, expires=NOW + 20 * DAY)))
    journal.credit(book, earn(50))
    debit = only(journal.debit(book, redeem(80)))
    store(journal)

    restored = only(journal.reverse(book, reverse(debit.id), stored(debit, journal)))

    assert (restored.kind, restored.amount, restored.corrects_entry_id) == ("reversal", 80, debit.id)
    assert (restored.from_account_id, restored.to_account_id) == (SYSTEM["redeemed"], 10)
    assert [(lot.amount, lot.available_at, lot.expires_at) for lot in restored.lots] == [
        (50, soon.available_at, soon.expires_at), (30, late.available_at, late.expires_at)]
    assert (book.account.balance, book.available(NOW)) == (150, 150)
    assert_balances_add_up(book, NOW)


def test_partial_reversals_of_a_debit_restore_each_spent_point_once() -> None:
    book, journal = new_book(), at()
    soon = lot_of(journal.credit(book, earn(50, expires=NOW + 10 * DAY)))
    late = lot_of(journal.credit(book, earn(50, expires=NOW + 20 * DAY)))
    debit = only(journal.debit(book, redeem(80)))
    store(journal)
    target = stored(debit, journal)
    first = only(journal.reverse(book, reverse(debit.id, 40), target))
    second = only(journal.reverse(book, reverse(debit.id, 40), target))
    assert [(lot.amount, lot.expires_at) for lot in first.lots] == [(40, soon.expires_at)]
    assert [(lot.amount, lot.expires_at) for lot in second.lots] == [(10, soon.expires_at), (30, late.expires_at)]
    assert book.account.balance == 100


# --- adjustments and transfers ----------------------------------------------------------------------------------

def test_adjustments_record_who_made_them_and_why() -> None:
    book, journal = new_book(), at()
    added = only(journal.adjust(book, adjust("credit", 30, expires=NOW + 5 * DAY)))
    taken = only(journal.adjust(book, adjust("debit", 10)))
    assert [(e.kind, e.signed_amount, e.cause.reason) for e in (added, taken)] == [
        ("adjust_credit", 30, "goodwill"), ("adjust_debit", -10, "goodwill")]
    assert added.details == taken.details == {"ticket": "T-1", "reason": "goodwill", "actor": "agent:7"}
    assert added.from_account_id == taken.to_account_id == SYSTEM["adjustments"]
    assert [(lot.amount, lot.used, lot.expires_at) for lot in added.lots] == [(30, 10, NOW + 5 * DAY)]
    assert (book.account.balance, book.account.lifetime_earned) == (20, 30)
    with refused("insufficient_points"):
        journal.adjust(book, adjust("debit", 21))


def test_transferred_points_keep_the_expiry_they_had() -> None:
    giver, receiver, journal = new_book(), new_book(11, "m2"), at()
    soon = lot_of(journal.credit(giver, earn(50, expires=NOW + 10 * DAY)))
    late = lot_of(journal.credit(giver, earn(50, expires=NOW + 20 * DAY)))
    never = lot_of(journal.credit(giver, earn(50)))

    out, into = journal.transfer(giver, receiver, transfer(120)).entries

    assert (out.kind, out.account_id, out.signed_amount, out.to_account_id) == ("transfer_out", 10, -120, 5)
    assert (into.kind, into.account_id, into.signed_amount, into.from_account_id) == ("transfer_in", 11, 120, 5)
    assert out.details == {"to_member_id": "m2"} and into.details == {"from_member_id": "m1"}
    assert [(lot.amount, lot.expires_at, lot.origin) for lot in receiver.lots] == [
        (50, soon.expires_at, soon), (50, late.expires_at, late), (20, None, never)]
    assert (giver.account.balance, receiver.account.balance, receiver.available(NOW)) == (30, 120, 120)
    assert receiver.account.lifetime_earned == 0  # received, not earned
    for book in (giver, receiver):
        assert_balances_add_up(book, NOW)


def test_a_transfer_of_more_than_is_available_is_refused() -> None:
    giver, receiver, journal = new_book(), new_book(11, "m2"), at()
    journal.credit(giver, earn(50))
    with refused("insufficient_points"):
        journal.transfer(giver, receiver, transfer(60))
    assert (giver.account.balance, receiver.account.balance, receiver.account.seq) == (50, 0, 0)


def test_a_transfer_to_a_member_in_debt_repays_the_debt() -> None:
    giver, (receiver, journal, reversal) = new_book(11, "m2"), spent_and_refunded()
    journal.credit(giver, earn(100, member_id="m2"))
    journal.transfer(giver, receiver, transfer(100, to_member_id="m1", member_id="m2"))
    assert [(a.debit, a.amount) for a in journal.added.allocations[-1:]] == [(reversal, 80)]
    assert (receiver.account.balance, receiver.account.debt, receiver.available(NOW)) == (20, 0, 20)


# --- any sequence of commands -----------------------------------------------------------------------------------

ops = st.lists(st.one_of(
    st.tuples(st.just("earn"), st.integers(1, 100), st.sampled_from([None, 1, 5, 20]), st.sampled_from([0, 0, 3])),
    st.tuples(st.just("redeem"), st.integers(1, 60)),
    st.tuples(st.just("hold"), st.integers(1, 60), st.integers(1, 4)),
    st.tuples(st.just("capture"), st.integers(0, 5), st.integers(1, 60)),
    st.tuples(st.just("release"), st.integers(0, 5)),
    st.tuples(st.just("expire_hold"), st.integers(0, 5)),
    st.tuples(st.just("expire_lot"), st.integers(0, 10)),
    st.tuples(st.just("reverse"), st.integers(0, 20), st.sampled_from([None, None, 1, 30])),
    st.tuples(st.just("adjust"), st.sampled_from(["credit", "debit"]), st.integers(1, 50)),
    st.tuples(st.just("wait"), st.integers(0, 12)),
), max_size=40)


def snapshot(book: MemberBook, targets: dict[int, StoredEntry]) -> object:
    a = book.account
    return ((a.balance, a.seq, a.debt, a.lifetime_earned, a.last_hash), [(lot.used, lot.reserved) for lot in book.lots],
            sorted((h.hold_id, h.resolved) for h in book.holds.values()), [d.outstanding for d in book.debts],
            sorted((t.id, t.reversed) for t in targets.values()))


@settings(max_examples=300, deadline=None)
@given(ops)
def test_any_sequence_of_commands_keeps_the_books_consistent(steps: list[tuple[Any, ...]]) -> None:
    book, now = new_book(), NOW
    hold_ids: list[str] = []
    entries: list[Entry] = []
    targets: dict[int, StoredEntry] = {}
    for step in steps:
        journal, (op, *args) = at(now), step
        before = snapshot(book, targets)
        try:
            match op:
                case "earn":
                    amount, expires, pending = args
                    journal.credit(book, earn(amount, expires=None if expires is None else now + expires * DAY,
                                              available=now + pending * DAY))
                case "redeem":
                    journal.debit(book, redeem(args[0]))
                case "hold":
                    journal.place_hold(book, hold(f"h{len(hold_ids)}", args[0], ttl=args[1] * DAY), set())
                    hold_ids.append(f"h{len(hold_ids)}")  # only holds that were placed
                case "capture" | "release" | "expire_hold" if hold_ids:
                    hold_id = hold_ids[args[0] % len(hold_ids)]
                    if op == "capture":
                        journal.capture(book, capture(hold_id, args[1], now))
                    elif op == "release":
                        journal.release(book, release(hold_id, now))
                    else:
                        journal.expire_hold(book, expire_hold(hold_id, now))
                case "expire_lot" if book.lots:
                    # mostly the lots the sweeper would pick: due, with something left
                    due = [lot for lot in book.lots if lot.expired(now) and lot.free > 0] or book.lots
                    journal.expire_lot(book, expire_lot(due[args[0] % len(due)].id, now))
                case "reverse" if targets:
                    target = list(targets.values())[args[0] % len(targets)]
                    journal.reverse(book, reverse(target.id, args[1], now), target)
                case "adjust":
                    journal.adjust(book, adjust(args[0], args[1]))
                case "wait":
                    now += args[0] * DAY
        except Refused:
            assert snapshot(book, targets) == before and journal.added.entries == []
        store(journal)
        for entry in journal.added.entries:
            entries.append(entry)
            assert entry.id is not None and entry.amount > 0
            targets[entry.id] = stored(entry, journal)
        assert_balances_add_up(book, now)
        assert book.account.balance >= 0 or book.account.debt > 0
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
    assert [e.prev_hash for e in entries] == [GENESIS_HASH, *[e.hash for e in entries]][:len(entries)]
    assert book.account.balance == sum(e.signed_amount for e in entries)
