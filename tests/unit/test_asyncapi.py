"""The AsyncAPI document of Jifen's topics is generated from the contracts, and the committed copy is current."""

from __future__ import annotations

from cli.asyncapi import DOCUMENT, OUTBOUND_TYPES, document, render
from shared import topics
from shared.contracts import INBOUND_TYPES, LEDGER_COMMAND_TYPES


def test_the_committed_document_is_what_the_contracts_generate() -> None:
    assert DOCUMENT.read_text() == render(), "docs/asyncapi.yaml is stale: run `jifen asyncapi --write`"


def test_every_topic_and_message_type_is_described() -> None:
    doc = document()
    channels = doc["channels"]
    assert {*topics.INBOUND, topics.LEDGER_COMMANDS, topics.LEDGER_ENTRIES, topics.TIERS} <= channels.keys()
    assert {topics.dlq(t) for t in topics.INBOUND} <= channels.keys()
    described = {ref["$ref"].rsplit("/", 1)[1] for channel in channels.values()
                 for operation in ("publish", "subscribe") if operation in channel
                 for ref in channel[operation]["message"].get("oneOf", [])}
    assert described == {*INBOUND_TYPES, *LEDGER_COMMAND_TYPES, *OUTBOUND_TYPES}
    tier = doc["components"]["messages"]["jifen.tier.changed.v1"]
    assert tier["payload"]["properties"]["type"] == {"const": "jifen.tier.changed.v1"}
    schema = doc["components"]["schemas"]["TierChanged"]
    assert {"program_id", "member_id", "tier", "earn_multiplier"} <= schema["properties"].keys()
    assert set(schema["required"]) == {"member_id", "tier"}
