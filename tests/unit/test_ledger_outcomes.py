"""The ledger builds its most frequent outcome as a plain dict for speed; it must still be the contract."""

from datetime import UTC, datetime, timedelta

import orjson

from services.ledger.domain import GENESIS_HASH, Account, MemberBook
from services.ledger.handlers import posted_data
from services.ledger.rules import Journal
from shared import envelope
from shared.contracts.ledger_commands import Cause, PostCredit
from shared.contracts.ledger_entries import PointsEntryPosted

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def test_posted_entry_data_is_the_published_contract() -> None:
    book = MemberBook(Account(id=7, program_id="p", member_id="m1", balance=0, lifetime_earned=0, seq=0,
                              last_hash=GENESIS_HASH))
    journal = Journal(NOW, lambda program, kind: 1)
    cmd = PostCredit(idempotency_key="earn:e1:base", program_id="p", member_id="m1", amount=42, occurred_at=NOW,
                     available_at=NOW + timedelta(days=7), expires_at=NOW + timedelta(days=365),
                     cause=Cause(source_event_id="pos|e1", rule_id="base", rule_version=3, reason="purchase"))
    entry = journal.credit(book, cmd).entries[0]
    entry.id, entry.lots[0].id = 101, 202

    wire = orjson.loads(envelope.encode("entry:101", "jifen.ledger", "t", NOW, posted_data(entry)))["data"]
    parsed = PointsEntryPosted.model_validate(wire)
    # Byte for byte what the pydantic model itself would have put on the wire.
    assert wire == orjson.loads(parsed.model_dump_json())

    assert parsed.model_extra == {}  # no field outside the contract
    assert (parsed.entry_id, parsed.amount, parsed.balance_after, parsed.seq, parsed.kind) == (101, 42, 42, 1, "earn")
    assert parsed.cause == cmd.cause and parsed.hash == entry.hash.hex() and parsed.posted_at == NOW
    assert parsed.lot is not None and parsed.lots == [parsed.lot]
    assert (parsed.lot.lot_id, parsed.lot.amount, parsed.lot.available_at, parsed.lot.expires_at) == (
        202, 42, cmd.available_at, cmd.expires_at)
    assert set(wire) == set(PointsEntryPosted.model_fields)
