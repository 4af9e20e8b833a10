"""The kit every service stands on, through the fast harness (the real consumer and jobs over real PostgreSQL, no
Kafka): which types a subscription handles, skips or refuses; retries, split-on-failure and the DLQ; future-dated
events; the inbox and its prune job; a job's leader lock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from shared.consumer import REPLAYED_FROM, Retryable
from shared.contracts import topics
from shared.contracts.base import Contract
from shared.contracts.ledger_entries import CommandRejected, HoldPlaced, PointsEntryPosted
from shared.contracts.purchases import PurchaseCompleted
from shared.contracts.tasks import TaskCompleted
from shared.db import advisory_key
from shared.jobs import JobRunner, inbox_prune
from shared.service import ServiceSpec
from shared.settings import Settings
from shared.subscription import Batch, Handler, Inbound, Subscription
from shared.testing import STRUCTURED, ServiceHarness, cloud_event
from tests.support import Infra

MIGRATIONS = Path(__file__).parent / "kit_migrations"
NOW = datetime.now(UTC).replace(microsecond=0)


class Seen(Handler[Batch]):
    """A handler that stores each event it applies, and can be told to fail: one method per type, routed by the
    kit."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.fail_transiently = 0
        self.broken: set[str] = set()  # event ids that make the handler raise a bug
        self.refused: set[str] = set()  # event ids it refuses by a business rule

    async def load(self, batch: Batch) -> Batch:
        self.calls.append([i.event.id for i in batch.items])
        if self.fail_transiently:
            self.fail_transiently -= 1
            raise Retryable("a concurrent writer moved first")
        if any(i.event.id in self.broken for i in batch.items):
            raise ValueError("a bug in the handler")
        return batch

    async def purchase(self, item: Inbound[PurchaseCompleted], batch: Batch) -> None:
        await self._seen(item, batch)

    async def entry(self, item: Inbound[PointsEntryPosted], batch: Batch) -> None:
        await self._seen(item, batch)

    async def _seen(self, item: Inbound[Contract], batch: Batch) -> None:
        if item.event.id in self.refused:
            batch.reject(item, "no_rule", f"nothing applies to {item.event.id}")
            return
        await batch.uow.db.execute("INSERT INTO seen VALUES ($1, $2)", item.event.id, item.event.type)


@pytest.fixture
async def kit(infra: Infra) -> AsyncIterator[tuple[ServiceHarness, Seen, Seen]]:
    purchases, entries = Seen(), Seen()
    spec = ServiceSpec(name="kit", settings=Settings(schema_name="kit"), migrations=MIGRATIONS,
                       subscriptions=[Subscription(purchases, types=[PurchaseCompleted]),
                                      Subscription(entries, types=[PointsEntryPosted], others="skip")])
    async with ServiceHarness(spec, await infra.new_database("kit_")) as harness:
        yield harness, purchases, entries


def purchase(event_id: str, at: datetime = NOW, **data: Any) -> bytes:
    return cloud_event(PurchaseCompleted, event_id, at, {"member_id": "ann", "order_id": event_id, "channel": "pos",
                                                         "currency": "CNY", "total": "10", **data})


def entry_data(n: int) -> dict[str, Any]:
    return {"entry_id": n, "program_id": "default", "member_id": "ann", "seq": n, "amount": 10, "balance_after": 10 * n,
            "kind": "earn", "idempotency_key": f"earn:{n}", "cause": {"source_event_id": f"e{n}"},
            "occurred_at": NOW.isoformat(), "posted_at": NOW.isoformat(), "hash": "00"}


async def seen(harness: ServiceHarness) -> list[str]:
    return [r["event_id"] for r in await harness.query("SELECT event_id FROM seen ORDER BY event_id")]


def counted(harness: ServiceHarness, metric: str, **labels: str) -> float:
    value = harness.runtime.metrics.registry.get_sample_value(metric, {"service": "kit", **labels})
    return value or 0.0


async def test_an_entries_reader_handles_its_type_and_skips_the_others_counting_them(
        kit: tuple[ServiceHarness, Seen, Seen]) -> None:
    harness, _, entries = kit
    hold = {"hold_id": "h1", "program_id": "default", "member_id": "ann", "amount": 5,
            "expires_at": NOW.isoformat(), "idempotency_key": "hold:1"}
    rejected = {"program_id": "default", "member_id": "ann", "idempotency_key": "debit:1",
                "command_type": "jifen.ledger.debit.v1", "reason": "insufficient_points", "detail": "short"}
    out = await harness.send(topics.LEDGER_ENTRIES,
                             cloud_event(PointsEntryPosted, "entry:1", NOW, entry_data(1)),
                             cloud_event(HoldPlaced, "hold-placed:h1", NOW, hold),
                             cloud_event(CommandRejected, "rejected:1", NOW, rejected),
                             cloud_event(PointsEntryPosted, "entry:2", NOW, entry_data(2)),
                             # a type the ledger may add one day: a reader that does not know it skips it too
                             cloud_event(PointsEntryPosted, "future:1", NOW, {}).replace(
                                 b"jifen.ledger.entry.posted.v1", b"jifen.ledger.entry.annotated.v1"))
    assert out.dead == [] and out.messages == []
    assert entries.calls == [["entry:1", "entry:2"]]  # one call: the skipped types do not cut the run
    assert await seen(harness) == ["entry:1", "entry:2"]
    for message_type, n in ((HoldPlaced.TYPE, 1), (CommandRejected.TYPE, 1), ("jifen.ledger.entry.annotated.v1", 1)):
        assert counted(harness, "jifen_events_ignored_total", topic=topics.LEDGER_ENTRIES, type=message_type) == n
    # nothing of a skipped event is stored, not even its id in the inbox
    inbox = await harness.query("SELECT event_id FROM inbox ORDER BY event_id")
    assert [r["event_id"] for r in inbox] == ["test://harness|entry:1", "test://harness|entry:2"]


async def test_an_inbound_topic_refuses_a_type_it_does_not_carry_and_skips_one_another_service_handles(
        kit: tuple[ServiceHarness, Seen, Seen]) -> None:
    harness, purchases, _ = kit
    refunded = cloud_event(PurchaseCompleted, "r1", NOW, {}).replace(b"jifen.purchase.completed.v1",
                                                                      b"jifen.purchase.refunded.v1")
    out = await harness.send(topics.PURCHASES, purchase("p1"),
                             cloud_event(TaskCompleted, "t1", NOW, {"member_id": "ann", "task_id": "t",
                                                                    "task_type": "kpi"}),
                             purchase("p2").replace(b"jifen.purchase.completed.v1", b"com.example.coupon.v1"),
                             refunded)
    assert [(d.reason, d.detail.split(" is not")[0]) for d in out.dead] == [
        ("unknown_type", "'jifen.task.completed.v1'"), ("unknown_type", "'com.example.coupon.v1'")]
    assert purchases.calls == [["p1"]]
    # refunds travel on jifen.purchases for earn: this subscription does not handle them, and says so by counting
    assert counted(harness, "jifen_events_ignored_total", topic=topics.PURCHASES,
                   type="jifen.purchase.refunded.v1") == 1


async def test_an_event_from_further_ahead_than_the_tolerance_goes_to_the_dlq_as_future_event(
        kit: tuple[ServiceHarness, Seen, Seen]) -> None:
    harness, _, _ = kit
    soon, later = datetime.now(UTC) + timedelta(minutes=2), datetime.now(UTC) + timedelta(minutes=6)
    out = await harness.send(topics.PURCHASES, purchase("soon", soon), purchase("later", later))
    assert [(d.reason, "ahead of kit's clock" in d.detail) for d in out.dead] == [("future_event", True)]
    assert await seen(harness) == ["soon"]


async def test_a_transient_failure_retries_the_whole_batch_and_applies_it_once(
        kit: tuple[ServiceHarness, Seen, Seen]) -> None:
    harness, purchases, _ = kit
    purchases.fail_transiently = 2
    out = await harness.send(topics.PURCHASES, purchase("a"), purchase("b"))
    assert out.dead == []
    assert purchases.calls == [["a", "b"]] * 3
    assert await seen(harness) == ["a", "b"]
    assert counted(harness, "jifen_transient_failures_total", error="Retryable") == 2


async def test_a_bug_splits_the_batch_and_only_the_event_that_causes_it_goes_to_the_dlq(
        kit: tuple[ServiceHarness, Seen, Seen]) -> None:
    harness, purchases, _ = kit
    purchases.broken = {"b"}
    purchases.refused = {"c"}
    out = await harness.send(topics.PURCHASES, purchase("a"), purchase("b"), purchase("c"), b"{not json",
                             purchase("d", total="-1"))
    assert sorted((d.reason, d.value[:9]) for d in out.dead) == sorted([
        ("processing_error", purchase("b")[:9]), ("no_rule", purchase("c")[:9]), ("unparseable", b"{not json"),
        ("invalid_data", purchase("d")[:9])])
    broken = next(d for d in out.dead if d.reason == "processing_error")
    assert "a bug in the handler" in broken.detail and broken.headers["jifen-dlq-error-class"] == "BadMessage"
    assert await seen(harness) == ["a"]
    assert purchases.calls == [["a", "b", "c"], ["a"], ["b"], ["c"]]


async def test_the_inbox_skips_a_duplicate_in_the_batch_and_across_batches(
        kit: tuple[ServiceHarness, Seen, Seen]) -> None:
    harness, purchases, _ = kit
    await harness.send(topics.PURCHASES, purchase("a"), purchase("a"))
    await harness.send(topics.PURCHASES, purchase("a"), purchase("b"))
    assert purchases.calls == [["a"], ["b"]]
    assert counted(harness, "jifen_duplicates_skipped_total", topic=topics.PURCHASES) == 2


async def test_the_inbox_prune_job_forgets_old_ids_a_page_at_a_time_and_keeps_recent_ones(
        kit: tuple[ServiceHarness, Seen, Seen]) -> None:
    harness, _, _ = kit
    async with harness.runtime.connection() as conn:
        await conn.execute("INSERT INTO inbox (event_id, received_at) SELECT 'old-' || n, "
                           "$1::timestamptz - n * interval '1 min' FROM generate_series(1, 12) n",
                           NOW - timedelta(days=8))
        await conn.execute("INSERT INTO inbox (event_id, received_at) VALUES ('recent', $1)", NOW - timedelta(days=6))
    # five ids a page, so the round takes three pages
    runtime = harness.runtime
    assert runtime.engine is not None
    runner = JobRunner(inbox_prune(7 * 86400, 3600, page_size=5), service="kit", schema="kit", engine=runtime.engine,
                       unit_of_work=runtime.unit_of_work, metrics=runtime.metrics, clock=lambda: NOW)
    assert await runner.run_once(NOW) == 12
    assert [r["event_id"] for r in await harness.query("SELECT event_id FROM inbox")] == ["recent"]
    assert await runner.run_once(NOW) == 0
    assert counted(harness, "jifen_job_items_total", job="inbox-prune") == 12
    assert counted(harness, "jifen_job_runs_total", job="inbox-prune", outcome="ok") == 2


async def test_a_job_whose_lock_another_process_holds_skips_the_round(kit: tuple[ServiceHarness, Seen, Seen],
                                                                      infra: Infra) -> None:
    harness, _, _ = kit
    other = await asyncpg.connect(harness.spec.settings.asyncpg_dsn)
    try:
        await other.execute("SELECT pg_advisory_lock($1)", advisory_key("job:kit:inbox-prune"))
        assert await harness.runtime.jobs["inbox-prune"].run_once(NOW) is None
        assert counted(harness, "jifen_job_runs_total", job="inbox-prune", outcome="standby") == 1
    finally:
        await other.close()
    assert await harness.runtime.jobs["inbox-prune"].run_once(NOW) == 0


async def test_an_event_refused_by_a_rule_is_dead_lettered_once_and_judged_again_when_replayed(
        kit: tuple[ServiceHarness, Seen, Seen]) -> None:
    harness, purchases, _ = kit
    purchases.refused = {"r1"}
    out = await harness.send(topics.PURCHASES, purchase("r1"))
    assert out.reasons == ["no_rule"]
    # The same record again (a crash after the commit, before the offsets moved) is a duplicate, not a second DLQ copy.
    again = await harness.send(topics.PURCHASES, purchase("r1"))
    assert again.dead == [] and counted(harness, "jifen_duplicates_skipped_total", topic=topics.PURCHASES) >= 1
    purchases.refused = set()  # its cause fixed (a programme added, say), the record comes back from the DLQ
    replay = [*STRUCTURED, (REPLAYED_FROM, b"jifen.purchases.dlq/0/7")]
    out = await harness.send(topics.PURCHASES, out.dead[0].value, headers=replay)
    assert out.dead == [] and await seen(harness) == ["r1"]
    # That replay delivered twice, or replayed again, finds the event applied: it is a duplicate from now on.
    out = await harness.send(topics.PURCHASES, purchase("r1"), headers=replay)
    assert out.dead == []
    out = await harness.send(topics.PURCHASES, purchase("r1"), headers=[*STRUCTURED, (REPLAYED_FROM, b"dlq/0/9")])
    assert out.dead == [] and await seen(harness) == ["r1"]
    assert [c for c in purchases.calls if c == ["r1"]] == [["r1"], ["r1"]]  # judged twice: first, then the replay
