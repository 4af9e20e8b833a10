"""The ledger bench's workload: ledger commands as CloudEvents, planned against each member's expected balance so
that every one of them should be posted."""

from __future__ import annotations

import heapq
import random
import sys
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bench.baselines import BenchError
from shared import envelope, keys
from shared.contracts.base import Contract
from shared.contracts.ledger_commands import CaptureHold, PlaceHold, PostCredit, PostDebit, ReverseEntry

PROGRAM = "default"
SOURCE = "jifen.bench"
KINDS: dict[str, type[Contract]] = {"credit": PostCredit, "place": PlaceHold, "capture": CaptureHold,
                                    "debit": PostDebit, "reverse": ReverseEntry}
KIND_OF_TYPE = {contract.TYPE: kind for kind, contract in KINDS.items()}
MIX = {"place": 0.10, "capture": 0.10, "debit": 0.05, "reverse": 0.05}  # the rest are credits
CAPTURE_GAP = 200  # a hold is captured within this many commands of being placed (same member, same partition)
HOLD_TTL_S = 3600  # longer than any run, so no hold times out before its capture
PICK_TRIES = 200


@dataclass(frozen=True, slots=True)
class Command:
    key: str  # idempotency key
    member: str  # also the Kafka key
    kind: str  # a key of KINDS
    value: bytes  # the CloudEvent


@dataclass
class Wallet:
    """What the bench expects of a member's account, to plan commands that should all be posted."""

    balance: int = 0
    held: int = 0
    credits: list[tuple[int, int]] = field(default_factory=list)  # (entry id, points) of (a)'s, not reversed

    @property
    def available(self) -> int:
        return self.balance - self.held


class CommandMaker:
    """Ledger commands as CloudEvents, shaped like the ones earn and redemption send."""

    def __init__(self, run_id: str, now: datetime) -> None:
        self.run_id = run_id
        self.now = now
        self.stamp = now.isoformat().replace("+00:00", "Z")

    def make(self, kind: str, key: str, member: str, reason: str, **fields: Any) -> Command:
        data = {"idempotency_key": key, "program_id": PROGRAM, "member_id": member, "occurred_at": self.stamp,
                "cause": {"source_event_id": f"bench://{self.run_id}|{key}", "reason": reason}, **fields}
        value = envelope.encode(key, SOURCE, KINDS[kind].TYPE, self.now, data, subject=member)
        return Command(key, member, kind, value)

    def credit(self, key: str, member: str, points: int) -> Command:
        rule = {"rule_id": "base", "points": points, "rate": "1", "rounding": "floor"}
        return self.make("credit", key, member, "purchase", amount=points, available_at=self.stamp,
                         details={"order_id": key, "total": f"{points}.40", "currency": "CNY", "rules": [rule]})


def check_contracts(commands: list[Command]) -> None:
    """Parse and validate the first command of each kind as the ledger will, so a contract that moved on shows
    up here with its reason rather than as commands silently going to the DLQ."""
    seen: set[str] = set()
    for command in commands:
        if command.kind in seen:
            continue
        seen.add(command.kind)
        try:
            event = envelope.parse(command.value, envelope.STRUCTURED_HEADERS)
            KINDS[KIND_OF_TYPE[event.type]].model_validate(event.data)
        except Exception as exc:
            raise BenchError(f"the bench's {command.kind} command no longer fits the contract: {exc}") from exc


def plan_credits(maker: CommandMaker, count: int, wallets: dict[str, Wallet], rng: random.Random) -> list[Command]:
    members = sorted(wallets)
    commands = []
    for n in range(count):
        member = members[rng.randrange(len(members))]
        points = rng.randint(6, 600)
        wallets[member].balance += points
        commands.append(maker.credit(keys.bench_command(maker.run_id, "credit", n), member, points))
    return commands


def plan_mix(maker: CommandMaker, count: int, wallets: dict[str, Wallet], rng: random.Random) -> list[Command]:
    """`count` commands in MIX's shares, each planned against the expected balances so that it should be posted.
    A member's commands share a partition, so the ledger applies them in this order."""
    sizes = {kind: round(count * share) for kind, share in MIX.items()}
    sizes["capture"] = sizes["place"]
    sizes["credit"] = count - sum(sizes.values())
    slots = [kind for kind in ("credit", "place", "debit", "reverse") for _ in range(sizes[kind])]
    rng.shuffle(slots)
    members = sorted(wallets)
    captures: list[tuple[int, int, Command, int]] = []  # heap of (due position, hold number, capture, points)
    out: list[Command] = []

    def spender(points: int) -> str:
        for _ in range(PICK_TRIES):
            member = members[rng.randrange(len(members))]
            if wallets[member].available >= points:
                return member
        raise BenchError(f"no member found with {points} points available: raise --credits or lower --members")

    def capture_due(until: int) -> None:
        while captures and captures[0][0] <= until:
            _, _, capture, points = heapq.heappop(captures)
            wallets[capture.member].held -= points
            wallets[capture.member].balance -= points
            out.append(capture)

    for n, slot in enumerate(slots):
        capture_due(len(out))
        key = keys.bench_command(maker.run_id, "mix", n)
        if slot == "credit":
            member = members[rng.randrange(len(members))]
            points = rng.randint(6, 600)
            wallets[member].balance += points
            out.append(maker.credit(key, member, points))
        elif slot == "debit":
            points = rng.randint(10, 300)
            member = spender(points)
            wallets[member].balance -= points
            out.append(maker.make("debit", key, member, "redemption", amount=points))
        elif slot == "place":
            points = rng.randint(10, 300)
            member = spender(points)
            hold_id = f"bench-{maker.run_id}-hold-{n}"
            wallets[member].held += points
            out.append(maker.make("place", key, member, "redemption", hold_id=hold_id, amount=points,
                                  ttl_seconds=HOLD_TTL_S))
            capture = maker.make("capture", f"{key}:capture", member, "redemption", hold_id=hold_id, amount=points)
            heapq.heappush(captures, (len(out) + rng.randint(1, CAPTURE_GAP), n, capture, points))
        else:
            out.append(_reversal(maker, key, members, wallets, rng))
    capture_due(sys.maxsize)
    return out


def _reversal(maker: CommandMaker, key: str, members: list[str], wallets: dict[str, Wallet],
              rng: random.Random) -> Command:
    """A refund: reverse one of (a)'s credits, of a member who still has its points free (so no debt)."""
    for _ in range(PICK_TRIES):
        member = members[rng.randrange(len(members))]
        wallet = wallets[member]
        if not wallet.credits:
            continue
        i = rng.randrange(len(wallet.credits))
        entry_id, points = wallet.credits[i]
        if wallet.available >= points:
            wallet.credits[i] = wallet.credits[-1]
            wallet.credits.pop()
            wallet.balance -= points
            return maker.make("reverse", key, member, "refund", entry_id=entry_id)
    raise BenchError("no reversible credit found with its points still free: raise --credits or lower --members")


