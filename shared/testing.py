"""The fast test tier: a service's real consumer, jobs and HTTP routes over real PostgreSQL, without Kafka.

`ServiceHarness(spec, database_url)` builds the service from its spec exactly as `build_app` does, but instead of
a broker it takes records by hand: `feed` runs them through the real `BatchConsumer.process` (parse, route, inbox,
handlers, DLQ, retries, one transaction per batch) and returns what the service wrote to its outbox, as its relay
would have published it: messages by topic, and dead letters with their reasons. `run_job` runs one round of a
periodic job at a time passed in; `get`/`post` call the HTTP routes in-process with an API key of the harness.

What this tier does not test is Kafka's delivery: offsets, rebalances, a process killed mid-batch. Those stay in
tests/e2e/, which run services as processes against a real broker.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import httpx
import orjson
from aiokafka import ConsumerRecord

from shared import auth, db
from shared.consumer import BatchConsumer
from shared.contracts.base import Contract
from shared.outbox import decode_headers
from shared.service import Runtime, ServiceSpec, build_app
from shared.subscription import groups

STRUCTURED = [("content-type", b"application/cloudevents+json")]


@dataclass(frozen=True)
class Sent:
    """A message the service emitted, decoded."""

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]

    @property
    def event(self) -> dict[str, Any]:
        decoded: dict[str, Any] = orjson.loads(self.value)
        return decoded

    @property
    def type(self) -> str:
        return str(self.event["type"])

    @property
    def data(self) -> dict[str, Any]:
        data: dict[str, Any] = self.event["data"]
        return data

    def record(self, offset: int = 0, partition: int = 0) -> ConsumerRecord[bytes, bytes]:
        """As a consumer of its topic would receive it."""
        return record(self.topic, self.value, key=self.key, headers=self.headers, offset=offset, partition=partition)


@dataclass(frozen=True)
class DeadLetter:
    topic: str  # the topic the record came from
    reason: str
    detail: str
    value: bytes
    headers: dict[str, str]


@dataclass
class Delivered:
    """What a feed (or a job) made the service write: its messages, and the records it dead-lettered."""

    messages: list[Sent] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)

    def of(self, contract: type[Contract]) -> list[dict[str, Any]]:
        """The data of every emitted message of this type, in order."""
        return [m.data for m in self.messages if m.type == contract.TYPE]

    def on(self, topic: str) -> list[Sent]:
        return [m for m in self.messages if m.topic == topic]

    @property
    def reasons(self) -> list[str]:
        return [d.reason for d in self.dead]

    def __add__(self, other: Delivered) -> Delivered:
        return Delivered(self.messages + other.messages, self.dead + other.dead)

    def __iadd__(self, other: Delivered) -> Delivered:
        self.messages += other.messages
        self.dead += other.dead
        return self


def record(topic: str, value: bytes, *, key: bytes | str | None = None, headers: Sequence[tuple[str, bytes]] = (),
           offset: int = 0, partition: int = 0) -> ConsumerRecord[bytes, bytes]:
    """A Kafka record as the consumer gets it."""
    key_bytes = key.encode() if isinstance(key, str) else key
    return ConsumerRecord(topic, partition, offset, 0, 0, key_bytes, value, None, len(key_bytes or b""), len(value),
                          list(headers))


def cloud_event(contract: type[Contract], event_id: str, at: datetime, data: dict[str, Any],
                source: str = "test://harness") -> bytes:
    """A structured-mode CloudEvent of `contract`'s type."""
    return orjson.dumps({"specversion": "1.0", "id": event_id, "source": source, "type": contract.TYPE,
                         "time": at.isoformat().replace("+00:00", "Z"), "datacontenttype": "application/json",
                         "data": data})


class ServiceHarness:
    def __init__(self, spec: ServiceSpec, database_url: str) -> None:
        spec.settings = spec.settings.model_copy(update={"database_url": database_url, "topic_prefix": "",
                                                         "api_key_cache_s": 0.0})
        self.spec = spec
        self.app = build_app(spec)
        self.runtime: Runtime = self.app.state.runtime
        self.consumer: BatchConsumer | None = None  # the service's own group
        self.consumers: list[BatchConsumer] = []  # every group's, the service's own first
        self.token = ""
        self._offsets = itertools.count()

    async def __aenter__(self) -> ServiceHarness:
        await self.runtime.open_storage()
        self.consumers = [self.runtime.consumer(group) for group in groups(self.spec.subscriptions) or [""]]
        self.consumer = self.consumers[0]
        conn = await db.connect(self.spec.settings.asyncpg_dsn)
        try:
            _, self.token = await auth.create_key(conn, "harness", ["admin"])
        finally:
            await conn.close()
        return self

    async def __aexit__(self, *_: object) -> None:
        if self.runtime.engine is not None:
            await self.runtime.engine.dispose()

    async def feed(self, records: Iterable[ConsumerRecord[Any, Any]]) -> Delivered:
        """One batch through the real consumer (each group's, as Kafka delivers a record to every group reading its
        topic); returns what it wrote to the outbox."""
        assert self.consumer is not None, "use the harness as `async with`"
        records = list(records)
        if len(self.consumers) == 1:  # every record to the one group, as before: a topic it does not read fails
            await self.consumer.process(records)
        else:
            for consumer in self.consumers:
                mine = [r for r in records if r.topic in consumer.routes]
                if mine:
                    await consumer.process(mine)
        return await self.drain()

    @property
    def reads(self) -> set[str]:
        """The topics any of the service's groups reads."""
        return {topic for consumer in self.consumers for topic in consumer.routes}

    async def send(self, topic: str, *values: bytes, key: str = "m", headers: Sequence[tuple[str, bytes]] = STRUCTURED
                   ) -> Delivered:
        """Values as one batch of records on `topic`, with consecutive offsets."""
        return await self.feed([record(topic, v, key=key, headers=headers, offset=next(self._offsets))
                                for v in values])

    async def deliver(self, sent: Iterable[Sent]) -> Delivered:
        """Messages another service emitted, delivered to this one as one batch (those on topics it reads)."""
        assert self.consumer is not None
        wanted = self.reads
        return await self.feed([m.record(offset=next(self._offsets)) for m in sent if m.topic in wanted])

    async def run_job(self, name: str, now: datetime) -> tuple[int | None, Delivered]:
        """One round of a periodic job at `now`: the items it handled (None: another holder of its lock) and what it
        emitted."""
        done = await self.runtime.jobs[name].run_once(now)
        return done, await self.drain()

    async def drain(self) -> Delivered:
        """Take every outbox row, as the relay would publish it."""
        async with self.runtime.connection() as conn:
            rows = await conn.fetch("DELETE FROM outbox RETURNING id, topic, key, value, headers")
        delivered = Delivered()
        for r in sorted(rows, key=lambda row: row["id"]):
            headers = decode_headers(r["headers"])
            if r["topic"].endswith(".dlq"):
                named = {k: v.decode(errors="replace") for k, v in headers}
                delivered.dead.append(DeadLetter(named["jifen-dlq-source-topic"], named["jifen-dlq-reason"],
                                                 named["jifen-dlq-detail"], bytes(r["value"]), named))
            else:
                key = bytes(r["key"]) if r["key"] is not None else None
                delivered.messages.append(Sent(r["topic"], key, bytes(r["value"]), headers))
        return delivered

    async def request(self, method: str, path: str, *, token: str | None = None, **kwargs: Any) -> httpx.Response:
        """An HTTP request to the service's routes, in-process, with the harness's admin key unless given another
        (`token=""`: none)."""
        token = self.token if token is None else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://harness") as client:
            return await client.request(method, path, headers={**headers, **kwargs.pop("headers", {})}, **kwargs)

    async def get(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        response = await self.request("GET", path, **kwargs)
        return response.status_code, response.json()

    async def query(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        """Read the service's own tables (tests only: no service reads another's)."""
        async with self.runtime.connection() as conn:
            return await conn.fetch(sql, *args)



class Pipeline:
    """Several services' harnesses on one database, chained the way Kafka chains them: what one emits on a topic
    another reads is delivered to it, batch by batch, until nothing more moves (earn's credits reach the ledger,
    the ledger's outcomes reach whoever reads them)."""

    def __init__(self, *services: ServiceHarness) -> None:
        self.services = services

    async def __aenter__(self) -> Pipeline:
        for service in self.services:
            await service.__aenter__()
        return self

    async def __aexit__(self, *_: object) -> None:
        for service in self.services:
            await service.__aexit__()

    def __getitem__(self, name: str) -> ServiceHarness:
        return next(s for s in self.services if s.spec.name == name)

    async def send(self, topic: str, *values: bytes, key: str = "m",
                   headers: Sequence[tuple[str, bytes]] = STRUCTURED) -> Delivered:
        """Values as one batch on `topic` to every service that reads it, then everything that follows."""
        sent = [Sent(topic, key.encode(), value, list(headers)) for value in values]
        return await self.settle(sent)

    async def run_job(self, service: str, name: str, now: datetime) -> Delivered:
        """A job's round at `now` in one service, then everything its messages cause."""
        _, out = await self[service].run_job(name, now)
        return out + await self.settle(out.messages)

    async def settle(self, messages: list[Sent]) -> Delivered:
        everything = Delivered()
        while messages:
            produced = Delivered()
            for service in self.services:
                assert service.consumer is not None
                if any(m.topic in service.reads for m in messages):
                    produced += await service.deliver(messages)
            everything += produced
            messages = produced.messages
        return everything
