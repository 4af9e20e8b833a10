"""`jifen asyncapi`: the topics and message schemas integrators rely on, as an AsyncAPI 2.6 document generated
from the contracts in shared/contracts.py. docs/asyncapi.yaml is its output; a test keeps the two equal."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from shared import topics
from shared.contracts import (
    COMMAND_REJECTED,
    ENTRY_POSTED,
    HOLD_PLACED,
    HOLD_RESOLVED,
    INBOUND_TYPES,
    LEDGER_COMMAND_TYPES,
    TIER_CHANGED,
    CommandRejected,
    Contract,
    HoldPlaced,
    HoldResolved,
    PointsEntryPosted,
    TierChanged,
)

DOCUMENT = Path(__file__).resolve().parents[1] / "docs" / "asyncapi.yaml"
Direction = Literal["in", "out"]

# Which message types travel on which topic, and who writes them. `in`: systems outside send them to Jifen;
# `out`: Jifen sends them (AsyncAPI 2's `publish` and `subscribe`, as seen by a client of Jifen).
CHANNELS: list[tuple[str, Direction, str, list[str]]] = [
    (topics.PURCHASES, "in", "Purchases and refunds from tills and web shops.",
     ["jifen.purchase.completed.v1", "jifen.purchase.refunded.v1"]),
    (topics.TASKS, "in", "Tasks and behaviours from HR and task systems, and manual awards (paid only from the "
                         "CloudEvents sources a programme trusts).",
     ["jifen.task.completed.v1", "jifen.points.awarded.v1"]),
    (topics.CHECKINS, "in", "Daily check-ins.", ["jifen.checkin.recorded.v1"]),
    (topics.REFERRALS, "in", "Accepted referrals.", ["jifen.referral.accepted.v1"]),
    (topics.MEMBERS, "in", "Members enrolled or updated (birthday).", ["jifen.member.enrolled.v1"]),
    (topics.LEDGER_COMMANDS, "in", "Internal: commands to the ledger, the only writer of points. Keyed by "
                                   "member; each carries an idempotency key derived from its cause.",
     list(LEDGER_COMMAND_TYPES)),
    (topics.LEDGER_ENTRIES, "out", "Every entry the ledger posted and every command it refused, with the reason.",
     [ENTRY_POSTED, HOLD_PLACED, HOLD_RESOLVED, COMMAND_REJECTED]),
    (topics.TIERS, "out", "Tier changes, effective from the event's time; earn applies `earn_multiplier`.",
     [TIER_CHANGED]),
]
OUTBOUND_TYPES: dict[str, type[Contract]] = {
    ENTRY_POSTED: PointsEntryPosted, HOLD_PLACED: HoldPlaced, HOLD_RESOLVED: HoldResolved,
    COMMAND_REJECTED: CommandRejected, TIER_CHANGED: TierChanged,
}
DLQ_HEADERS = ("jifen-dlq-reason", "jifen-dlq-detail", "jifen-dlq-error-class", "jifen-dlq-source-topic",
               "jifen-dlq-source-partition", "jifen-dlq-source-offset", "jifen-dlq-service", "jifen-dlq-at")


def contract_of(message_type: str) -> tuple[type[Contract], JsonSchemaMode]:
    if message_type in OUTBOUND_TYPES:
        return OUTBOUND_TYPES[message_type], "serialization"
    return {**INBOUND_TYPES, **LEDGER_COMMAND_TYPES}[message_type], "validation"


def document() -> dict[str, Any]:
    types = [t for _, _, _, names in CHANNELS for t in names]
    models = {t: contract_of(t) for t in types}
    refs, definitions = models_json_schema(list(dict.fromkeys(models.values())),
                                           ref_template="#/components/schemas/{model}")
    messages = {}
    for message_type, (model, mode) in models.items():
        messages[message_type] = {
            "messageId": message_type,
            "name": message_type,
            "title": model.__name__,
            "summary": (model.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ") or None,
            "contentType": "application/cloudevents+json",
            "headers": {"type": "object", "description": "Binary mode carries the CloudEvents attributes as "
                                                         "ce_* headers and the data alone as the body."},
            "payload": {
                "type": "object", "required": ["specversion", "id", "source", "type", "time", "data"],
                "properties": {
                    "specversion": {"const": "1.0"},
                    "id": {"type": "string", "description": "With source, the event's idempotency key."},
                    "source": {"type": "string"},
                    "type": {"const": message_type},
                    "time": {"type": "string", "format": "date-time",
                             "description": "When it happened: rules judge the event by this time."},
                    "subject": {"type": "string"},
                    "data": refs[(model, mode)],
                },
            },
        }
        messages[message_type] = {k: v for k, v in messages[message_type].items() if v is not None}
    channels: dict[str, Any] = {}
    for topic, direction, description, names in CHANNELS:
        operation = "publish" if direction == "in" else "subscribe"
        channels[topic] = {
            "description": f"{description} Kafka key: the member id.",
            operation: {"operationId": f"{operation}:{topic}",
                        "message": {"oneOf": [{"$ref": f"#/components/messages/{t}"} for t in names]}},
        }
        if direction == "in":
            channels[topics.dlq(topic)] = {
                "description": f"What Jifen refused from {topic}, with the reason. Nothing is dropped: replay a "
                               "record to its source topic once the cause is fixed.",
                "subscribe": {"operationId": f"subscribe:{topics.dlq(topic)}", "message": dead_letter(topic)},
            }
    return {
        "asyncapi": "2.6.0",
        "id": "urn:jifen:topics",
        "info": {"title": "Jifen topics", "version": "1",
                 "description": "Generated by `jifen asyncapi` from shared/contracts.py. Names may gain fields; "
                                "renaming or removing one is a breaking change. Money is a decimal string with an "
                                "ISO 4217 currency; points are integers; program_id defaults to `default`.",
                 "license": {"name": "Apache-2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0"}},
        "servers": {"local": {
            "url": "127.0.0.1:9092", "protocol": "kafka",
            "description": "The broker `make up` runs (JIFEN_KAFKA_BOOTSTRAP overrides it); topic names may carry a "
                           "prefix (JIFEN_TOPIC_PREFIX)."}},
        "tags": [{"name": "loyalty"}, {"name": "points"}],
        "defaultContentType": "application/cloudevents+json",
        "channels": channels,
        "components": {"messages": messages, "schemas": definitions["$defs"]},
    }


def dead_letter(topic: str) -> dict[str, Any]:
    return {
        "messageId": f"dead-letter:{topic}", "name": "dead-letter", "title": f"A record refused from {topic}",
        "summary": "The record's key, value and headers unchanged (the value may be malformed: that may be why it "
                   "was refused), with headers saying why and where it came from.",
        "headers": {"type": "object", "required": list(DLQ_HEADERS),
                    "properties": {name: {"type": "string"} for name in DLQ_HEADERS}},
        "payload": {"description": "The refused record's value, byte for byte."},
    }


def render() -> str:
    return "# Generated by `jifen asyncapi`; do not edit by hand.\n" + yaml.safe_dump(
        document(), sort_keys=False, allow_unicode=True, width=120)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("asyncapi", help="print (or write) the AsyncAPI document of Jifen's topics")
    parser.add_argument("--write", action="store_true", help="write it to docs/asyncapi.yaml instead")


def run(args: argparse.Namespace) -> int:
    text = render()
    if args.write:
        DOCUMENT.write_text(text)
        print(f"✔ wrote {DOCUMENT}")
    else:
        sys.stdout.write(text)
    return 0
