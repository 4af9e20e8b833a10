"""Events as upstream systems send them, for the simulator (`jifen simulate`), the bench and the tests: CloudEvents
of every inbound type built from the contracts, a simulated store feed (members buying baskets at tills and online,
with a few exact duplicates and a few malformed messages), and a publisher that sends a feed at a chosen rate."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_FLOOR, Decimal

import orjson
from aiokafka import AIOKafkaProducer

from shared.contracts.purchases import PurchaseCompleted
from shared.kafka import Cluster, client_options

CATALOGUE = [
    ("SKU-RICE-5KG", "grocery", Decimal("59.90")), ("SKU-MILK-1L", "dairy", Decimal("12.50")),
    ("SKU-TEA-250", "beverages", Decimal("88.00")), ("SKU-SOAP-3", "household", Decimal("19.90")),
    ("SKU-EGGS-12", "grocery", Decimal("15.80")), ("SKU-NOODLE-5", "grocery", Decimal("9.90")),
    ("SKU-JUICE-1L", "beverages", Decimal("16.00")), ("SKU-TOWEL", "household", Decimal("35.00")),
    ("SKU-YOGURT", "dairy", Decimal("6.50")), ("SKU-OIL-5L", "grocery", Decimal("79.00")),
]


@dataclass(frozen=True)
class Message:
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]
    kind: str  # valid, duplicate, or the reason the DLQ will give
    points: int = 0
    member_id: str = ""


@dataclass
class Feed:
    messages: list[Message] = field(default_factory=list)

    @property
    def kinds(self) -> Counter[str]:
        return Counter(m.kind for m in self.messages)

    @property
    def expected_points(self) -> int:
        return sum(m.points for m in self.messages if m.kind == "valid")

    @property
    def expected_credits(self) -> int:
        return sum(1 for m in self.messages if m.kind == "valid" and m.points > 0)

    @property
    def members(self) -> set[str]:
        return {m.member_id for m in self.messages if m.kind == "valid" and m.points > 0}


def purchase_event(event_id: str, source: str, time_: datetime, member_id: str, order_id: str, total: Decimal,
                   lines: list[dict[str, str]], channel: str = "pos", store_id: str | None = "store-001",
                   program_id: str | None = None) -> dict[str, object]:
    data: dict[str, object] = {"member_id": member_id, "order_id": order_id, "channel": channel,
                               "currency": "CNY", "total": str(total), "lines": lines}
    if store_id:
        data["store_id"] = store_id
    if program_id:
        data["program_id"] = program_id
    return {"specversion": "1.0", "id": event_id, "source": source, "type": PurchaseCompleted.TYPE,
            "time": time_.isoformat().replace("+00:00", "Z"), "datacontenttype": "application/json", "data": data}


STRUCTURED = [("content-type", b"application/cloudevents+json")]


VIP_BASKET = [("SKU-TEA-250", "beverages", Decimal("88.00"), 4), ("SKU-OIL-5L", "grocery", Decimal("79.00"), 3)]
VIP_EVERY = 25


def build_feed(count: int, *, run_id: str, now: datetime, members: int = 500, duplicate_every: int = 50,
               malformed_every: int = 100, seed: int = 7, vips: int = 0) -> Feed:
    """`count` purchases, plus an exact duplicate every `duplicate_every` and a malformed message every
    `malformed_every` (0 turns either off). Event times spread over the last minutes before `now`. With `vips`,
    every 25th purchase is a big basket (589 yuan) of one of that many regulars, `vip-0`..: enough, with the others'
    baskets, for some members to reach silver and the regulars gold under the default programme's tiers."""
    rng = random.Random(seed)
    feed = Feed()
    malformed_kinds = ["unparseable", "not_cloudevent", "unknown_type", "invalid_data"]
    for n in range(count):
        member = f"m-{rng.randrange(members):05d}"
        lines = []
        basket = [(sku, category, price, rng.randint(1, 3)) for sku, category, price in
                  rng.sample(CATALOGUE, rng.randint(1, 4))]
        if vips and n % VIP_EVERY == 0:
            member, basket = f"vip-{(n // VIP_EVERY) % vips}", VIP_BASKET
        for sku, category, price, qty in basket:
            lines.append({"sku": sku, "category": category, "quantity": str(qty), "unit_price": str(price),
                          "total": str(price * qty)})
        total = sum((Decimal(line["total"]) for line in lines), Decimal(0))
        channel = rng.choice(["pos", "pos", "pos", "online", "app"])
        store = f"store-{rng.randint(1, 12):03d}" if channel == "pos" else None
        when = now - timedelta(seconds=(count - n) * 0.01)
        event = purchase_event(f"{run_id}-{n}", f"sim://{run_id}/{store or channel}", when, member,
                               f"{run_id}-order-{n}", total, lines, channel, store)
        message = Message(member.encode(), orjson.dumps(event), STRUCTURED, "valid",
                          int(total.to_integral_value(ROUND_FLOOR)), member)
        feed.messages.append(message)
        if duplicate_every and n % duplicate_every == duplicate_every - 1:
            feed.messages.append(Message(message.key, message.value, message.headers, "duplicate"))
        if malformed_every and n % malformed_every == malformed_every - 1:
            kind = malformed_kinds[(n // malformed_every) % len(malformed_kinds)]
            feed.messages.append(malformed(kind, f"{run_id}-bad-{n}", member, when))
    return feed


def malformed(kind: str, event_id: str, member: str, when: datetime) -> Message:
    key = member.encode()
    if kind == "unparseable":
        return Message(key, b"\x00\xff{not json at all", [], kind)
    if kind == "not_cloudevent":
        return Message(key, orjson.dumps({"member": member, "amount": 10}), [], kind)
    event = purchase_event(event_id, "sim://bad", when, member, event_id, Decimal("10"), [])
    if kind == "unknown_type":
        event["type"] = "com.example.coupon.clipped.v1"
    elif kind == "invalid_data":
        data = dict(event["data"])  # type: ignore[call-overload]
        data["total"] = "-5.00"
        del data["member_id"]
        event["data"] = data
    return Message(key, orjson.dumps(event), STRUCTURED, kind)


async def publish(feed: Feed, bootstrap: Cluster | str, topic: str, rate: float | None = None,
                  progress: bool = False) -> float:
    """Send the feed (at `rate` messages/s if given); returns the seconds it took."""
    producer = AIOKafkaProducer(**client_options(bootstrap), enable_idempotence=True, acks="all", linger_ms=5,
                                max_batch_size=512 * 1024)
    await producer.start()
    started = time.monotonic()
    try:
        pending = []
        for i, message in enumerate(feed.messages):
            pending.append(await producer.send(topic, message.value, key=message.key, headers=message.headers))
            if rate:
                ahead = (i + 1) / rate - (time.monotonic() - started)
                if ahead > 0.002:
                    await asyncio.sleep(ahead)
            if progress and (i + 1) % 5000 == 0:
                print(f"    sent {i + 1:,}/{len(feed.messages):,}", flush=True)
        await asyncio.gather(*pending)
        await producer.flush()
    finally:
        await producer.stop()
    return time.monotonic() - started
