"""Insight's archive of inbound events: what the what-if replays once the topics' retention has passed.

Every event of the inbound topics (`topics.INBOUND`), the tiers' announcements and the ledger's entries (their
cause names the tier earn applied) is kept as its CloudEvent JSON: a structured record's bytes as published (line
breaks, which JSON allows only as whitespace, made spaces so that one event is one line), a binary-mode record's
`ce_*` headers made attributes around its body as published. The archive reads under a consumer group of its own
(`Subscription(group="archive")`), so it sees every record whatever the projection takes, and its inbox claims
(`archive:<event id>`) and its chunks are written in one transaction, the offsets committed after it: a
redelivered batch adds nothing. A record the kit refuses (not a CloudEvent, invalid data, from the future) goes to
the DLQ as with every reader, and is not archived.

Storage (migration 0006): one chunk per batch per (programme, UTC month of the event's time, topic), zlib level 6
of the events' NDJSON sorted by (time, event id), where the event id is `source|id`.

Reading a period streams NDJSON in (time, event id) order with bounded memory: the chunks that overlap the period
are listed by first_at (metadata only), and a heap merges the events of the chunks open at the moment: a chunk is
fetched and decompressed only once the merge reaches its first_at, and dropped once its last event is out, so what
is held is the chunks overlapping the current time, never the period.
"""

from __future__ import annotations

import heapq
import zlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any, Union

import asyncpg
import orjson
from fastapi import FastAPI, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from services.insight.api import UNKNOWN_PROGRAM
from services.insight.metrics import InsightMetrics
from services.insight.programme import InsightProgramme
from shared.contracts import topics
from shared.contracts.base import Contract
from shared.envelope import CloudEvent, parse_time
from shared.http import ApiError, ProgramPath, error_responses
from shared.jobs import Job, Page
from shared.programmes import Catalogue
from shared.service import Runtime
from shared.subscription import Batch, Handler, Inbound, Subscription
from shared.uow import UnitOfWork

TOPICS: tuple[str, ...] = (*topics.INBOUND, topics.TIERS, topics.LEDGER_ENTRIES)
TYPES: tuple[type[Contract], ...] = tuple(t for topic in TOPICS for t in topics.channel(topic).types)
GROUP = "archive"
LEVEL = 6
NDJSON = "application/x-ndjson"

if TYPE_CHECKING:
    Archived = Contract
else:
    Archived = Union[TYPES]  # noqa: UP007  # every type of the archived topics: one method takes them all


def month_of(at: datetime) -> date:
    """The chunk's month: the first day of the UTC month of the event's time."""
    return at.astimezone(UTC).date().replace(day=1)


def line_of(value: bytes, headers: Sequence[tuple[str, bytes]], event: CloudEvent) -> bytes:
    """The record as one line of CloudEvent JSON, its bytes as published where it was structured."""
    if any(key == "ce_specversion" for key, _ in headers):
        attributes: dict[str, Any] = {"specversion": "1.0", "id": event.id, "source": event.source,
                                      "type": event.type, "time": _header(headers, "ce_time")}
        if event.subject is not None:
            attributes["subject"] = event.subject
        content_type = _header(headers, "content-type")
        if content_type:
            attributes["datacontenttype"] = content_type
        return orjson.dumps(attributes)[:-1] + b',"data":' + _one_line(value.strip()) + b"}"
    return _one_line(value.strip())


def _header(headers: Sequence[tuple[str, bytes]], name: str) -> str | None:
    return next((bytes(v).decode() for k, v in headers if k == name), None)


def _one_line(value: bytes) -> bytes:
    return value.replace(b"\r", b" ").replace(b"\n", b" ") if b"\n" in value or b"\r" in value else value


def order_key(event: dict[str, Any]) -> tuple[datetime, str]:
    """(time, event id): the archive's order, and the history's."""
    return parse_time(event["time"]), f"{event['source']}|{event['id']}"


@dataclass
class Kept:
    at: datetime
    event_id: str
    line: bytes


@dataclass
class Changes:
    batch: Batch
    chunks: dict[tuple[str, date, str], list[Kept]] = field(default_factory=dict)


@dataclass
class Archive(Handler[Changes]):
    metrics: InsightMetrics
    prefix: str = ""

    async def load(self, batch: Batch) -> Changes:
        return Changes(batch)

    async def keep(self, item: Inbound[Archived], changes: Changes) -> None:
        record, event = item.record, item.event
        chunk = (str(getattr(item.data, "program_id")), month_of(event.time),  # noqa: B009  # every archived type has one
                 record.topic.removeprefix(self.prefix))
        line = line_of(record.value or b"", record.headers or (), event)
        changes.chunks.setdefault(chunk, []).append(Kept(event.time, event.event_id, line))

    async def store(self, changes: Changes) -> None:
        if not changes.chunks:
            return
        rows = []
        for (program_id, month, topic), kept in sorted(changes.chunks.items()):
            kept.sort(key=lambda k: (k.at, k.event_id))
            raw = b"\n".join(k.line for k in kept) + b"\n"
            body = zlib.compress(raw, LEVEL)
            rows.append((program_id, month, topic, kept[0].at, kept[-1].at, len(kept), len(raw), body))
            changes.batch.uow.after_commit += [partial(self.metrics.archived.labels(program_id, topic).inc, len(kept)),
                                               partial(self.metrics.archive_bytes.labels(program_id, topic).inc,
                                                       len(body))]
        await changes.batch.uow.db.executemany(
            "INSERT INTO archive_chunks (program_id, month, topic, first_at, last_at, events, raw_bytes, body) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)", rows)


def subscription(metrics: InsightMetrics, topic_prefix: str) -> Subscription:
    """The archive's reader: every type of the archived topics, under its own consumer group."""
    return Subscription(Archive(metrics, topic_prefix), types=TYPES, others="skip", group=GROUP)


def prune(retention_days: int, interval_s: float) -> Job:
    """Chunks whose last event is older than the retention, deleted whole."""

    async def page(uow: UnitOfWork, now: datetime, cursor: object) -> Page:
        done = await uow.db.execute("DELETE FROM archive_chunks WHERE last_at < $1",
                                    now - timedelta(days=retention_days))
        return Page(int(done.split()[-1]))

    return Job("archive-prune", page, interval_s)


# --- reading ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chunk:
    id: int
    first_at: datetime


async def chunks(db: asyncpg.Connection, program_id: str, start: datetime | None, end: datetime,
                 wanted: Sequence[str]) -> list[Chunk]:
    """The chunks that may hold events of [start, end), by first_at: metadata only."""
    rows = await db.fetch(
        "SELECT id, first_at FROM archive_chunks WHERE program_id = $1 AND topic = ANY($2::text[]) "
        "AND first_at < $3 AND ($4::timestamptz IS NULL OR last_at >= $4) ORDER BY first_at, id",
        program_id, list(wanted), end, start)
    return [Chunk(r["id"], r["first_at"]) for r in rows]


def _events(body: bytes, start: datetime | None, end: datetime) -> Iterator[tuple[datetime, str, bytes]]:
    for line in zlib.decompress(body).splitlines():
        at, event_id = order_key(orjson.loads(line))
        if (start is None or at >= start) and at < end:
            yield at, event_id, line


async def merged(db: asyncpg.Connection, found: list[Chunk], start: datetime | None, end: datetime
                 ) -> AsyncIterator[bytes]:
    """The chunks' events of [start, end) in (time, event id) order, holding only the chunks open at the moment."""
    heap: list[tuple[datetime, str, int, bytes, Iterator[tuple[datetime, str, bytes]]]] = []
    waiting = iter(found)
    upcoming = next(waiting, None)
    while upcoming is not None or heap:
        while upcoming is not None and (not heap or upcoming.first_at <= heap[0][0]):
            body = await db.fetchval("SELECT body FROM archive_chunks WHERE id = $1", upcoming.id)
            if body is not None:  # pruned since it was listed
                events = _events(body, start, end)
                first = next(events, None)
                if first is not None:
                    heapq.heappush(heap, (first[0], first[1], upcoming.id, first[2], events))
            upcoming = next(waiting, None)
        if not heap:
            continue
        _, _, chunk_id, line, events = heap[0]
        yield line + b"\n"
        following = next(events, None)
        if following is None:
            heapq.heappop(heap)
        else:
            heapq.heapreplace(heap, (following[0], following[1], chunk_id, following[2], events))


class ArchiveMonth(BaseModel):
    month: date = Field(description="the first day of the UTC month of the events' time")
    events: int
    bytes: int = Field(description="stored (zlib level 6)")
    raw_bytes: int = Field(description="the NDJSON before compression")
    bytes_per_event: float | None


class ArchiveSummaryOut(BaseModel):
    program_id: str
    retention_days: int
    months: list[ArchiveMonth]
    events: int
    bytes: int
    bytes_per_event: float | None

    model_config = {"json_schema_extra": {"examples": [{
        "program_id": "default", "retention_days": 400, "events": 120000, "bytes": 9600000, "bytes_per_event": 80.0,
        "months": [{"month": "2026-11-01", "events": 120000, "bytes": 9600000, "raw_bytes": 52000000,
                    "bytes_per_event": 80.0}]}]}}


ERRORS = error_responses(401, 404, 422, 503, reasons={404: UNKNOWN_PROGRAM, 422: {
    "invalid_period": "`from` 2026-12-01T00:00:00+00:00 is not before `to` 2026-11-01T00:00:00+00:00",
    "unknown_topic": "'jifen.redemptions' is not archived (the archive keeps jifen.purchases, …)"}})
SUMMARY_ERRORS = error_responses(401, 404, 422, 503, reasons={404: UNKNOWN_PROGRAM})
FromTime = Annotated[datetime | None, Query(alias="from", description="first instant, included (RFC 3339 with an "
                                                                      "offset; default: the archive's beginning)")]
ToTime = Annotated[datetime | None, Query(alias="to", description="end instant, excluded (default: now)")]
TopicList = Annotated[str | None, Query(description="comma-separated topics (default: every archived topic)")]


def period(start: datetime | None, end: datetime | None, now: datetime) -> tuple[datetime | None, datetime]:
    end = end or now
    for name, at in (("from", start), ("to", end)):
        if at is not None and at.tzinfo is None:
            raise ApiError(422, "invalid_period", f"`{name}` {at.isoformat()} has no UTC offset")
    if start is not None and start >= end:
        raise ApiError(422, "invalid_period", f"`from` {start.isoformat()} is not before `to` {end.isoformat()}")
    return start, end


def topics_of(given: str | None) -> list[str]:
    if not given:
        return list(TOPICS)
    wanted = [t.strip() for t in given.split(",") if t.strip()]
    unknown = [t for t in wanted if t not in TOPICS]
    if unknown or not wanted:
        raise ApiError(422, "unknown_topic", f"{', '.join(map(repr, unknown)) or 'no topic'} is not archived "
                                             f"(the archive keeps {', '.join(TOPICS)})")
    return wanted


def routes(base: Callable[[FastAPI, Runtime], None], catalogue: Catalogue[InsightProgramme],
           retention_days: int) -> Callable[[FastAPI, Runtime], None]:
    """Insight's routes, and the archive's two."""

    def add(app: FastAPI, runtime: Runtime) -> None:
        base(app, runtime)
        read = [runtime.requires("read")]

        @app.get("/v1/programs/{program_id}/archive", tags=["insight"], dependencies=read,
                 response_class=StreamingResponse,
                 responses=ERRORS | {200: {"content": {NDJSON: {"schema": {"type": "string"}, "example":
                                     '{"specversion":"1.0","id":"o-1","source":"pos://store-1",'
                                     '"type":"jifen.purchase.completed.v1","time":"2026-11-02T10:00:00Z",'
                                     '"data":{"program_id":"default","member_id":"m-1","order_id":"o-1"}}\n'}},
                                     "description": "one CloudEvent per line, in (time, event id) order"}},
                 summary="The programme's archived inbound events of a period, as NDJSON CloudEvents")
        async def get_archive(program_id: ProgramPath, start: FromTime = None, end: ToTime = None,
                              topics: TopicList = None) -> StreamingResponse:
            """Every archived event of the programme with `time` in [`from`, `to`), one CloudEvent JSON per line,
            ordered by (time, event id) where the event id is `source|id`; `topics` narrows to some of the archived
            topics. Streamed with bounded memory. 422 `invalid_period` for a time without an offset or `from` not
            before `to`, `unknown_topic` for a topic the archive does not keep. Needs the `read` scope."""
            now = runtime.spec.clock()
            catalogue.in_force(program_id, now)
            first, last = period(start, end, now)
            wanted = topics_of(topics)
            found = await runtime.read(lambda db: chunks(db, program_id, first, last, wanted))

            async def lines() -> AsyncIterator[bytes]:
                async with runtime.connection() as db:
                    async for line in merged(db, found, first, last):
                        yield line

            return StreamingResponse(lines(), media_type=NDJSON)

        @app.get("/v1/programs/{program_id}/archive/summary", response_model=ArchiveSummaryOut, tags=["insight"],
                 dependencies=read, responses=SUMMARY_ERRORS,
                 summary="The archive's size, month by month, and its retention")
        async def get_archive_summary(program_id: ProgramPath) -> ArchiveSummaryOut:
            """Per UTC month of the events' time: events, stored bytes (zlib), bytes before compression and bytes
            per event; and the retention (`JIFEN_ARCHIVE_RETENTION_DAYS`). Needs the `read` scope."""
            catalogue.in_force(program_id, runtime.spec.clock())
            rows = await runtime.read(lambda db: db.fetch(
                "SELECT month, sum(events) AS events, sum(length(body)) AS bytes, sum(raw_bytes) AS raw "
                "FROM archive_chunks WHERE program_id = $1 GROUP BY month ORDER BY month", program_id))
            months = [ArchiveMonth(month=r["month"], events=int(r["events"]), bytes=int(r["bytes"]),
                                   raw_bytes=int(r["raw"]), bytes_per_event=_per(int(r["bytes"]), int(r["events"])))
                      for r in rows]
            events, size = sum(m.events for m in months), sum(m.bytes for m in months)
            return ArchiveSummaryOut(program_id=program_id, retention_days=retention_days, months=months,
                                     events=events, bytes=size, bytes_per_event=_per(size, events))

    return add


def _per(size: int, events: int) -> float | None:
    return round(size / events, 1) if events else None
