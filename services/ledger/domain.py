"""Ledger values: accounts, entries, lots, holds, and the hash chain. Pure: no I/O and no clock.

A member's state in memory is a `MemberBook`: the account tip, its open lots (with what is used and
reserved of each), its open holds and its outstanding debts. The rules in `services.ledger.rules`
change books and record every change in an `Additions`, which the repository then stores append-only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from shared.contracts.base import Contract
from shared.contracts.ledger_commands import Cause

GENESIS_HASH = bytes(32)
# The CloudEvents source of what an admin call sends: a programme trusts it to honour blocks, and the ledger wakes
# the admin calls waiting for their commands.
ADMIN_SOURCE = "jifen.admin"
SYSTEM_ACCOUNTS = ("issued", "redeemed", "expired", "adjustments", "transfers")
# Credits that count as earned (tiers read lifetime_earned); reversing one takes it back off.
EARNING_KINDS = frozenset({"earn", "adjust_credit"})


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
    debt: int = 0
    version: int = 0


@dataclass(eq=False, slots=True)
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
    corrects_entry_id: int | None = None
    hold_id: str | None = None
    id: int | None = None  # assigned when stored
    lots: list[LotState] = field(default_factory=list)  # the lots this entry made

    @property
    def signed_amount(self) -> int:
        """The amount as seen from the member account: positive when points come in."""
        return self.amount if self.to_account_id == self.account_id else -self.amount


@dataclass(eq=False, slots=True)
class LotState:
    """An open lot: `used` is what allocations took, `reserved` what open holds keep. Neither is stored;
    both are sums of append-only rows."""

    id: int | None  # None until stored
    account_id: int
    amount: int
    available_at: datetime
    expires_at: datetime | None
    ordinal: int  # creation order: the id for stored lots, later numbers for lots made in this batch
    used: int = 0
    reserved: int = 0
    entry: Entry | None = None  # the entry that made it, when made in this batch
    entry_id: int | None = None
    origin: LotState | None = None  # the lot a transferred or restored lot descends from
    origin_id: int | None = None

    @property
    def free(self) -> int:
        return self.amount - self.used - self.reserved

    def pending(self, now: datetime) -> bool:
        return self.available_at > now

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def spendable(self, now: datetime) -> bool:
        return not self.pending(now) and not self.expired(now)

    @property
    def made_by_entry_id(self) -> int | None:
        return self.entry.id if self.entry is not None else self.entry_id


def spend_order(lot: LotState) -> tuple[bool, datetime, int]:
    """Soonest-expiring first; lots that never expire last; then oldest."""
    return (lot.expires_at is None, lot.expires_at or datetime.max.replace(tzinfo=UTC), lot.ordinal)


@dataclass(eq=False, slots=True)
class HoldState:
    hold_id: str
    account_id: int
    amount: int
    expires_at: datetime
    reservations: list[tuple[LotState, int]]
    resolved: bool = False


@dataclass(eq=False, slots=True)
class DebtState:
    """A debit entry's part that no lot paid for yet."""

    entry: Entry | int  # the entry, or its id when stored earlier
    outstanding: int


@dataclass(eq=False, slots=True)
class MemberBook:
    account: Account
    lots: list[LotState] = field(default_factory=list)
    holds: dict[str, HoldState] = field(default_factory=dict)
    debts: list[DebtState] = field(default_factory=list)
    complete: bool = True  # False when only the tip was loaded (enough for credits to a member without debt)
    read_version: int = 0

    def __post_init__(self) -> None:
        self.read_version = self.account.version

    def spendable_free(self, now: datetime) -> int:
        return sum(lot.free for lot in self.lots if lot.free > 0 and lot.spendable(now))

    def available(self, now: datetime) -> int:
        """What the member can spend now: free points of lots that matured and did not expire, less debt."""
        return self.spendable_free(now) - self.account.debt

    def pending(self, now: datetime) -> int:
        return sum(lot.free for lot in self.lots if lot.free > 0 and lot.pending(now))

    def held(self) -> int:
        return sum(h.amount for h in self.holds.values() if not h.resolved)

    def awaiting_expiry(self, now: datetime) -> int:
        """Free points of lots past their expiry that the sweeper has not expired yet: not spendable."""
        return sum(lot.free for lot in self.lots if lot.free > 0 and not lot.pending(now) and lot.expired(now))

    def next_expiry(self, now: datetime) -> tuple[int, datetime] | None:
        upcoming = [lot for lot in self.lots if lot.expires_at is not None and lot.expires_at > now
                    and lot.free + lot.reserved > 0]
        if not upcoming:
            return None
        first = min(lot.expires_at for lot in upcoming if lot.expires_at is not None)
        return sum(lot.free + lot.reserved for lot in upcoming if lot.expires_at == first), first


@dataclass(frozen=True, slots=True)
class Allocation:
    debit: Entry | int  # the debit entry paid for (an id when it was stored in an earlier batch)
    lot: LotState
    amount: int
    by: Entry | int  # the entry that made this allocation (the debt's own when a released hold repays it)


@dataclass(frozen=True, slots=True)
class Resolution:
    hold: HoldState
    outcome: str  # captured | released | expired
    captured: int
    entry: Entry | None
    command_key: str
    resolved_at: datetime


@dataclass
class Additions:
    """Everything a batch of commands adds: stored append-only by the repository, in one transaction."""

    entries: list[Entry] = field(default_factory=list)
    lots: list[LotState] = field(default_factory=list)
    allocations: list[Allocation] = field(default_factory=list)
    closures: list[tuple[LotState, Entry | int]] = field(default_factory=list)
    debts: list[tuple[Entry, int]] = field(default_factory=list)
    # (hold, programme, command key, placed at)
    holds: list[tuple[HoldState, str, str, datetime]] = field(default_factory=list)
    resolutions: list[Resolution] = field(default_factory=list)
    next_ordinal: int = 1 << 62


def payload_hash(command: Contract) -> bytes:
    """The hash that tells a replay (same key, same payload) from a conflict (same key, other payload)."""
    # model_dump_json is pydantic's fast path; sorting the keys keeps extra fields' order out of the hash.
    return hashlib.sha256(orjson.dumps(orjson.loads(command.model_dump_json()), option=orjson.OPT_SORT_KEYS)).digest()


def chain_hash(prev_hash: bytes, *, account_id: int, seq: int, from_account_id: int, to_account_id: int,
               amount: int, balance_after: int, kind: str, command_key: str, occurred_at: datetime) -> bytes:
    """Each entry's hash covers its content and the previous entry's hash on the same account."""
    content = (f"{account_id}|{seq}|{from_account_id}|{to_account_id}|{amount}|{balance_after}|{kind}|"
               f"{command_key}|{occurred_at.astimezone(UTC).isoformat()}").encode()
    return hashlib.sha256(prev_hash + content).digest()
