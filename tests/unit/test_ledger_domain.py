from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from services.ledger.domain import GENESIS_HASH, Account, MemberBook, chain_hash, payload_hash
from services.ledger.rules import Journal
from shared.contracts.ledger_commands import Cause, PostCredit

WHEN = datetime(2026, 11, 1, 10, tzinfo=UTC)
ISSUED = 1


def credit(key: str, amount: int, when: datetime = WHEN) -> PostCredit:
    return PostCredit(idempotency_key=key, program_id="default", member_id="m1", amount=amount, occurred_at=when,
                      cause=Cause(source_event_id="s|1", rule_id="base", rule_version=1))


def test_credits_chain_up_on_the_member_account() -> None:
    account = Account(id=7, program_id="default", member_id="m1", balance=0, lifetime_earned=0, seq=0,
                      last_hash=GENESIS_HASH)
    book = MemberBook(account)
    journal = Journal(WHEN, lambda program, kind: {"issued": ISSUED}[kind])
    [first] = journal.credit(book, credit("k1", 100)).entries
    [second] = journal.credit(book, credit("k2", 30)).entries
    assert [(e.seq, e.balance_after, e.signed_amount) for e in (first, second)] == [(1, 100, 100), (2, 130, 30)]
    assert first.prev_hash == GENESIS_HASH and second.prev_hash == first.hash != second.hash
    assert (first.from_account_id, first.to_account_id) == (ISSUED, 7)
    [lot] = first.lots
    assert (lot.amount, lot.available_at, lot.expires_at) == (100, WHEN, None)
    assert (account.balance, account.lifetime_earned, account.seq, account.last_hash) == (130, 130, 2, second.hash)
    assert journal.added.entries == [first, second] and book.available(WHEN) == 130


def test_hash_does_not_depend_on_the_offset_the_time_was_written_in() -> None:
    fields: dict[str, Any] = dict(account_id=1, seq=1, from_account_id=2, to_account_id=1, amount=5, balance_after=5,
                                  kind="earn", command_key="k")
    shanghai = WHEN.astimezone(timezone(timedelta(hours=8)))
    assert chain_hash(GENESIS_HASH, occurred_at=WHEN, **fields) == chain_hash(GENESIS_HASH, occurred_at=shanghai,
                                                                               **fields)
    assert chain_hash(GENESIS_HASH, occurred_at=WHEN, **fields) != chain_hash(GENESIS_HASH, occurred_at=WHEN,
                                                                               **{**fields, "amount": 6})


def test_payload_hash_tells_a_replay_from_a_conflict() -> None:
    assert payload_hash(credit("k", 10)) == payload_hash(credit("k", 10))
    assert payload_hash(credit("k", 10)) != payload_hash(credit("k", 11))
