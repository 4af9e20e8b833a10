"""Unit of work: one database transaction holding the inbox claims, the state and the outbox rows.

A handler gets a unit of work and cannot forget the inbox or the outbox: claims happen before the handler runs,
and every message it emits becomes an outbox row written just before the commit, in the same transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any

import asyncpg
from asyncpg.transaction import Transaction
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared import envelope, outbox
from shared.contracts import topics
from shared.contracts.base import Contract
from shared.contracts.ledger_commands import LedgerCommand
from shared.outbox import OutboxMessage


class UnitOfWork:
    def __init__(self, engine: AsyncEngine, schema: str, source: str, topic_prefix: str = "") -> None:
        self.engine = engine
        self.schema = schema
        self.source = source  # the CloudEvents source of what this unit emits, e.g. `jifen.earn`
        self.topic_prefix = topic_prefix
        self.messages: list[OutboxMessage] = []
        self.after_commit: list[Callable[[], None]] = []  # e.g. metrics, counted only once the batch is stored
        self._committed = False
        self._conn: AsyncConnection | None = None
        self._tx: Transaction | None = None
        self._db: asyncpg.Connection | None = None

    @property
    def db(self) -> asyncpg.Connection:
        """The driver connection inside the transaction, for multi-row statements on hot paths."""
        assert self._db is not None, "unit of work not entered"
        return self._db

    async def __aenter__(self) -> UnitOfWork:
        self.messages = []
        self.after_commit = []
        self._committed = False
        self._conn = await self.engine.connect()
        try:
            # The transaction is opened on the driver connection itself: SQLAlchemy's asyncpg adapter
            # begins lazily, on its own first statement, and would leave our statements in autocommit.
            raw = await self._conn.get_raw_connection()
            self._db = raw.driver_connection
            self._tx = self.db.transaction()
            await self._tx.start()
        except BaseException:
            await self._conn.close()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        assert self._conn is not None
        try:
            if self._tx is not None and not self._committed:
                try:
                    await self._tx.rollback()
                except Exception:  # the connection is gone (database down): drop it from the pool
                    await self._conn.invalidate()
        finally:
            await self._conn.close()
            self._conn = self._tx = self._db = None

    def emit(self, data: Contract, *, at: datetime, event_id: str | None = None, key: str | None = None,
             subject: str | None = None, source: str | None = None) -> None:
        """Send a message (a public event or a ledger command) when this unit commits.

        It goes to its type's topic as a structured CloudEvent of `data`'s type, stamped `at`. A ledger command's
        event id is its idempotency key; the Kafka key is the member (`key` overrides it), so one member's messages
        stay in order on one partition."""
        if event_id is None:
            if not isinstance(data, LedgerCommand):
                raise TypeError(f"emitting {type(data).__name__} needs an event_id derived from its cause")
            event_id = data.idempotency_key
        self.emit_json(type(data), data.model_dump(mode="json"), at=at, event_id=event_id,
                       key=key if key is not None else _member_of(data), subject=subject, source=source)

    def emit_json(self, contract: type[Contract], data: Mapping[str, Any], *, at: datetime, event_id: str, key: str,
                  subject: str | None = None, source: str | None = None) -> None:
        """`emit` for a hot path that builds the contract's JSON as a plain dict (a unit test must hold the two
        equal, as for the ledger's entries)."""
        topic = topics.named(topics.channel_of(contract).topic, self.topic_prefix)
        value = envelope.encode(event_id, source or self.source, contract.TYPE, at, data, subject=subject)
        self.messages.append(OutboxMessage(topic, key.encode(), value, envelope.STRUCTURED_HEADERS))

    def dead_letter(self, message: OutboxMessage) -> None:
        self.messages.append(message)

    async def claim(self, event_ids: Sequence[str], replays: Mapping[str, str] | None = None) -> set[str]:
        """Record the ids in the inbox; returns those not seen before (the others are duplicates).

        `replays` maps the ids of records sent back by `jifen dlq replay` to their replay's mark: such an id already
        claimed is fresh again if it was refused, and by another delivery than this replay."""
        if not event_ids:
            return set()
        rows = await self.db.fetch(
            "INSERT INTO inbox (event_id) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING RETURNING event_id",
            list(event_ids))
        claimed = {r["event_id"] for r in rows}
        again = {event_id: mark for event_id, mark in (replays or {}).items() if event_id not in claimed}
        if again:
            rows = await self.db.fetch(
                """UPDATE inbox SET refused_in = NULL, received_at = now()
                   FROM unnest($1::text[], $2::text[]) AS r(event_id, mark)
                   WHERE inbox.event_id = r.event_id AND refused_in IS NOT NULL AND refused_in <> r.mark
                   RETURNING inbox.event_id""",
                list(again), list(again.values()))
            claimed |= {r["event_id"] for r in rows}
        return claimed

    async def refuse(self, refused: Mapping[str, str]) -> None:
        """Mark ids claimed in this unit as refused by a business rule, in the delivery `mark` names ('' for the
        first): a replay of the event once its cause is fixed may then try it again (see `claim`)."""
        if refused:
            await self.db.execute(
                """UPDATE inbox SET refused_in = r.mark FROM unnest($1::text[], $2::text[]) AS r(event_id, mark)
                   WHERE inbox.event_id = r.event_id""", list(refused), list(refused.values()))

    async def commit(self) -> None:
        assert self._tx is not None
        await outbox.write(self.db, self.schema, self.messages)
        await self._tx.commit()
        self._committed = True
        for done in self.after_commit:
            done()

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return await self.db.fetch(sql, *args)


def _member_of(data: Contract) -> str:
    member = getattr(data, "member_id", None)
    if not isinstance(member, str):
        raise TypeError(f"{type(data).__name__} has no member_id: give the Kafka key")
    return member

