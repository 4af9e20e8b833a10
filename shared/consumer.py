"""The batch consumer: the effectively-once recipe every Jifen service consumes with.

1. FastStream hands over a batch of raw records (manual acknowledgement: nothing is committed on receipt).
2. Each record is parsed as a CloudEvent, routed by its topic to the subscription that reads it, and validated
   against its type's contract. A record that fails goes to `<topic>.dlq` with the reason, through the outbox, in
   the batch's transaction; a type the subscription leaves to others is counted and skipped.
3. One transaction per batch: event ids claimed in the inbox (duplicates skipped), the handlers apply the new
   events in order and emit outgoing messages, the outbox rows are written, commit.
4. Only then are the Kafka offsets committed. A transient failure (database down) is retried with backoff, so the
   offsets never move past an event whose effects are not stored.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.kafka.message import KafkaAckableMessage
from pydantic import ValidationError
from sqlalchemy import exc as sa_exc

from shared.contracts.base import Contract, dlq
from shared.envelope import BadMessage, parse, validation_summary
from shared.metrics import Metrics
from shared.outbox import OutboxMessage
from shared.subscription import Handler, Inbound, Method, Rejections, Route
from shared.uow import UnitOfWork

log = logging.getLogger(__name__)
Refused = tuple[ConsumerRecord[Any, Any], BadMessage]
REPLAYED_FROM = "jifen-replayed-from"  # the header `jifen dlq replay` adds: the DLQ record it came from


class Retryable(Exception):
    """A failure that goes away by itself (a concurrent writer, a lost connection): retry the batch."""


def is_transient(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, Retryable | OSError | TimeoutError | ConnectionError | asyncpg.PostgresConnectionError
                      | asyncpg.InterfaceError | asyncpg.CannotConnectNowError | asyncpg.OperatorInterventionError
                      | asyncpg.SerializationError | asyncpg.DeadlockDetectedError | asyncpg.UniqueViolationError):
            # A unique violation means a concurrent writer (a rebalance) got there first; a replay sees it.
            return True
        if isinstance(seen, sa_exc.DBAPIError) and seen.connection_invalidated:
            return True
        if isinstance(seen, sa_exc.InterfaceError | sa_exc.OperationalError | sa_exc.TimeoutError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def dlq_message(record: ConsumerRecord[Any, Any], bad: BadMessage, service: str, error_class: str,
                now: datetime) -> OutboxMessage:
    """The record unchanged, with headers saying why it was refused and where it came from."""
    headers = [(k, v) for k, v in (record.headers or ()) if not k.startswith("jifen-dlq-")]
    headers += [
        ("jifen-dlq-reason", bad.reason.encode()),
        ("jifen-dlq-detail", bad.detail[:2000].encode()),
        ("jifen-dlq-error-class", error_class.encode()),
        ("jifen-dlq-source-topic", record.topic.encode()),
        ("jifen-dlq-source-partition", str(record.partition).encode()),
        ("jifen-dlq-source-offset", str(record.offset).encode()),
        ("jifen-dlq-service", service.encode()),
        ("jifen-dlq-at", now.isoformat().encode()),
    ]
    return OutboxMessage(topic=dlq(record.topic), key=record.key, value=record.value or b"", headers=headers)


class Health:
    """What readiness reports: the last database outage seen by the consumer, if any."""

    def __init__(self) -> None:
        self.db_error: str | None = None
        self.consuming = False


Good = tuple[Inbound[Contract], Handler[Any], Method]  # an event, its handler and the method of its type


@dataclass(frozen=True, slots=True)
class Parsed:
    """A batch sorted out: events to apply (each with its handler), records refused, records skipped."""

    good: list[Good]
    bad: list[Refused]
    skipped: list[tuple[ConsumerRecord[Any, Any], str]]


class BatchConsumer:
    def __init__(self, *, service: str, unit_of_work: Callable[[], UnitOfWork], metrics: Metrics, health: Health,
                 routes: dict[str, Route], topic_prefix: str = "", use_inbox: bool = True,
                 retry_max_delay_s: float = 5.0, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 future_tolerance_s: float = 300.0, inbox_scope: str = "") -> None:
        self.service = service
        self.unit_of_work = unit_of_work
        self.metrics = metrics
        self.health = health
        self.routes = routes
        self.topic_prefix = topic_prefix
        self.use_inbox = use_inbox
        self.retry_max_delay_s = retry_max_delay_s
        self.clock = clock
        self.future_tolerance = timedelta(seconds=future_tolerance_s)
        # A second group of the service claims its ids apart (`<scope>:<event id>`): the same event is new to it.
        self.inbox_prefix = f"{inbox_scope}:" if inbox_scope else ""

    @property
    def topics(self) -> list[str]:
        """The consumed topics as named on the cluster."""
        return [f"{self.topic_prefix}{topic}" for topic in self.routes]

    def subscribe(self, broker: KafkaBroker, group_id: str, max_records: int, batch_timeout_ms: int) -> None:
        broker.subscriber(
            *self.topics, batch=True, group_id=group_id, ack_policy=AckPolicy.MANUAL, max_records=max_records,
            batch_timeout_ms=batch_timeout_ms, auto_offset_reset="earliest", parser=_raw_batch,
            decoder=_no_decode, max_poll_interval_ms=600_000,
        )(self._on_batch)

    async def _on_batch(self, msg: KafkaMessage) -> None:
        records: tuple[ConsumerRecord[Any, Any], ...] = msg.raw_message
        try:
            await self.process(list(records))
        except BaseException:
            await msg.nack()  # rewind every partition of the batch: nothing past it may be committed
            raise
        try:
            await msg.ack()
        except (CommitFailedError, KafkaError) as exc:
            # Partitions moved to another consumer: it replays from the last commit and the inbox dedupes.
            log.warning("offset commit failed; the batch will be replayed elsewhere", extra={"error": repr(exc)})
        self._record_lag(msg, records)
        # The batch's objects are garbage now. Collecting the middle generation here, between batches, frees the
        # batch's reference cycles while they are few; left to the collector's threshold they pile up over many
        # batches and one collection of them stopped the ledger for 250-500 ms, mid-batch.
        gc.collect(1)

    def _record_lag(self, msg: KafkaMessage, records: Sequence[ConsumerRecord[Any, Any]]) -> None:
        consumer = getattr(msg, "consumer", None)
        if consumer is None:
            return
        last: dict[tuple[str, int], int] = {}
        for r in records:
            last[(r.topic, r.partition)] = r.offset
        for (topic, partition), offset in last.items():
            high = consumer.highwater(TopicPartition(topic, partition))
            if high is not None:
                self.metrics.lag.labels(self.service, topic, str(partition)).set(max(0, high - offset - 1))

    async def process(self, records: list[ConsumerRecord[Any, Any]]) -> None:
        """Apply a batch, retrying transient failures until it is stored; never returns having lost one."""
        self.metrics.batch_size.labels(self.service).observe(len(records))
        parsed = self._parse(records)
        good, bad = parsed.good, parsed.bad
        stored_any = bool(good or bad)
        delay = 0.1
        while good or bad:  # a batch of records all left to other services needs no transaction
            try:
                await self._apply(good, bad)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if is_transient(exc):
                    self._note_outage(exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.retry_max_delay_s)
                    continue
                if not good:
                    # Only DLQ rows left and still failing: wait and retry like an outage rather than spin.
                    self._note_outage(exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.retry_max_delay_s)
                    continue
                if len(good) == 1:
                    # A failure no retry will cure: the event goes to the DLQ with the error, not lost.
                    log.exception("event failed in its handler; sent to the DLQ")
                    bad = bad + [(item.record, BadMessage("processing_error", _describe(exc))) for item, _, _ in good]
                    good = []
                    continue
                log.warning("batch failed; applying its events one by one", extra={"error": repr(exc)})
                for item, _, _ in good:
                    await self.process([item.record])
                good = []
                if not bad:
                    break
        for record, message_type in parsed.skipped:
            self.metrics.ignored.labels(self.service, record.topic, message_type).inc()
        if stored_any:  # only a stored batch says the database is back
            self.health.db_error = None
            self.metrics.ready.labels(self.service).set(1)

    def _note_outage(self, exc: BaseException, delay: float) -> None:
        first = self.health.db_error is None
        self.health.db_error = _describe(exc)
        self.metrics.ready.labels(self.service).set(0)
        self.metrics.transient_failures.labels(self.service, type(exc).__name__).inc()
        # Said once per streak; the retries are counted. An outage's start and end are logged by shared.outages.
        (log.warning if first else log.debug)("transient failure; the batch is retried until it is stored",
                                              extra={"error": repr(exc), "retry_in_s": delay})

    def _parse(self, records: Sequence[ConsumerRecord[Any, Any]]) -> Parsed:
        parsed = Parsed([], [], [])
        latest = self.clock() + self.future_tolerance
        for record in records:
            try:
                event = parse(record.value, record.headers or ())
                route = self.routes[record.topic.removeprefix(self.topic_prefix)]
                found = route.contract_and_handler(event.type)
                if found is None:
                    parsed.skipped.append((record, event.type))
                    continue
                contract, handler, method = found
                if not isinstance(event.data, dict):
                    raise BadMessage("invalid_data", "data must be a JSON object")
                try:
                    data = contract.model_validate(event.data)
                except ValidationError as exc:
                    raise BadMessage("invalid_data", validation_summary(exc)) from exc
                if route.channel.external and event.time > latest:
                    # Rules judge an event by its time: one from the future would be judged by rules not yet in
                    # force and sit pending until then. A sender's clock that runs fast is a sender's problem.
                    raise BadMessage("future_event", f"time {event.time.isoformat()} is more than "
                                                     f"{self.future_tolerance.total_seconds():.0f}s ahead of "
                                                     f"{self.service}'s clock")
                parsed.good.append((Inbound(record, event, data), handler, method))
            except BadMessage as exc:
                parsed.bad.append((record, exc))
        return parsed

    async def _apply(self, good: list[Good], bad: list[Refused]) -> None:
        now = self.clock()
        rejections = Rejections()
        async with self.unit_of_work() as uow:
            fresh = good
            duplicates = 0
            prefix = self.inbox_prefix
            marks = {prefix + i.event.event_id: _replay_mark(i.record) for i, _, _ in good}
            if self.use_inbox and good:
                claimed = await uow.claim(list(marks), {event_id: m for event_id, m in marks.items() if m})
                fresh = []
                for found in good:
                    claim = prefix + found[0].event.event_id
                    if claim in claimed:
                        claimed.discard(claim)  # a second copy within the batch is a duplicate
                        fresh.append(found)
                    else:
                        duplicates += 1
            for handler, run in _runs(fresh):
                await handler.apply([item for item, _, _ in run], uow, rejections, [m for _, _, m in run])
            if self.use_inbox and rejections.event_ids:
                # Once its cause is fixed, `jifen dlq replay` brings a refused event back and the inbox lets it
                # through; a plain redelivery (a crash before the offsets moved) stays a duplicate.
                await uow.refuse({prefix + event_id: marks[prefix + event_id] for event_id in rejections.event_ids})
            refused = bad + rejections.items
            for record, reason in refused:
                uow.dead_letter(dlq_message(record, reason, self.service, _error_class(reason), now))
            await uow.commit()
        committed = time.time()
        topic = good[0][0].record.topic if good else (bad[0][0].topic if bad else "")
        if duplicates:
            self.metrics.duplicates.labels(self.service, topic).inc(duplicates)
        rejected = {id(r) for r, _ in rejections.items}
        for item, _, _ in fresh:
            if id(item.record) in rejected:
                continue
            self.metrics.processed.labels(self.service, item.record.topic, item.event.type).inc()
            self.metrics.event_to_commit.labels(self.service).observe(max(0.0, committed - item.event.time.timestamp()))
        for record, reason in refused:
            self.metrics.dlq.labels(self.service, record.topic, reason.reason).inc()
            log.info("message sent to DLQ", extra={"topic": record.topic, "partition": record.partition,
                                                   "offset": record.offset, "reason": reason.reason,
                                                   "detail": reason.detail[:300]})


def _replay_mark(record: ConsumerRecord[Any, Any]) -> str:
    """Where `jifen dlq replay` took the record from (its `jifen-replayed-from` header), or '' for an original."""
    marks = [bytes(value).decode(errors="replace") or "?" for key, value in record.headers or ()
             if key == REPLAYED_FROM]
    return marks[-1] if marks else ""


def _runs(items: list[Good]) -> list[tuple[Handler[Any], list[Good]]]:
    """The batch's events in order, cut where the handler changes: each run goes to its handler in one call."""
    runs: list[tuple[Handler[Any], list[Good]]] = []
    for found in items:
        if runs and runs[-1][0] is found[1]:
            runs[-1][1].append(found)
        else:
            runs.append((found[1], [found]))
    return runs



def _error_class(bad: BadMessage) -> str:
    cause = bad.__cause__
    return type(cause).__name__ if cause is not None else type(bad).__name__


def _describe(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(exc)).strip()[:500]


async def _raw_batch(records: tuple[ConsumerRecord[Any, Any], ...], original: Any) -> KafkaAckableMessage:
    """FastStream's batch parser decodes every header as UTF-8 and fails the whole batch on one bad byte;
    we keep the records raw and judge each one ourselves."""
    first = records[0]
    return KafkaAckableMessage(
        body=[r.value or b"" for r in records], headers={}, batch_headers=[{} for _ in records],
        raw_message=records, content_type=None, reply_to="", correlation_id=None, path={},
        message_id=f"{first.topic}-{first.partition}-{first.offset}",
        consumer=original.__self__._consumer,
    )


async def _no_decode(msg: Any, original: Any) -> None:
    return None
