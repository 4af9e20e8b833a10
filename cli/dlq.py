"""`jifen dlq list|show|replay`: the dead-letter topics without a Kafka client.

Every record a service refuses goes to `<topic>.dlq` unchanged, with headers saying why (`jifen-dlq-reason`,
`-detail`, `-service`, `-source-topic`, `-source-partition`, `-source-offset`, `-at`). `list` counts them by reason,
`show` prints one with its headers, `replay` sends selected ones back to their source topic once their cause is
fixed (by reason, offset range or CloudEvents id; `--dry-run` says what it would send). A replayed record keeps
its key, value and headers, less the `jifen-dlq-*` ones, plus `jifen-replayed-from`: the services judge it again
(a refused event is not remembered by an inbox, so it is not taken for a duplicate). Each service that reads a topic
refuses a bad record on its own, so the `.dlq` topic may hold several copies of it: `list` counts records (copies
grouped by the place they came from) with the services that refused each, and one copy goes back.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.errors import KafkaError

from shared.consumer import REPLAYED_FROM
from shared.contracts import topics
from shared.kafka import Cluster, client_options
from shared.settings import Settings

PROGRESS_S = 2.0


def add_parser(sub: argparse._SubParsersAction) -> None:
    dlq = sub.add_parser("dlq", help="dead letters: count by reason, show one, replay to the source topic")
    tools = dlq.add_subparsers(dest="dlq_command", required=True)
    listing = tools.add_parser("list", help="each dead-letter topic's records by reason (and by service)")
    listing.add_argument("topic", nargs="?", help="one topic, e.g. jifen.purchases (default: every one)")
    show = tools.add_parser("show", help="one dead-lettered record: its headers and its value")
    show.add_argument("topic", help="the source topic, e.g. jifen.purchases")
    show.add_argument("where", metavar="PARTITION:OFFSET|ID", help="the record's place in the .dlq topic, or its "
                                                                   "CloudEvents id")
    replay = tools.add_parser("replay", help="send dead-lettered records back to their source topic")
    replay.add_argument("topic", help="the source topic, e.g. jifen.purchases")
    replay.add_argument("--reason", help="only records refused for this reason, e.g. unknown_program")
    replay.add_argument("--id", dest="event_id", help="only the record with this CloudEvents id")
    replay.add_argument("--partition", type=int, help="only this partition of the .dlq topic")
    replay.add_argument("--from-offset", type=int, default=0, help="only from this offset on (of each partition)")
    replay.add_argument("--to-offset", type=int, help="only up to this offset (inclusive)")
    replay.add_argument("--dry-run", action="store_true", help="say what would be sent, send nothing")
    for parser in (listing, show, replay):
        parser.add_argument("--kafka-bootstrap", help="Kafka bootstrap servers (default: JIFEN_KAFKA_BOOTSTRAP)")
        parser.add_argument("--topic-prefix", help="topic prefix (default: JIFEN_TOPIC_PREFIX)")


@dataclass(frozen=True)
class Dead:
    record: ConsumerRecord[bytes, bytes]

    @property
    def headers(self) -> dict[str, str]:
        return {k: v.decode(errors="replace") for k, v in (self.record.headers or ())}

    @property
    def reason(self) -> str:
        return self.headers.get("jifen-dlq-reason", "?")

    @property
    def event_id(self) -> str | None:
        try:
            body = orjson.loads(self.record.value or b"")
        except orjson.JSONDecodeError:
            return None
        found = body.get("id") if isinstance(body, dict) else None
        return found if isinstance(found, str) else self.headers.get("ce_id")

    @property
    def place(self) -> str:
        return f"{self.record.partition}:{self.record.offset}"

    @property
    def origin(self) -> tuple[str, int, int]:
        """Where the refused record came from (its source topic, partition and offset): the same for every copy."""
        h = self.headers
        try:
            return h["jifen-dlq-source-topic"], int(h["jifen-dlq-source-partition"]), int(h["jifen-dlq-source-offset"])
        except (KeyError, ValueError):  # not written by a Jifen service: a record of its own
            return f"?{self.record.topic}", self.record.partition, self.record.offset

    @property
    def service(self) -> str:
        return self.headers.get("jifen-dlq-service", "?")

    @property
    def at(self) -> datetime | None:
        try:
            return datetime.fromisoformat(self.headers["jifen-dlq-at"])
        except (KeyError, ValueError):
            return None


@dataclass
class Refused:
    """One refused record and its copies in the `.dlq` topic, one per service that refused it."""

    origin: tuple[str, int, int]
    copies: list[Dead] = field(default_factory=list)

    @property
    def reason(self) -> str:
        return " / ".join(sorted({c.reason for c in self.copies}))

    @property
    def services(self) -> tuple[str, ...]:
        return tuple(sorted({c.service for c in self.copies}))

    @property
    def first_copy(self) -> Dead:
        return min(self.copies, key=lambda c: (c.record.partition, c.record.offset))

    @property
    def at(self) -> datetime | None:
        return min((c.at for c in self.copies if c.at is not None), default=None)


def refused_records(copies: list[Dead]) -> list[Refused]:
    """The copies grouped by the record they came from, in the order of their source (partition, offset)."""
    found: dict[tuple[str, int, int], Refused] = {}
    for dead in copies:
        found.setdefault(dead.origin, Refused(dead.origin)).copies.append(dead)
    return [found[origin] for origin in sorted(found)]


async def refused_in(bootstrap: Cluster | str, dlq_topic: str) -> list[Refused]:
    """Every record refused into a dead-letter topic (LookupError when there is no such topic)."""
    return refused_records([dead async for dead in dead_letters(bootstrap, dlq_topic)])


async def dead_letters(bootstrap: Cluster | str, dlq_topic: str) -> AsyncIterator[Dead]:
    """Every record of a dead-letter topic, from the first offset to the end as it is now."""
    consumer = AIOKafkaConsumer(dlq_topic, **client_options(bootstrap), group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        deadline = time.monotonic() + 10
        while not consumer.assignment():
            if time.monotonic() > deadline:
                raise LookupError(f"no topic {dlq_topic} on {bootstrap}")
            await asyncio.sleep(0.1)
        partitions = sorted(consumer.assignment())
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        left = {tp for tp in partitions if ends[tp] > 0}
        while left:
            fetched = await consumer.getmany(*left, timeout_ms=1000, max_records=1000)
            for tp, records in fetched.items():
                for record in records:
                    if record.offset < ends[tp]:
                        yield Dead(record)
            for tp in list(left):
                if await consumer.position(tp) >= ends[tp]:
                    left.discard(tp)
    finally:
        await consumer.stop()


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {k: v for k, v in (("kafka_bootstrap", args.kafka_bootstrap), ("topic_prefix", args.topic_prefix))
                 if v is not None}
    return Settings(**overrides)


def _source(name: str) -> str:
    if name.endswith(".dlq"):
        name = name.removesuffix(".dlq")
    topics.channel(name)  # KeyError for a topic that is not Jifen's
    return name


async def run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    try:
        if args.dlq_command == "list":
            return await _list(settings, args.topic)
        if args.dlq_command == "show":
            return await _show(settings, _source(args.topic), args.where)
        return await _replay(settings, _source(args.topic), args)
    except KeyError as exc:
        known = ", ".join(c.topic for c in topics.CHANNELS)
        print(f"✘ {exc.args[0]!r} is not a Jifen topic (one of: {known})", file=sys.stderr)
        return 2
    except LookupError as exc:
        print(f"✘ {exc}", file=sys.stderr)
        return 2
    except (OSError, KafkaError) as exc:
        print(f"✘ cannot reach Kafka at {settings.kafka_bootstrap}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


async def _list(settings: Settings, only: str | None) -> int:
    wanted = [_source(only)] if only else [c.topic for c in topics.CHANNELS]
    total = copies = 0
    for topic in wanted:
        name = settings.topic(topics.dlq(topic))
        try:
            records = await refused_in(settings.kafka, name)
        except LookupError:
            print(f"· {name}: no such topic")
            continue
        count, copied = len(records), sum(len(r.copies) for r in records)
        total, copies = total + count, copies + copied
        extra = f" ({copied:,} copies: each service that reads the topic refuses on its own)" if copied != count else ""
        print(f"{'✘' if count else '✔'} {name}: {count:,} record{'s' if count != 1 else ''}{extra}")
        for line in summary_lines(records):
            print(line)
    print(f"\n{total:,} records dead-lettered ({copies:,} copies); `jifen dlq show TOPIC PARTITION:OFFSET` shows one, "
          "`jifen dlq replay TOPIC --reason R --dry-run` what a replay would send")
    return 0


def summary_lines(records: list[Refused]) -> list[str]:
    """Records by reason and the services that refused them, most first, then by name: the same order every run.
    `first at` is the first copy of the earliest record (its place in the `.dlq` topic, for `jifen dlq show`)."""
    groups: dict[tuple[str, tuple[str, ...]], list[Refused]] = {}
    for record in records:
        groups.setdefault((record.reason, record.services), []).append(record)
    lines = []
    for (reason, services), found in sorted(groups.items(), key=lambda item: (-len(item[1]), item[0])):
        first = found[0].first_copy  # records come in the order of their source
        lines.append(f"    {len(found):>8,}  {reason:<24} by {', '.join(services):<36} first at {first.place}")
    return lines


async def _show(settings: Settings, topic: str, where: str) -> int:
    name = settings.topic(topics.dlq(topic))
    match = _matcher(where)
    async for dead in dead_letters(settings.kafka, name):
        if match(dead):
            print(f"{name} {dead.place}")
            for key, value in dead.headers.items():
                print(f"  {key}: {value}")
            print("value:")
            try:
                print(orjson.dumps(orjson.loads(dead.record.value or b""), option=orjson.OPT_INDENT_2).decode())
            except orjson.JSONDecodeError:
                print(f"  (not JSON) {dead.record.value!r}")
            return 0
    print(f"✘ no record {where} in {name}", file=sys.stderr)
    return 1


def _matcher(where: str) -> Callable[[Dead], bool]:
    partition, _, offset = where.partition(":")
    if partition.isdigit() and offset.isdigit():
        return lambda d: (d.record.partition, d.record.offset) == (int(partition), int(offset))
    return lambda d: d.event_id == where


async def _replay(settings: Settings, topic: str, args: argparse.Namespace) -> int:
    name = settings.topic(topics.dlq(topic))

    def selected(dead: Dead) -> bool:
        r = dead.record
        return ((args.reason is None or dead.reason == args.reason)
                and (args.event_id is None or dead.event_id == args.event_id)
                and (args.partition is None or r.partition == args.partition)
                and r.offset >= args.from_offset and (args.to_offset is None or r.offset <= args.to_offset))

    chosen, seen = [], set()
    async for dead in dead_letters(settings.kafka, name):
        # Every service that reads a topic refuses a bad record on its own: one copy per source record goes back.
        source = tuple(dead.headers.get(f"jifen-dlq-source-{k}") for k in ("topic", "partition", "offset"))
        if selected(dead) and source not in seen:
            seen.add(source)
            chosen.append(dead)
    by_reason = Counter(d.reason for d in chosen)
    summary = ", ".join(f"{n} {reason}" for reason, n in by_reason.most_common()) or "none"
    target = settings.topic(topic)
    if args.dry_run or not chosen:
        print(f"{'would send' if args.dry_run else 'nothing to send:'} {len(chosen):,} of {name} to {target} "
              f"({summary})")
        for dead in chosen[:20]:
            print(f"  {dead.place}  {dead.reason:<24} id {dead.event_id}  {dead.headers.get('jifen-dlq-detail', '')}"
                  [:160])
        if len(chosen) > 20:
            print(f"  … and {len(chosen) - 20:,} more")
        return 0
    sent = await _send(settings.kafka, target, name, chosen)
    print(f"✔ sent {sent:,} records back to {target} ({summary}); the services judge them again")
    return 0


async def _send(bootstrap: Cluster | str, target: str, dlq_topic: str, chosen: list[Dead]) -> int:
    producer = AIOKafkaProducer(**client_options(bootstrap), enable_idempotence=True, acks="all", linger_ms=5)
    await producer.start()
    try:
        pending: list[Any] = []
        reported = time.monotonic()
        for n, dead in enumerate(chosen, 1):
            r = dead.record
            # A record replayed before and refused again carries its earlier mark: only this replay's is kept.
            headers = [(k, v) for k, v in (r.headers or ()) if not k.startswith("jifen-dlq-") and k != REPLAYED_FROM]
            headers.append((REPLAYED_FROM, f"{dlq_topic}/{r.partition}/{r.offset}".encode()))
            pending.append(await producer.send(target, r.value or b"", key=r.key, headers=headers))
            if time.monotonic() - reported > PROGRESS_S:
                reported = time.monotonic()
                print(f"  sent {n:,}/{len(chosen):,}", flush=True)
        await asyncio.gather(*pending)
        return len(pending)
    finally:
        await producer.stop()
