"""The what-if's history: a programme's events of a period, in (time, event id) order, from the topics while their
retention holds and from insight's archive beyond it.

`await history(...)` answers a `History`: an async iterator of `shared.envelope.CloudEvent`s whose `data` is the
event's JSON object as published (the engine decodes it; `decode(event)` gives the typed contract of the registry,
`shared.contracts.topics.contracts()`, or None), with `source` naming where it read them ("topics" or "archive").
The event id of the order is `source|id` (`CloudEvent.event_id`); the topics are those the archive keeps
(services/insight/archive.py `TOPICS`): the inbound topics, the tiers' announcements and the ledger's entries.

From the topics: the end offsets are taken when the read begins, every partition is read from the offset of the
period's start (`offsets_for_times`, less `FUTURE_SLACK`, since an event may be published up to the consumers'
future tolerance before its time) up to them, and the programme's events of [start, end) are kept as the archive's
reader keeps them: a CloudEvent whose data validates, of an archived type, not from the future as the consumers
judge it (its time no more than `future_tolerance_s` after its record's timestamp), each event id once (a relay
publishes at least once). The partitions are merged by time with a heap: an event is handed on once every partition
still being read has met an event later than it by `window` (an hour), so the merge is exact unless an event comes
in its partition after one more than `window` later than it (senders that far out of order); those are handed on
when met and counted in `History.late`. Memory is the events of that window, not the period (a partition read
ahead of the slowest by more than the window waits), plus the period's event ids (to drop a relay's duplicates).

From the archive: insight's `GET /v1/programs/{p}/archive?from&to`, streamed line by line.

`source="auto"` reads the topics when every partition still holds the period's start (its low watermark is 0, or
its earliest record is no later than `start`; with no `start`, every low watermark is 0), else the archive. A
`HistoryError` says why when neither can serve the period.
"""

from __future__ import annotations

import heapq
import urllib.parse
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import ValidationError

from services.insight.archive import TOPICS
from shared.contracts import topics
from shared.contracts.base import Contract
from shared.envelope import BadMessage, CloudEvent, parse
from shared.kafka import Cluster, client_options

Source = Literal["auto", "topics", "archive"]
CONTRACTS = topics.contracts()
FUTURE_TOLERANCE_S = 300.0  # the consumers' default (shared/settings.py future_tolerance_s)
FUTURE_SLACK = timedelta(minutes=10)
WINDOW = timedelta(hours=1)
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)  # before any event, and far enough from datetime.min to subtract
PROGRESS_EVERY = 10_000
FETCH = 2000


class HistoryError(RuntimeError):
    """Neither the topics nor the archive can give the period's events: the message says why."""


def decode(event: CloudEvent) -> Contract | None:
    """The event's data as its contract, or None for a type the registry lacks or data that does not validate."""
    contract = CONTRACTS.get(event.type)
    if contract is None:
        return None
    try:
        return contract.model_validate(event.data)
    except ValidationError:
        return None


@dataclass
class History:
    """The programme's events of [start, end) in (time, event id) order; `source` is where they come from."""

    source: Literal["topics", "archive"]
    events: AsyncIterator[CloudEvent]
    late: int = 0  # topics only: events met after the merge had passed their time (see the module's docstring)
    count: int = 0

    def __aiter__(self) -> AsyncIterator[CloudEvent]:
        return self.events


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


@dataclass
class _Topics:
    consumer: AIOKafkaConsumer
    partitions: list[TopicPartition]
    low: dict[TopicPartition, int]
    ends: dict[TopicPartition, int]
    prefix: str

    async def holds(self, start: datetime | None) -> str | None:
        """None when every partition still holds the period's start, else which does not and why."""
        for tp in self.partitions:
            low = self.low[tp]
            if low == 0:
                continue
            if start is None:
                return f"{tp.topic}[{tp.partition}] begins at offset {low} (the records before it are gone)"
            if low >= self.ends[tp]:
                return f"{tp.topic}[{tp.partition}] holds no record any more (offsets up to {low} are gone)"
            self.consumer.seek(tp, low)
            got = await self.consumer.getmany(tp, timeout_ms=10_000, max_records=1)
            first = got.get(tp, [])
            if not first:
                return f"{tp.topic}[{tp.partition}]'s earliest record did not arrive"
            at = datetime.fromtimestamp(first[0].timestamp / 1000, UTC)
            if at > start:
                return f"{tp.topic}[{tp.partition}]'s earliest record is from {at.isoformat()}, after the start"
        return None


async def _partitions(kafka: Cluster | str, names: list[str]) -> list[TopicPartition]:
    """Every partition of the topics that exist (a topic never made holds nothing)."""
    admin = AIOKafkaAdminClient(**client_options(kafka))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        described = await admin.describe_topics([n for n in names if n in existing])
    finally:
        await admin.close()
    return sorted(TopicPartition(t["topic"], p["partition"]) for t in described if t["error_code"] == 0
                  for p in t["partitions"])


async def _open(kafka: Cluster | str, prefix: str) -> _Topics:
    consumer = AIOKafkaConsumer(**client_options(kafka), group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    try:
        await consumer.start()
        partitions = await _partitions(kafka, [topics.named(t, prefix) for t in TOPICS])
        consumer.assign(partitions)
        low = await consumer.beginning_offsets(partitions) if partitions else {}
        ends = await consumer.end_offsets(partitions) if partitions else {}
    except BaseException:
        await consumer.stop()
        raise
    return _Topics(consumer, partitions, dict(low), dict(ends), prefix)


async def _from_topics(found: _Topics, program_id: str, start: datetime | None, end: datetime, window: timedelta,
                       tolerance: timedelta, history: History) -> AsyncIterator[CloudEvent]:
    consumer = found.consumer
    try:
        if start is not None and found.partitions:
            at = await consumer.offsets_for_times({tp: _ms(start - FUTURE_SLACK) for tp in found.partitions})
            for tp in found.partitions:
                offset = at.get(tp)
                consumer.seek(tp, offset.offset if offset is not None else found.ends[tp])
        else:
            for tp in found.partitions:
                consumer.seek(tp, found.low[tp])
        left = {tp for tp in found.partitions if await consumer.position(tp) < found.ends[tp]}
        # Each partition's latest event time read: an event is handed on once every partition still being read
        # has passed its time by `window`.
        read_to: dict[TopicPartition, datetime] = {tp: EARLIEST for tp in left}
        heap: list[tuple[datetime, str, CloudEvent]] = []
        seen: set[str] = set()
        passed = EARLIEST
        while left or heap:
            if left:
                slowest = min(read_to[tp] for tp in left)
                # A partition read far ahead of the slowest waits: what is held stays the window's events.
                wanted = [tp for tp in left if read_to[tp] <= slowest + window] or list(left)
                fetched = await consumer.getmany(*wanted, timeout_ms=1000, max_records=FETCH)
                for tp, records in fetched.items():
                    for record in records:
                        if record.offset >= found.ends[tp]:
                            break
                        try:
                            event = parse(record.value, record.headers or ())
                        except BadMessage:
                            continue
                        read_to[tp] = max(read_to[tp], event.time)
                        if not _kept(event, record, found.prefix, program_id, start, end, tolerance) \
                                or event.event_id in seen:
                            continue
                        seen.add(event.event_id)
                        history.late += event.time < passed
                        heapq.heappush(heap, (event.time, event.event_id, event))
                for tp in list(left):
                    if await consumer.position(tp) >= found.ends[tp]:
                        left.discard(tp)
            safe = min(read_to[tp] for tp in left) - window if left else None
            while heap and (safe is None or heap[0][0] < safe):
                passed, _, event = heapq.heappop(heap)
                yield event
    finally:
        await consumer.stop()


def _kept(event: CloudEvent, record: ConsumerRecord[Any, Any], prefix: str, program_id: str,
          start: datetime | None, end: datetime, tolerance: timedelta) -> bool:
    """Whether the archive's reader keeps the event and it is the programme's, in the period."""
    if event.time >= end or (start is not None and event.time < start) or not isinstance(event.data, dict):
        return False
    data = decode(event)
    if data is None or getattr(data, "program_id", None) != program_id:
        return False
    channel = topics.channel(record.topic.removeprefix(prefix))
    sent = datetime.fromtimestamp(record.timestamp / 1000, UTC)
    # Refused as `future_event` by the consumers, whose clocks read about when it was sent.
    return not (channel.external and event.time > sent + tolerance)


async def _from_archive(insight_url: str, api_key: str, program_id: str, start: datetime | None, end: datetime
                        ) -> AsyncIterator[CloudEvent]:
    query = {"to": end.isoformat(), **({"from": start.isoformat()} if start is not None else {})}
    url = (f"{insight_url.rstrip('/')}/v1/programs/{urllib.parse.quote(program_id, safe='')}/archive?"
           + urllib.parse.urlencode(query))
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0, read=300.0)) as client:
        try:
            async with client.stream("GET", url, headers={"Authorization": f"Bearer {api_key}"}) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise HistoryError(f"insight's archive answered {response.status_code} {_refusal(response)}")
                async for line in response.aiter_lines():
                    if line:
                        yield parse(line.encode(), ())
        except httpx.HTTPError as exc:
            raise HistoryError(f"insight at {insight_url} did not answer: {type(exc).__name__}: {exc}") from exc


def _refusal(response: httpx.Response) -> str:
    try:
        body = orjson.loads(response.content)
        return f"{body.get('error')}: {body.get('detail')}"
    except (orjson.JSONDecodeError, AttributeError):
        return response.text[:300]


async def _archive_summary(insight_url: str, api_key: str, program_id: str) -> dict[str, Any]:
    url = f"{insight_url.rstrip('/')}/v1/programs/{urllib.parse.quote(program_id, safe='')}/archive/summary"
    try:
        async with httpx.AsyncClient(timeout=30.0) as client:
            response = await client.get(url, headers={"Authorization": f"Bearer {api_key}"})
    except httpx.HTTPError as exc:
        raise HistoryError(f"insight at {insight_url} did not answer: {type(exc).__name__}: {exc}") from exc
    if response.status_code >= 400:
        raise HistoryError(f"insight's archive answered {response.status_code} {_refusal(response)}")
    summary: dict[str, Any] = response.json()
    return summary


async def _counted(events: AsyncIterator[CloudEvent], history: History,
                   progress: Callable[[int], None] | None) -> AsyncIterator[CloudEvent]:
    async for event in events:
        history.count += 1
        if progress is not None and history.count % PROGRESS_EVERY == 0:
            progress(history.count)
        yield event
    if progress is not None:
        progress(history.count)


async def history(program_id: str, start: datetime | None, end: datetime, *, source: Source = "auto",
                  kafka: Cluster | str, insight_url: str, api_key: str | None,
                  progress: Callable[[int], None] | None = None, prefix: str = "", window: timedelta = WINDOW,
                  future_tolerance_s: float = FUTURE_TOLERANCE_S) -> History:
    """The programme's events with time in [start, end) (start None: from the beginning), oldest first; see the
    module's docstring for where from. `prefix` is the topics' prefix (JIFEN_TOPIC_PREFIX)."""
    for name, at in (("start", start), ("end", end)):
        if at is not None and at.tzinfo is None:
            raise HistoryError(f"{name} {at.isoformat()} has no UTC offset")
    if start is not None and start >= end:
        raise HistoryError(f"the start {start.isoformat()} is not before the end {end.isoformat()}")
    if source not in ("auto", "topics", "archive"):
        raise HistoryError(f"source {source!r}: auto, topics or archive")
    tolerance = timedelta(seconds=future_tolerance_s)
    why_not_topics = None
    if source in ("auto", "topics"):
        try:
            found = await _open(kafka, prefix)
        except Exception as exc:
            if source == "topics":
                raise HistoryError(f"Kafka at {kafka} did not answer: {type(exc).__name__}: {exc}") from exc
            why_not_topics = f"Kafka at {kafka} did not answer: {type(exc).__name__}"
        else:
            why_not_topics = await found.holds(start)
            if why_not_topics is None or source == "topics":
                if why_not_topics is not None:
                    await found.consumer.stop()
                    raise HistoryError(f"the topics no longer hold the period's start: {why_not_topics}")
                made = History("topics", _empty())
                made.events = _counted(_from_topics(found, program_id, start, end, window, tolerance, made), made,
                                       progress)
                return made
            await found.consumer.stop()
    if not api_key:
        raise HistoryError("no API key for insight's archive (--key, JIFEN_API_KEY or .run/api-key)"
                           + (f"; and the topics cannot serve the period: {why_not_topics}" if why_not_topics else ""))
    if why_not_topics is not None:
        try:
            summary = await _archive_summary(insight_url, api_key, program_id)
        except HistoryError as exc:
            raise HistoryError(f"the topics cannot serve the period ({why_not_topics}), and {exc}") from exc
        if not summary.get("events"):
            raise HistoryError(f"the topics cannot serve the period ({why_not_topics}), and insight's archive holds "
                               f"no event of {program_id}")
    made = History("archive", _empty())
    made.events = _counted(_from_archive(insight_url, api_key, program_id, start, end), made, progress)
    return made


async def _empty() -> AsyncIterator[CloudEvent]:
    return
    yield  # an async generator that yields nothing
