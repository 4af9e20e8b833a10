"""The ledger's command contracts: what is bad input (to the DLQ) and what a replay must hash the same."""

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from services.ledger.domain import payload_hash
from shared.contracts.ledger_commands import ReverseEntry

COMMON: dict[str, Any] = {"idempotency_key": "refund:r1:42", "program_id": "default", "member_id": "m1",
                          "cause": {"source_event_id": "pos|r1"}, "occurred_at": datetime(2026, 11, 1, 10, tzinfo=UTC)}


@pytest.mark.parametrize("names", [{}, {"entry_id": 42, "entry_key": "earn:e1:base"}, {"entry_key": "  "},
                                   {"entry_id": 0}])
def test_a_reversal_names_its_entry_exactly_once(names: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ReverseEntry.model_validate({**COMMON, **names})


def test_a_reversal_without_an_entry_says_why() -> None:
    with pytest.raises(ValidationError, match="exactly one of entry_id and entry_key"):
        ReverseEntry.model_validate(COMMON)


def test_a_reversal_names_its_entry_by_id_or_by_the_key_of_the_command_that_posted_it() -> None:
    by_key = ReverseEntry.model_validate({**COMMON, "entry_key": "earn:e1:base", "amount": 30})
    assert (by_key.entry_id, by_key.entry_key, by_key.amount) == (None, "earn:e1:base", 30)
    assert ReverseEntry.model_validate({**COMMON, "entry_id": 42}).entry_id == 42


def test_a_reversal_by_id_hashes_as_it_did_before_keys_existed() -> None:
    """Commands stored earlier keep their payload hash, so their replays are replays, not conflicts."""
    by_id = ReverseEntry.model_validate({**COMMON, "entry_id": 42, "amount": 30})
    assert "entry_key" not in by_id.model_dump(mode="json")
    assert payload_hash(by_id).hex() == "95110736088011bf5aeb593b17ff4e11efb2c36aec1eb912e140e4dd4923bca4"
    by_key = ReverseEntry.model_validate({**COMMON, "entry_key": "earn:e1:base", "amount": 30})
    assert payload_hash(by_key) != payload_hash(by_id)
