"""A small pure model of the ledger, written apart from services.ledger, for the model-based test to compare
the real service against. It knows lots, holds and debt, and nothing about entries, hashes or storage."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

FAR = datetime.max


@dataclass(eq=False)
class MLot:
    amount: int
    available_at: datetime
    expires_at: datetime | None
    order: int
    used: int = 0
    reserved: int = 0

    @property
    def free(self) -> int:
        return self.amount - self.used - self.reserved

    def key(self) -> tuple[bool, datetime, int]:
        return (self.expires_at is None, (self.expires_at or FAR).replace(tzinfo=None), self.order)


@dataclass
class MHold:
    amount: int
    expires_at: datetime
    parts: list[tuple[MLot, int]]
    resolved: bool = False


@dataclass
class MEntry:
    """What a reversal needs to know about an entry the model made."""

    member: str
    kind: str  # earn | redeem
    amount: int
    lots: list[MLot] = field(default_factory=list)  # made by an earn
    spent: list[tuple[MLot, int]] = field(default_factory=list)  # paid for a redeem
    reversed: int = 0


@dataclass
class MMember:
    lots: list[MLot] = field(default_factory=list)
    holds: dict[str, MHold] = field(default_factory=dict)
    debt: int = 0
    lifetime: int = 0

    def balance(self) -> int:
        return sum(lot.amount - lot.used for lot in self.lots) - self.debt

    def spendable(self, now: datetime) -> list[MLot]:
        return sorted((lot for lot in self.lots if lot.free > 0 and lot.available_at <= now
                       and (lot.expires_at is None or lot.expires_at > now)), key=MLot.key)

    def available(self, now: datetime) -> int:
        return sum(lot.free for lot in self.spendable(now)) - self.debt

    def pending(self, now: datetime) -> int:
        return sum(lot.free for lot in self.lots if lot.available_at > now)

    def held(self) -> int:
        return sum(h.amount for h in self.holds.values() if not h.resolved)


class Refusal(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Model:
    now: datetime
    members: dict[str, MMember] = field(default_factory=dict)
    order: int = 0

    def member(self, name: str) -> MMember:
        return self.members.setdefault(name, MMember())

    def _lot(self, m: MMember, amount: int, available_at: datetime, expires_at: datetime | None) -> MLot:
        self.order += 1
        lot = MLot(amount, available_at, expires_at, self.order)
        m.lots.append(lot)
        # New points pay debt first.
        pay = min(m.debt, lot.free)
        lot.used += pay
        m.debt -= pay
        return lot

    def _can_spend(self, m: MMember, amount: int) -> None:
        if m.balance() < 0:
            raise Refusal("negative_balance")
        if m.available(self.now) < amount:
            raise Refusal("insufficient_points")

    def _take(self, lots: list[MLot], amount: int) -> list[tuple[MLot, int]]:
        taken = []
        for lot in lots:
            part = min(lot.free, amount)
            if part > 0:
                lot.used += part
                amount -= part
                taken.append((lot, part))
        return taken

    def credit(self, name: str, amount: int, available_at: datetime, expires_at: datetime | None) -> MEntry:
        m = self.member(name)
        m.lifetime += amount
        return MEntry(name, "earn", amount, lots=[self._lot(m, amount, available_at, expires_at)])

    def debit(self, name: str, amount: int) -> MEntry:
        m = self.member(name)
        self._can_spend(m, amount)
        return MEntry(name, "redeem", amount, spent=self._take(m.spendable(self.now), amount))

    def place_hold(self, name: str, hold_id: str, amount: int, expires_at: datetime) -> None:
        m = self.member(name)
        self._can_spend(m, amount)
        parts, left = [], amount
        for lot in m.spendable(self.now):
            part = min(lot.free, left)
            lot.reserved += part
            parts.append((lot, part))
            left -= part
            if not left:
                break
        m.holds[hold_id] = MHold(amount, expires_at, parts)

    def _resolve(self, m: MMember, hold: MHold, captured: int) -> list[tuple[MLot, int]]:
        hold.resolved = True
        spent = []
        for lot, part in hold.parts:
            lot.reserved -= part
            take = min(part, captured)
            if take:
                lot.used += take
                spent.append((lot, take))
                captured -= take
            if lot.expires_at is not None and lot.expires_at <= self.now and part > take:
                lot.used += part - take  # released points of an expired lot expire at once
        for lot, _ in hold.parts:
            if lot.expires_at is None or lot.expires_at > self.now:
                pay = min(m.debt, lot.free)  # released points pay debt first
                lot.used += pay
                m.debt -= pay
        return spent

    def _open_hold(self, m: MMember, hold_id: str) -> MHold:
        hold = m.holds.get(hold_id)
        if hold is None:
            raise Refusal("hold_not_found")
        if hold.resolved:
            raise Refusal("hold_already_resolved")
        return hold

    def capture(self, name: str, hold_id: str, amount: int) -> MEntry | None:
        m = self.member(name)
        hold = self._open_hold(m, hold_id)
        if self.now >= hold.expires_at:
            self._resolve(m, hold, 0)
            raise Refusal("hold_expired")
        if amount > hold.amount:
            raise Refusal("capture_exceeds_hold")
        return MEntry(name, "redeem", amount, spent=self._resolve(m, hold, amount))

    def release(self, name: str, hold_id: str) -> None:
        m = self.member(name)
        self._resolve(m, self._open_hold(m, hold_id), 0)

    def expire_due(self) -> None:
        """What a sweep and its commands do: due holds resolve, then the unreserved part of due lots expires."""
        for m in self.members.values():
            for hold in m.holds.values():
                if not hold.resolved and hold.expires_at <= self.now:
                    self._resolve(m, hold, 0)
            for lot in m.lots:
                if lot.expires_at is not None and lot.expires_at <= self.now and lot.free > 0:
                    lot.used += lot.free

    def reverse(self, entry: MEntry, amount: int | None) -> None:
        m = self.member(entry.member)
        left = entry.amount - entry.reversed
        amount = left if amount is None else amount
        if amount > left:
            raise Refusal("reversal_exceeds_entry")
        skip = entry.reversed
        entry.reversed += amount
        if entry.kind == "earn":
            m.lifetime -= amount
            taken = sum(n for _, n in self._take(sorted(entry.lots, key=MLot.key), amount))
            others = sorted((lot for lot in m.lots if lot not in entry.lots and lot.free > 0), key=MLot.key)
            taken += sum(n for _, n in self._take(others, amount - taken))
            m.debt += amount - taken
            return
        left = amount
        for lot, n in entry.spent:
            part = min(n - min(skip, n), left)
            skip = max(0, skip - n)
            if part > 0:
                self._lot(m, part, lot.available_at, lot.expires_at)
                left -= part
        if left:
            self._lot(m, left, self.now, None)

    def transfer(self, source: str, target: str, amount: int) -> None:
        m, t = self.member(source), self.member(target)
        self._can_spend(m, amount)
        for lot, n in self._take(m.spendable(self.now), amount):
            self._lot(t, n, lot.available_at, lot.expires_at)

    def adjust(self, name: str, direction: str, amount: int) -> None:
        m = self.member(name)
        if direction == "credit":
            m.lifetime += amount
            self._lot(m, amount, self.now, None)
        else:
            self._can_spend(m, amount)
            self._take(m.spendable(self.now), amount)
