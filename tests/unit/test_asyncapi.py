"""The AsyncAPI document of Jifen's topics is generated from the catalogue of channels, and the committed copy is
current."""

from __future__ import annotations

from typing import Any

import orjson
import yaml
from jsonschema import Draft202012Validator

from cli.asyncapi import DOCUMENT, NAMED, PYDANTIC_ONLY, document, render
from shared.contracts import topics


def test_the_committed_document_is_what_the_contracts_generate() -> None:
    assert DOCUMENT.read_text() == render(), "docs/asyncapi.yaml is stale: run `jifen asyncapi --write`"


def test_every_channel_its_dead_letter_twin_and_every_message_type_are_described() -> None:
    doc = document()
    channels = doc["channels"]
    assert set(channels) == set(topics.all_topics())
    assert {topics.REFERRAL_OUTCOMES, topics.REDEMPTIONS, topics.TIERS} <= channels.keys()
    described = {ref["$ref"].rsplit("/", 1)[1] for channel in channels.values()
                 for operation in ("publish", "subscribe") if operation in channel
                 for ref in channel[operation]["message"].get("oneOf", [])}
    assert described == set(topics.contracts())
    assert {"jifen.tier.assigned.v1", "jifen.member.blocked.v1", "jifen.member.unblocked.v1",
            "jifen.tier.expiring.v1", "jifen.redemption.completed.v1", "jifen.payment.captured.v1",
            "jifen.coupon.used.v1", "jifen.referral.rewarded.v1", "jifen.referral.revoked.v1"} <= described
    tier = doc["components"]["messages"]["jifen.tier.changed.v1"]
    assert tier["payload"]["properties"]["type"] == {"const": "jifen.tier.changed.v1"}
    schema = doc["components"]["schemas"]["TierChanged"]
    assert {"program_id", "member_id", "tier", "earn_multiplier", "reason", "valid_until",
            "qualifying_value"} <= schema["properties"].keys()
    enrolled = doc["components"]["schemas"]["MemberEnrolled"]
    assert {"referral_code", "fingerprints"} <= enrolled["properties"].keys()


def test_the_public_contract_only_gained_fields_and_types() -> None:
    """Every type and field of the contract before the catalogue (stop 7) is still there."""
    before = {
        "jifen.purchase.completed.v1": {"program_id", "member_id", "order_id", "store_id", "channel", "currency",
                                        "total", "lines"},
        "jifen.purchase.refunded.v1": {"program_id", "member_id", "order_id", "refund_id", "currency", "total",
                                       "lines"},
        "jifen.task.completed.v1": {"program_id", "member_id", "task_id", "task_type"},
        "jifen.checkin.recorded.v1": {"program_id", "member_id", "day", "channel"},
        "jifen.referral.accepted.v1": {"program_id", "referrer_member_id", "referee_member_id", "referral_code"},
        "jifen.member.enrolled.v1": {"program_id", "member_id", "birthday", "enrolled_at"},
        "jifen.points.awarded.v1": {"program_id", "member_id", "award_id", "points", "reason", "awarded_by"},
        "jifen.ledger.entry.posted.v1": {"entry_id", "program_id", "member_id", "seq", "amount", "balance_after",
                                         "kind", "idempotency_key", "cause", "occurred_at", "posted_at", "lot", "lots",
                                         "corrects_entry_id", "hold_id", "hash"},
        "jifen.ledger.hold.placed.v1": {"hold_id", "program_id", "member_id", "amount", "expires_at",
                                        "idempotency_key"},
        "jifen.ledger.hold.resolved.v1": {"hold_id", "program_id", "member_id", "outcome", "captured", "released",
                                          "idempotency_key"},
        "jifen.ledger.command.rejected.v1": {"program_id", "member_id", "idempotency_key", "command_type", "reason",
                                             "detail"},
        "jifen.tier.changed.v1": {"program_id", "member_id", "tier", "previous_tier", "earn_multiplier"},
    }
    now = topics.contracts()
    for message_type, fields in before.items():
        assert message_type in now, f"{message_type} was removed"
        kept = set(now[message_type].model_fields)
        assert fields <= kept, f"{message_type} lost {fields - kept}"
    commands = {"jifen.ledger.credit.v1", "jifen.ledger.debit.v1", "jifen.ledger.hold.place.v1",
                "jifen.ledger.hold.capture.v1", "jifen.ledger.hold.release.v1", "jifen.ledger.hold.expire.v1",
                "jifen.ledger.lot.expire.v1", "jifen.ledger.reverse.v1", "jifen.ledger.adjust.v1",
                "jifen.ledger.transfer.v1"}
    assert commands <= now.keys()


def test_the_schemas_are_json_schema_and_an_integrators_validator_enforces_them() -> None:
    """Pydantic's own words (`ge`, `gt`, …) mean nothing to a JSON Schema validator: none may be left, and a
    validator given the document refuses what Jifen refuses (a negative amount, as a string or a number)."""
    doc = yaml.safe_load(DOCUMENT.read_text())
    found: list[str] = []

    def walk(node: Any, path: str, named: bool = False) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if not named and key in PYDANTIC_ONLY:
                    found.append(f"{path}.{key}")
                walk(value, f"{path}.{key}", named=not named and key in NAMED)
        elif isinstance(node, list):
            for n, item in enumerate(node):
                walk(item, f"{path}[{n}]")

    walk(doc, "document")
    assert found == []
    schemas = doc["components"]["schemas"]

    def validator(name: str) -> Draft202012Validator:
        text = orjson.dumps({"$ref": f"#/$defs/{name}", "$defs": schemas}).decode()
        schema = orjson.loads(text.replace("#/components/schemas/", "#/$defs/"))
        Draft202012Validator.check_schema(schema)
        return Draft202012Validator(schema)

    purchase = validator("PurchaseCompleted")
    good = {"member_id": "m1", "order_id": "o1", "channel": "pos", "currency": "CNY", "total": "12.50",
            "lines": [{"sku": "a", "quantity": "1", "unit_price": "12.50", "total": "12.50"}]}
    assert list(purchase.iter_errors(good)) == []
    for total in ("-5.00", -5):
        assert list(purchase.iter_errors({**good, "total": total})), total
    # What Jifen sends: money is a decimal string, its bound said as a pattern.
    used = validator("CouponUsed")
    coupon = {**{key: "x" for key in schemas["CouponUsed"]["required"]}, "currency": "CNY", "value": "5.00"}
    assert list(used.iter_errors(coupon)) == []
    assert list(used.iter_errors({**coupon, "value": "-1"}))
