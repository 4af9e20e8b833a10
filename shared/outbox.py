"""The outbox: messages written with the state that caused them, published by one relay per service."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer

from shared import keys
from shared.db import advisory_key, connect
from shared.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    topic: str
    key: bytes | None
    value: bytes
    headers: Sequence[tuple[str, bytes]] = field(default_factory=tuple)


def channel(schema: str) -> str:
    return f"{schema}_outbox"


async def write(conn: asyncpg.Connection, schema: str, messages: Sequence[OutboxMessage]) -> None:
    """Insert the messages in one statement and wake the relay when the transaction commits."""
    if not messages:
        return
    await conn.execute(
        """INSERT INTO outbox (topic, key, value, headers)
           SELECT * FROM unnest($1::text[], $2::bytea[], $3::bytea[], $4::jsonb[])""",
        [m.topic for m in messages], [m.key for m in messages], [m.value for m in messages],
        [encode_headers(m.headers) for m in messages],
    )
    await conn.execute(f"NOTIFY {channel(schema)}")


def encode_headers(headers: Sequence[tuple[str, bytes]]) -> str | None:
    return orjson.dumps([[k, v.hex()] for k, v in headers]).decode() if headers else None


def decode_headers(raw: str | list[list[str]] | None) -> list[tuple[str, bytes]]:
    """The headers column as read: text on a bare asyncpg connection, already decoded on an engine's."""
    pairs = orjson.loads(raw) if isinstance(raw, str) else raw or []
    return [(k, bytes.fromhex(v)) for k, v in pairs]


class OutboxRelay:
    """Publishes the outbox in id order; exactly one relay per schema is active (advisory lock)."""

    def __init__(self, dsn: str, schema: str, producer: AIOKafkaProducer, metrics: Metrics,
                 batch_size: int = 5000, poll_interval_s: float = 1.0) -> None:
        self.service = metrics.service
        self.dsn = dsn
        self.schema = schema
        self.producer = producer
        self.metrics = metrics
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self.lock_key = advisory_key(keys.outbox_lock(schema))
        self.is_leader = False
        self._connected = True  # connected since the last failure (so the next failure starts a streak)
        self._wake = asyncio.Event()

    async def run(self) -> None:
        """Run until cancelled, reconnecting after database failures."""
        delay = 0.2
        while True:
            try:
                await self._lead()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # reconnect after any failure; the rows stay in the outbox
                self.is_leader = False
                if self._connected:  # a new streak: said once (an outage's start and end: shared.outages)
                    self._connected, delay = False, 0.2
                    log.warning("outbox relay interrupted; it reconnects until it can publish",
                                extra={"error": repr(exc)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _lead(self) -> None:
        conn = await connect(self.dsn, self.schema, timeout_s=5)
        self._connected = True
        try:
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", self.lock_key):
                self.is_leader = False
                await asyncio.sleep(2.0)
            self.is_leader = True
            await conn.add_listener(channel(self.schema), lambda *_: self._wake.set())
            log.info("outbox relay is leader", extra={"schema": self.schema})
            while True:
                self._wake.clear()
                sent = await self.publish_once(conn)
                if sent < self.batch_size:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self.poll_interval_s)
        finally:
            self.is_leader = False
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2)

    async def publish_once(self, conn: asyncpg.Connection) -> int:
        rows = await conn.fetch(
            "SELECT id, topic, key, value, headers, created_at FROM outbox ORDER BY id LIMIT $1",
            self.batch_size)
        if not rows:
            self.metrics.outbox_backlog.labels(self.service).set(0)
            self.metrics.outbox_oldest_age.labels(self.service).set(0)
            return 0
        oldest = rows[0]["created_at"].timestamp()
        self.metrics.outbox_oldest_age.labels(self.service).set(max(0.0, time.time() - oldest))
        futures = [
            await self.producer.send(r["topic"], r["value"], key=r["key"],
                                     headers=decode_headers(r["headers"]))
            for r in rows
        ]
        await asyncio.gather(*futures)  # every row acknowledged by the broker before any is deleted
        await conn.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", [r["id"] for r in rows])
        self.metrics.outbox_published.labels(self.service).inc(len(rows))
        backlog = await conn.fetchval("SELECT count(*) FROM outbox")
        self.metrics.outbox_backlog.labels(self.service).set(backlog)
        return len(rows)
