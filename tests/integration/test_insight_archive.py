"""Insight's archive on the fast harness (its real consumers, both groups, over real PostgreSQL): every event of the
archived topics kept once, as published, even when its batch comes again; the NDJSON of a period in (time, event id)
order across chunks, months and topics; the summary; the refusals; the prune."""

from __future__ import annotations

import random
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from services.insight.app import spec as insight_spec
from shared.contracts import topics
from shared.contracts.base import Contract
from shared.contracts.checkins import CheckinRecorded
from shared.contracts.ledger_entries import PointsEntryPosted
from shared.contracts.members import MemberEnrolled
from shared.contracts.purchases import PurchaseCompleted
from shared.contracts.redemptions import RedemptionCompleted
from shared.contracts.referrals import ReferralAccepted
from shared.contracts.tasks import TaskCompleted
from shared.contracts.tiers import TierChanged
from shared.testing import STRUCTURED, ServiceHarness, cloud_event, record
from tests.support import Infra

# Across the October/November month end in UTC (already November in Shanghai, retail's zone).
START = datetime(2026, 10, 31, 20, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Sent:
    topic: str  # named without prefix
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]
    program_id: str
    at: datetime
    event_id: str  # source|id
    line: bytes  # the archive's line for it, worked out here
    archived: bool = True


def _structured(topic: str, contract: type[Contract], event_id: str, at: datetime, data: dict[str, Any], member: str,
                pretty: bool = False) -> Sent:
    value = cloud_event(contract, event_id, at, data)
    line = value
    if pretty:  # a sender's pretty-printed JSON: the archive keeps it on one line, whitespace for line breaks
        value = orjson.dumps(orjson.loads(value), option=orjson.OPT_INDENT_2)
        line = value.replace(b"\n", b" ")
    return Sent(topic, member.encode(), value, list(STRUCTURED), data.get("program_id", "default"), at,
                f"test://harness|{event_id}", line)


def _binary(topic: str, contract: type[Contract], event_id: str, at: datetime, data: dict[str, Any],
            member: str) -> Sent:
    stamp = at.isoformat().replace("+00:00", "Z")
    headers = [("ce_specversion", b"1.0"), ("ce_id", event_id.encode()), ("ce_source", b"pos://binary"),
               ("ce_type", contract.TYPE.encode()), ("ce_time", stamp.encode()),
               ("content-type", b"application/json")]
    value = orjson.dumps(data)
    line = (b'{"specversion":"1.0","id":"' + event_id.encode() + b'","source":"pos://binary","type":"'
            + contract.TYPE.encode() + b'","time":"' + stamp.encode() + b'","datacontenttype":"application/json",'
            b'"data":' + value + b"}")
    return Sent(topic, member.encode(), value, headers, data.get("program_id", "default"), at,
                f"pos://binary|{event_id}", line)


def mixed_feed(n: int, seed: int = 3, start: datetime = START, span: timedelta = timedelta(hours=8),
               run: str = "a") -> list[Sent]:
    """`n` events of every archived topic for two programmes (and some redemptions, which are not archived), in an
    order a little off their times, as several senders would publish them."""
    rng = random.Random(seed)
    sent: list[Sent] = []
    times = sorted(start + timedelta(seconds=rng.randrange(int(span.total_seconds())),
                                     microseconds=rng.randrange(10**6)) for _ in range(n))
    for i, at in enumerate(times):
        p = rng.choice(["default", "default", "retail"])
        m = f"m{rng.randrange(40):02d}"
        eid = f"{run}{i}"
        kind = rng.randrange(10)
        if kind <= 2:
            data = {"program_id": p, "member_id": m, "order_id": f"o{run}{i}", "channel": "pos", "currency": "CNY",
                    "total": f"{rng.randrange(100, 90000) / 100:.2f}"}
            sent.append(_binary(topics.PURCHASES, PurchaseCompleted, eid, at, data, m) if kind == 0 else
                        _structured(topics.PURCHASES, PurchaseCompleted, eid, at, data, m, pretty=kind == 1))
        elif kind == 3:
            sent.append(_structured(topics.TASKS, TaskCompleted, eid, at, {"program_id": p, "member_id": m,
                                                                          "task_id": eid, "task_type": "survey"}, m))
        elif kind == 4:
            sent.append(_structured(topics.CHECKINS, CheckinRecorded, eid, at, {
                "program_id": p, "member_id": m, "day": at.date().isoformat()}, m))
        elif kind == 5:
            sent.append(_structured(topics.MEMBERS, MemberEnrolled, eid, at, {"program_id": p, "member_id": m}, m))
        elif kind == 6:
            sent.append(_structured(topics.REFERRALS, ReferralAccepted, eid, at, {
                "program_id": p, "referrer_member_id": m, "referee_member_id": f"r{run}{i}"}, f"r{run}{i}"))
        elif kind == 7:
            sent.append(_structured(topics.TIERS, TierChanged, eid, at, {
                "program_id": p, "member_id": m, "tier": "silver", "earn_multiplier": "1.5", "reason": "upgrade"}, m))
        elif kind == 8:
            data = PointsEntryPosted(
                entry_id=i, program_id=p, member_id=m, seq=i, amount=10, balance_after=10, kind="earn",
                idempotency_key=f"k{run}{i}", cause={"source_event_id": f"src{i}", "rule_id": "base", "tier": "silver"},
                occurred_at=at, posted_at=at, hash="00").model_dump(mode="json")
            sent.append(_structured(topics.LEDGER_ENTRIES, PointsEntryPosted, eid, at, data, m))
        else:
            sent.append(_structured(topics.REDEMPTIONS, RedemptionCompleted, eid, at, {
                "program_id": p, "member_id": m, "redemption_id": eid, "reward_id": "tote-bag", "kind": "goods",
                "quantity": 1, "points": 100}, m))
            sent[-1] = replace(sent[-1], archived=False)
    # Senders a little off time order: swap neighbours.
    for i in range(0, len(sent) - 1, 3):
        sent[i], sent[i + 1] = sent[i + 1], sent[i]
    return sent


def expected(sent: list[Sent], program_id: str, start: datetime | None = None, end: datetime | None = None,
             wanted: set[str] | None = None) -> list[bytes]:
    """The archive's NDJSON of the programme for [start, end), worked out from what was sent, each event once."""
    once = {s.event_id: s for s in sent if s.archived and s.program_id == program_id
            and (start is None or s.at >= start) and (end is None or s.at < end)
            and (wanted is None or s.topic in wanted)}
    return [s.line for s in sorted(once.values(), key=lambda s: (s.at, s.event_id))]


@pytest.fixture
async def insight(infra: Infra) -> AsyncIterator[ServiceHarness]:
    async with ServiceHarness(insight_spec(), await infra.new_database("archive_")) as harness:
        yield harness


async def feed(harness: ServiceHarness, sent: list[Sent], batch: int = 40) -> None:
    for i in range(0, len(sent), batch):
        await harness.feed([record(s.topic, s.value, key=s.key, headers=s.headers, offset=i + j)
                            for j, s in enumerate(sent[i:i + batch])])


async def ndjson(harness: ServiceHarness, query: str) -> list[bytes]:
    response = await harness.request("GET", f"/v1/programs/{query}")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    return response.content.splitlines()


async def test_every_event_is_archived_once_as_published_even_when_its_batch_comes_again(
        insight: ServiceHarness) -> None:
    sent = mixed_feed(600)
    await feed(insight, sent)
    await feed(insight, sent[80:200])  # batches delivered again (a crash before the offsets moved)
    await feed(insight, sent[::7], batch=17)  # and cut differently
    archived = {s.event_id for s in sent if s.archived}
    rows = await insight.query("SELECT program_id, month, topic, first_at, last_at, events, raw_bytes, body "
                               "FROM archive_chunks")
    assert sum(r["events"] for r in rows) == len(archived)
    for r in rows:  # each chunk: one programme, one UTC month, one topic, its events sorted by (time, event id)
        lines = zlib.decompress(r["body"]).splitlines()
        events = [orjson.loads(line) for line in lines]
        assert len(events) == r["events"] and len(zlib.decompress(r["body"])) == r["raw_bytes"]
        keys = [(datetime.fromisoformat(e["time"]), f"{e['source']}|{e['id']}") for e in events]
        assert keys == sorted(keys) and keys[0][0] == r["first_at"] and keys[-1][0] == r["last_at"]
        assert {e["data"]["program_id"] for e in events} == {r["program_id"]}
        assert {k[0].astimezone(UTC).date().replace(day=1) for k in keys} == {r["month"]}
    assert {r["topic"] for r in rows} == {*topics.INBOUND, topics.TIERS, topics.LEDGER_ENTRIES}
    # The projection's own group took its part as before: the purchases counted once.
    projected = await insight.query("SELECT count(*) AS n FROM inbox WHERE event_id NOT LIKE 'archive:%'")
    assert projected[0]["n"] > 0

    for program_id in ("default", "retail"):
        assert await ndjson(insight, f"{program_id}/archive?from=2026-10-01T00:00:00Z&to=2026-12-01T00:00:00Z") \
            == expected(sent, program_id)
    # A period within, bounds as instants with offsets ([from, to)), and some topics only.
    first, last = START + timedelta(hours=3, minutes=7), START + timedelta(hours=5, minutes=1)
    query = (f"default/archive?from={first.isoformat().replace('+00:00', 'Z')}"
             f"&to={last.astimezone(timezone(timedelta(hours=8))).isoformat()}")
    assert await ndjson(insight, query.replace("+", "%2B")) == expected(sent, "default", first, last)
    wanted = {topics.PURCHASES, topics.TIERS}
    assert await ndjson(insight, f"default/archive?from=2026-10-01T00:00:00Z&to=2026-12-01T00:00:00Z"
                                 f"&topics={','.join(sorted(wanted))}") == expected(sent, "default", wanted=wanted)

    status, summary = await insight.get("/v1/programs/default/archive/summary")
    assert status == 200, summary
    mine = [s for s in {s.event_id: s for s in sent}.values() if s.archived and s.program_id == "default"]
    assert [(m["month"], m["events"]) for m in summary["months"]] == [
        ("2026-10-01", sum(s.at.month == 10 for s in mine)), ("2026-11-01", sum(s.at.month == 11 for s in mine))]
    stored = sum(len(r["body"]) for r in rows if r["program_id"] == "default")
    assert summary["bytes"] == stored and summary["events"] == len(mine) and summary["retention_days"] == 400
    assert summary["bytes_per_event"] == round(stored / len(mine), 1)


async def test_bad_periods_unknown_topics_and_programmes_are_answered(insight: ServiceHarness) -> None:
    await feed(insight, mixed_feed(30))
    for query, status, error in [
            ("default/archive?from=2026-11-02T00:00:00Z&to=2026-11-01T00:00:00Z", 422, "invalid_period"),
            ("default/archive?from=2026-11-01T00:00:00Z&to=2026-11-01T00:00:00Z", 422, "invalid_period"),
            ("default/archive?from=2026-11-01T00:00:00&to=2026-11-02T00:00:00Z", 422, "invalid_period"),
            ("default/archive?topics=jifen.redemptions", 422, "unknown_topic"),
            ("default/archive?from=yesterday", 422, None),
            ("nosuch/archive", 404, "unknown_program"),
            ("nosuch/archive/summary", 404, "unknown_program")]:
        code, body = await insight.get(f"/v1/programs/{query}")
        assert code == status, (query, body)
        assert set(body) == {"error", "detail"} and (error is None or body["error"] == error), (query, body)
    assert (await insight.request("GET", "/v1/programs/default/archive", token="")).status_code == 401


async def test_the_prune_drops_chunks_whose_last_event_is_past_the_retention(insight: ServiceHarness) -> None:
    sent = mixed_feed(200)
    await feed(insight, sent)
    before = await insight.query("SELECT id, last_at FROM archive_chunks")
    cut = START + timedelta(hours=4)
    done, _ = await insight.run_job("archive-prune", cut + timedelta(days=400))
    after = await insight.query("SELECT id, last_at FROM archive_chunks")
    assert done == sum(r["last_at"] < cut for r in before) > 0
    assert {r["id"] for r in after} == {r["id"] for r in before if r["last_at"] >= cut}
