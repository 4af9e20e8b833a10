"""Ledger rules: pure functions over account state. No I/O and no clock: time is passed in."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from shared.contracts import Cause, Contract, PostCredit

GENESIS_HASH = bytes(32)
SYSTEM_ACCOUNTS = ("issued", "redeemed", "expired", "adjustments")


@dataclass(slots=True)
class Account:
    """A member account's running state: the tip of its entry chain."""

    id: int
    program_id: str
    member_id: str
    balance: int
    lifetime_earned: int
    seq: int
    last_hash: bytes


@dataclass(frozen=True, slots=True)
class Lot:
    amount: int
    available_at: datetime
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class Entry:
    program_id: str
    member_id: str
    account_id: int
    seq: int
    from_account_id: int
    to_account_id: int
    amount: int
    balance_after: int
    kind: str
    command_key: str
    cause: Cause
    details: dict[str, Any] | None
    occurred_at: datetime
    posted_at: datetime
    prev_hash: bytes
    hash: bytes
    lot: Lot | None = None

    @property
    def signed_amount(self) -> int:
        """The amount as seen from the member account: positive when points come in."""
        return self.amount if self.to_account_id == self.account_id else -self.amount


def payload_hash(command: Contract) -> bytes:
    """The hash that tells a replay (same key, same payload) from a conflict (same key, other payload)."""
    return hashlib.sha256(orjson.dumps(command.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)).digest()


def chain_hash(prev_hash: bytes, *, account_id: int, seq: int, from_account_id: int, to_account_id: int,
               amount: int, balance_after: int, kind: str, command_key: str, occurred_at: datetime) -> bytes:
    """Each entry's hash covers its content and the previous entry's hash on the same account."""
    content = (f"{account_id}|{seq}|{from_account_id}|{to_account_id}|{amount}|{balance_after}|{kind}|"
               f"{command_key}|{occurred_at.astimezone(UTC).isoformat()}").encode()
    return hashlib.sha256(prev_hash + content).digest()


def post_credit(account: Account, issued_account_id: int, cmd: PostCredit, posted_at: datetime) -> Entry:
    """Move `cmd.amount` from the programme's issued account to the member, as a new lot.

    Advances the account's chain in place, so several credits for one member in a batch chain up.
    """
    seq = account.seq + 1
    balance_after = account.balance + cmd.amount
    digest = chain_hash(account.last_hash, account_id=account.id, seq=seq, from_account_id=issued_account_id,
                        to_account_id=account.id, amount=cmd.amount, balance_after=balance_after, kind=cmd.kind,
                        command_key=cmd.idempotency_key, occurred_at=cmd.occurred_at)
    entry = Entry(
        program_id=cmd.program_id, member_id=cmd.member_id, account_id=account.id, seq=seq,
        from_account_id=issued_account_id, to_account_id=account.id, amount=cmd.amount,
        balance_after=balance_after, kind=cmd.kind, command_key=cmd.idempotency_key, cause=cmd.cause,
        details=cmd.details, occurred_at=cmd.occurred_at, posted_at=posted_at, prev_hash=account.last_hash,
        hash=digest, lot=Lot(cmd.amount, cmd.available_at or cmd.occurred_at, cmd.expires_at),
    )
    account.seq = seq
    account.balance = balance_after
    account.lifetime_earned += cmd.amount
    account.last_hash = digest
    return entry
