"""Ledger use cases: a batch of commands in, entries and outcomes out, in one unit of work."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter

from services.ledger import domain, repository
from services.ledger.domain import Entry
from shared import envelope
from shared.consumer import Inbound, Rejections, Retryable
from shared.contracts import (
    COMMAND_REJECTED,
    COMMAND_TYPE_OF,
    ENTRY_POSTED,
    CommandRejected,
    LotView,
    PointsEntryPosted,
    PostCredit,
)
from shared.outbox import OutboxMessage
from shared.uow import UnitOfWork

SOURCE = "jifen.ledger"


class LedgerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.entries = Counter("jifen_ledger_entries", "Entries posted", ["program", "kind"], registry=registry)
        self.points = Counter("jifen_ledger_points", "Points moved by posted entries", ["program", "kind"],
                              registry=registry)
        self.rejected = Counter("jifen_ledger_commands_rejected", "Commands rejected, by reason", ["reason"],
                                registry=registry)
        self.replays = Counter("jifen_ledger_command_replays", "Commands seen before with the same payload",
                               registry=registry)


@dataclass
class ApplyCommands:
    """Apply a batch of ledger commands. Idempotent by command key and payload hash."""

    entries_topic: str
    metrics: LedgerMetrics
    clock: Callable[[], datetime]

    async def __call__(self, items: list[Inbound], uow: UnitOfWork, rejections: Rejections) -> None:
        now = self.clock()
        # Outcomes go out in command order, so a member's outcomes arrive in the order of their commands.
        outcomes: dict[int, OutboxMessage] = {}
        fresh = await self._sort_out_replays(items, uow, now, outcomes)
        credits = [(item, item.data, digest) for item, digest in fresh if isinstance(item.data, PostCredit)]
        if credits:
            await self._post_credits(credits, uow, now, outcomes)
        order = {id(item): n for n, item in enumerate(items)}
        for key in sorted(outcomes, key=order.__getitem__):
            uow.publish(outcomes[key])

    async def _post_credits(self, credits: list[tuple[Inbound, PostCredit, bytes]], uow: UnitOfWork, now: datetime,
                            outcomes: dict[int, OutboxMessage]) -> None:
        programs = {cmd.program_id for _, cmd, _ in credits}
        keys = [(cmd.program_id, "member", cmd.member_id) for _, cmd, _ in credits]
        keys += [(program, "issued", "") for program in programs]
        rows = await repository.accounts(uow.db, keys)
        members = {k: repository.member_account(r) for k, r in rows.items() if k[1] == "member"}
        read_at = {a.id: a.seq for a in members.values()}
        entries: list[Entry] = []
        for _, cmd, _ in credits:
            account = members[(cmd.program_id, "member", cmd.member_id)]
            issued = rows[(cmd.program_id, "issued", "")]["id"]
            entries.append(domain.post_credit(account, issued, cmd, now))
        claimed = await repository.claim_commands(
            uow.db, [(cmd.idempotency_key, digest, COMMAND_TYPE_OF[type(cmd)], cmd.program_id, cmd.member_id,
                      "posted", None) for _, cmd, digest in credits], now)
        if claimed != len(credits):
            raise Retryable("another consumer claimed some of these commands first")
        entry_ids = await repository.insert_entries(uow.db, entries)
        touched = {e.account_id for e in entries}
        changed = [(a, read_at[a.id]) for a in members.values() if a.id in touched]
        if not await repository.advance_accounts(uow.db, changed):
            raise Retryable("an account moved on since it was read")
        for (item, _, _), entry_id, entry in zip(credits, entry_ids, entries, strict=True):
            outcomes[id(item)] = self._posted(entry_id, entry)
            self.metrics.entries.labels(entry.program_id, entry.kind).inc()
            self.metrics.points.labels(entry.program_id, entry.kind).inc(entry.amount)

    async def _sort_out_replays(self, items: list[Inbound], uow: UnitOfWork, now: datetime,
                                outcomes: dict[int, OutboxMessage]) -> list[tuple[Inbound, bytes]]:
        """Keep first sightings; drop replays; answer conflicting replays with a rejection."""
        known = await repository.known_commands(uow.db, [i.data.idempotency_key for i in items])  # type: ignore[attr-defined]
        fresh: list[tuple[Inbound, bytes]] = []
        for item in items:
            cmd = item.data
            key: str = cmd.idempotency_key  # type: ignore[attr-defined]
            digest = domain.payload_hash(cmd)
            prior = known.get(key)
            if prior is None:
                known[key] = digest
                fresh.append((item, digest))
            elif prior == digest:
                self.metrics.replays.inc()
            else:
                outcomes[id(item)] = self._rejected(item, "idempotency_conflict",
                                                    f"key {key!r} was already used for a command with another "
                                                    "payload", now)
        return fresh

    def _rejected(self, item: Inbound, reason: str, detail: str, now: datetime) -> OutboxMessage:
        cmd = item.data
        rejected = CommandRejected(
            program_id=cmd.program_id, member_id=cmd.member_id,  # type: ignore[attr-defined]
            idempotency_key=cmd.idempotency_key, command_type=item.event.type,  # type: ignore[attr-defined]
            reason=reason, detail=detail)
        event_id = f"rejected:{item.event.event_id}"
        self.metrics.rejected.labels(reason).inc()
        return OutboxMessage(
            topic=self.entries_topic, key=rejected.member_id.encode(),
            value=envelope.encode(event_id, SOURCE, COMMAND_REJECTED, now, rejected.model_dump(mode="json"),
                                  subject=rejected.idempotency_key),
            headers=envelope.STRUCTURED_HEADERS)

    def _posted(self, entry_id: int, entry: Entry) -> OutboxMessage:
        posted = PointsEntryPosted(
            entry_id=entry_id, program_id=entry.program_id, member_id=entry.member_id, seq=entry.seq,
            amount=entry.signed_amount, balance_after=entry.balance_after, kind=entry.kind,
            idempotency_key=entry.command_key, cause=entry.cause, occurred_at=entry.occurred_at,
            posted_at=entry.posted_at, hash=entry.hash.hex(),
            lot=LotView(available_at=entry.lot.available_at, expires_at=entry.lot.expires_at) if entry.lot else None)
        return OutboxMessage(
            topic=self.entries_topic, key=entry.member_id.encode(),
            value=envelope.encode(f"entry:{entry_id}", SOURCE, ENTRY_POSTED, entry.posted_at,
                                  posted.model_dump(mode="json"), subject=entry.command_key),
            headers=envelope.STRUCTURED_HEADERS)
