"""`jifen publish FILE...`: send CloudEvents from files to their topic, as a till or an HR system would.

A file holds one event (a JSON object), several (a JSON array) or one per line (`.jsonl`); `-` reads standard input.
Every event is checked first, as the services will check it (the envelope, a type some channel carries, its data
against the contract), and nothing is sent unless all pass. Each goes to its type's topic, keyed by its member (the
referee for a referral), in structured mode. `--now` stamps the current time on each, so a shipped example earns
as if it had just happened; the id is kept, so sending one twice shows the services ignoring the copy.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from cli.times import shown
from shared.contracts import topics
from shared.envelope import STRUCTURED_HEADERS, BadMessage, parse, validation_summary
from shared.settings import Settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    publish = sub.add_parser("publish", help="send CloudEvents from JSON files to their topics (checked first, as "
                                             "the services check them)")
    publish.add_argument("files", nargs="+", metavar="FILE",
                         help="a JSON file with one event, a JSON array of them, or JSON lines (.jsonl); - for stdin")
    publish.add_argument("--now", action="store_true", help="stamp the current time on every event")
    publish.add_argument("--dry-run", action="store_true", help="check and say where each would go; send nothing")
    publish.add_argument("--kafka-bootstrap", help="Kafka bootstrap servers (default: JIFEN_KAFKA_BOOTSTRAP)")
    publish.add_argument("--topic-prefix", help="topic prefix (default: JIFEN_TOPIC_PREFIX)")


@dataclass(frozen=True)
class Outgoing:
    where: str  # file (and index) it came from
    topic: str  # without the prefix
    key: bytes | None
    value: bytes
    event_id: str
    type: str


async def run(args: argparse.Namespace) -> int:
    overrides = {k: v for k, v in (("kafka_bootstrap", args.kafka_bootstrap), ("topic_prefix", args.topic_prefix))
                 if v is not None}
    settings = Settings(**overrides)
    outgoing, problems = [], []
    for name in args.files:
        try:
            for where, event in _events(name):
                outgoing.append(_checked(where, event, args.now, settings.future_tolerance_s))
        except (OSError, ValueError) as exc:
            problems.append(str(exc))
    for problem in problems:
        print(f"✘ {problem}", file=sys.stderr)
    if problems:
        print(f"✘ nothing sent: {len(problems)} problem(s) above", file=sys.stderr)
        return 1
    if args.dry_run:
        for out in outgoing:
            print(f"  would send {out.event_id} ({out.type}) to {settings.topic(out.topic)}, key "
                  f"{(out.key or b'').decode()!r}   [{out.where}]")
        print(f"✔ {len(outgoing)} event(s) checked; nothing sent (--dry-run)")
        return 0
    producer = AIOKafkaProducer(**settings.kafka.options(), enable_idempotence=True, acks="all",
                                request_timeout_ms=15000)
    try:
        await producer.start()
        for out in outgoing:
            sent = await (await producer.send(settings.topic(out.topic), out.value, key=out.key,
                                              headers=STRUCTURED_HEADERS))
            print(f"  ✔ {out.event_id} ({out.type}) → {sent.topic} partition {sent.partition} offset {sent.offset}")
    except KafkaError as exc:
        print(f"✘ Kafka at {settings.kafka_bootstrap} did not take the events: {exc}", file=sys.stderr)
        return 2
    finally:
        await producer.stop()
    print(f"✔ {len(outgoing)} event(s) sent")
    return 0


def _events(name: str) -> list[tuple[str, Any]]:
    raw = sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
    label = "stdin" if name == "-" else name
    if name.endswith(".jsonl"):
        lines = [(n, line) for n, line in enumerate(raw.splitlines(), 1) if line.strip()]
        return [(f"{label}:{n}", _json(f"{label}:{n}", line)) for n, line in lines]
    body = _json(label, raw)
    if isinstance(body, list):
        return [(f"{label}[{n}]", event) for n, event in enumerate(body)]
    return [(label, body)]


def _json(where: str, raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{where}: not JSON: {exc}") from None


def _checked(where: str, event: Any, now: bool, future_tolerance_s: float) -> Outgoing:
    if not isinstance(event, dict):
        raise ValueError(f"{where}: an event must be a JSON object (a structured-mode CloudEvent)")
    if now:
        event = {**event, "time": datetime.now(UTC).isoformat()}
    value = orjson.dumps(event)
    try:
        parsed = parse(value, STRUCTURED_HEADERS)
    except BadMessage as exc:
        raise ValueError(f"{where}: the services would refuse it as {exc.reason}: {exc.detail}") from None
    contract = topics.contracts().get(parsed.type)
    channel = topics.channel_of(contract) if contract else None
    if contract is None or channel is None or channel.direction != "in" or channel.internal:
        sent_in = sorted(t for c in topics.CHANNELS if c.external for t in (x.TYPE for x in c.types))
        raise ValueError(f"{where}: {parsed.type!r} is not sent to Jifen from outside; these are: {', '.join(sent_in)}")
    try:
        data = contract.model_validate(parsed.data)
    except ValidationError as exc:
        raise ValueError(f"{where}: the services would refuse it as invalid_data: {validation_summary(exc)}") from None
    latest = datetime.now(UTC) + timedelta(seconds=future_tolerance_s)
    if parsed.time > latest:  # as shared/consumer.py judges every event from outside
        raise ValueError(f"{where}: the services would refuse it as future_event: time {shown(parsed.time)} "
                         f"is more than {future_tolerance_s:.0f}s ahead of this clock (--now stamps the current "
                         "time)")
    member = getattr(data, "member_id", None) or getattr(data, "referee_member_id", None)
    return Outgoing(where, channel.topic, member.encode() if member else None, value, parsed.id, parsed.type)
