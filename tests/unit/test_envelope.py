import orjson
import pytest

from shared.envelope import BadMessage, encode, parse

EVENT = {"specversion": "1.0", "id": "e1", "source": "pos://s1", "type": "jifen.purchase.completed.v1",
         "time": "2026-11-01T10:00:00+08:00", "data": {"member_id": "m1"}}


def test_structured_mode_gives_attributes_and_data() -> None:
    event = parse(orjson.dumps(EVENT), [("content-type", b"application/cloudevents+json")])
    assert (event.id, event.source, event.type, event.data) == ("e1", "pos://s1", EVENT["type"], {"member_id": "m1"})
    offset = event.time.utcoffset()
    assert event.event_id == "pos://s1|e1" and offset is not None and offset.total_seconds() == 8 * 3600


def test_binary_mode_reads_ce_headers() -> None:
    headers = [(f"ce_{k}", str(EVENT[k]).encode()) for k in ("specversion", "id", "source", "type", "time")]
    event = parse(orjson.dumps(EVENT["data"]), headers)
    assert event.id == "e1" and event.data == {"member_id": "m1"}


@pytest.mark.parametrize(("value", "headers", "reason"), [
    (b"\xff\x00garbage", [], "unparseable"),
    (b"", [], "unparseable"),
    (b'{"member": "m1"}', [], "not_cloudevent"),
    (b"[1, 2]", [], "not_cloudevent"),
    (orjson.dumps({**EVENT, "specversion": "0.3"}), [], "invalid_envelope"),
    (orjson.dumps({k: v for k, v in EVENT.items() if k != "time"}), [], "invalid_envelope"),
    (orjson.dumps({**EVENT, "time": "yesterday"}), [], "invalid_envelope"),
    (orjson.dumps({**EVENT, "time": "2026-11-01T10:00:00"}), [], "invalid_envelope"),
    (orjson.dumps({**EVENT, "id": ""}), [], "invalid_envelope"),
    (b"{}", [("ce_specversion", b"\xff")], "invalid_envelope"),
    (orjson.dumps({**EVENT, "id": "e\u00001"}), [], "invalid_envelope"),  # NUL: PostgreSQL cannot store it
    (orjson.dumps({**EVENT, "source": "pos://s1\n"}), [], "invalid_envelope"),
])
def test_bad_messages_are_named(value: bytes, headers: list[tuple[str, bytes]], reason: str) -> None:
    with pytest.raises(BadMessage) as caught:
        parse(value, headers)
    assert caught.value.reason == reason and caught.value.detail


def test_what_we_encode_we_parse() -> None:
    event = parse(orjson.dumps(EVENT), [])
    again = parse(encode(event.id, event.source, event.type, event.time, event.data), [])
    assert again == event
