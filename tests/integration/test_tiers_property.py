"""The tiers service against a plain model, as a property: for any sequence of earn credits, reversals (late ones
too) and review rounds at later and later times, cut into batches any way, the service (its real consumer, handler,
review job and tables over real PostgreSQL) announces exactly the changes the pure rules give when applied to the
whole history in memory; and a second, independent run of the same input announces the same changes, byte for
byte.

The model keeps every contribution of a member in a list and applies `services.tiers.domain` event by event; the
service loads only what a window can reach, resolves each reversal to the time of the credit it corrects from its
tables, numbers its changes and stores its state between batches. The property is that none of that matters.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.tiers import domain
from services.tiers.app import spec as tiers_spec
from services.tiers.domain import Contribution, Member
from services.tiers.programme import TiersProgramme
from shared import keys
from shared.contracts import topics
from shared.contracts.ledger_entries import PointsEntryPosted
from shared.contracts.tiers import TierChanged
from shared.programmes import Catalogue
from shared.settings import Settings
from shared.testing import Delivered, ServiceHarness, cloud_event
from tests.support import Infra

START = datetime(2025, 1, 1, tzinfo=UTC)
MEMBERS = ("ann", "bob")
EXAMPLES = 60
T = TypeVar("T")


@dataclass(frozen=True)
class Earn:
    member: str
    entry_id: int
    points: int
    at: datetime


@dataclass(frozen=True)
class Reverse:
    member: str
    entry_id: int
    corrects: Earn
    points: int
    at: datetime


@dataclass(frozen=True)
class Review:
    at: datetime


Step = Earn | Reverse | Review


@st.composite
def histories(draw: st.DrawFn) -> list[Step]:
    """Credits at moving times (some late: before the last one sent), reversals of earlier credits (in part or in
    whole), and review rounds, over up to three years."""
    steps: list[Step] = []
    clock = START
    earns: list[Earn] = []
    reversed_: dict[int, int] = {}
    next_id = 1
    for _ in range(draw(st.integers(4, 28))):
        kind = draw(st.sampled_from(["earn", "earn", "earn", "late", "reverse", "reverse", "review"]))
        clock += timedelta(days=draw(st.integers(0, 90)), hours=draw(st.integers(0, 23)))
        if kind in ("earn", "late"):
            at = clock - timedelta(days=draw(st.integers(1, 200))) if kind == "late" else clock
            points = draw(st.sampled_from([100, 400, 900, 2500, 6000, 15000]))
            earn = Earn(draw(st.sampled_from(MEMBERS)), next_id, points, max(at, START))
            earns.append(earn)
            steps.append(earn)
        elif kind == "reverse" and earns:
            target = draw(st.sampled_from(earns[-3:]))  # mostly recent ones: those that may have crossed a level
            left = target.points - reversed_.get(target.entry_id, 0)
            if left <= 0:
                continue
            points = draw(st.integers(1, left))
            reversed_[target.entry_id] = reversed_.get(target.entry_id, 0) + points
            steps.append(Reverse(target.member, next_id, target, points, max(clock, target.at)))
        else:
            steps.append(Review(clock))
        next_id += 1
    return steps


def entry(step: Earn | Reverse) -> bytes:
    earn = isinstance(step, Earn)
    data = {"entry_id": step.entry_id, "program_id": "default", "member_id": step.member, "seq": step.entry_id,
            "amount": step.points if earn else -step.points, "balance_after": 0,
            "kind": "earn" if earn else "reversal", "idempotency_key": keys.earn_credit(str(step.entry_id), "t"),
            "cause": {"source_event_id": keys.cause_of("e", str(step.entry_id))}, "occurred_at": step.at.isoformat(),
            "posted_at": step.at.isoformat(), "hash": "00",
            **({} if earn else {"corrects_entry_id": step.corrects.entry_id})}  # type: ignore[union-attr]
    return cloud_event(PointsEntryPosted, keys.posted_event(step.entry_id), step.at, data, source="jifen.ledger")


Announced = tuple[str, str, str, str, str | None, datetime]  # member, tier, previous, reason, detail, at


def model(steps: list[Step], catalogue: Catalogue[TiersProgramme]) -> list[Announced]:
    """The pure rules over the whole history in memory, event by event in arrival order, with what must hold of
    every change they make: each starts from the tier the last one left; a rise is to the level its value supports;
    a review drops to the level the reviewed window supports (the default programme's to_qualifying)."""
    programme = catalogue.at("default", START)
    assert programme is not None and programme.tiers is not None
    rules, zone = programme.tiers, programme.zone
    members = {m: Member.new(rules) for m in MEMBERS}
    out: list[Announced] = []
    made: list[domain.Change] = []
    for step in steps:
        if isinstance(step, Review):
            for name, member in members.items():
                reviewed = domain.advance(member, rules, zone, step.at)
                made += reviewed
                out += [(name, c.tier, c.previous, c.reason, c.detail, c.at) for c in reviewed]
            continue
        member = members[step.member]
        if isinstance(step, Earn):
            changes = domain.contribute(member, rules, zone, Contribution(step.at, step.points), step.at)
        else:
            changes = domain.contribute(member, rules, zone, Contribution(step.corrects.at, -step.points), step.at)
        made += changes
        out += [(step.member, c.tier, c.previous, c.reason, c.detail, c.at) for c in changes]
    for c in made:
        supported = rules.supported(c.qualifying_value).tier
        assert c.reason != "upgrade" or c.tier == supported, c
        assert c.detail != "review" or c.tier == supported, c
    held = dict.fromkeys(MEMBERS, rules.base.tier)
    for name, tier, previous, *_ in out:
        assert previous == held[name], (name, previous, held[name])
        held[name] = tier
    return out


def per_member(announced: list[Announced]) -> dict[str, list[Announced]]:
    """Changes by member, each in order (the review job takes members in the order their reviews fall due)."""
    out: dict[str, list[Announced]] = {}
    for a in announced:
        out.setdefault(a[0], []).append(a)
    return out


class Run:
    """Two tiers services, each over a database of its own, on an event loop of its own (Hypothesis drives the
    test); their tables are emptied before each example."""

    TABLES = "contributions, members, changes, assignments, inbox, outbox"

    def __init__(self, infra: Infra) -> None:
        self.loop = asyncio.new_event_loop()
        self.services = [self.run(self._start(infra)) for _ in range(2)]

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    async def _start(self, infra: Infra) -> ServiceHarness:
        harness = ServiceHarness(tiers_spec(), await infra.new_database("tprop_"))
        return await harness.__aenter__()

    def close(self) -> None:
        for harness in self.services:
            self.run(harness.__aexit__())
        self.loop.close()

    async def feed(self, which: int, steps: list[Step], cuts: list[int]) -> tuple[list[Announced], list[bytes]]:
        tiers = self.services[which]
        async with tiers.runtime.connection() as conn:
            await conn.execute(f"TRUNCATE {self.TABLES}")
        out = Delivered()
        batch: list[bytes] = []
        for n, step in enumerate(steps):
            if isinstance(step, Review):
                if batch:
                    out += await tiers.send(topics.LEDGER_ENTRIES, *batch)
                    batch = []
                _, done = await tiers.run_job("tier-review", step.at)
                out += done
                continue
            batch.append(entry(step))
            if n in cuts:
                out += await tiers.send(topics.LEDGER_ENTRIES, *batch)
                batch = []
        if batch:
            out += await tiers.send(topics.LEDGER_ENTRIES, *batch)
        changes = [m for m in out.messages if m.type == TierChanged.TYPE]
        announced = [(m.data["member_id"], m.data["tier"], m.data["previous_tier"], m.data["reason"],
                      m.data["detail"], datetime.fromisoformat(m.event["time"])) for m in changes]
        return announced, [m.value for m in changes]


@pytest.fixture
def run(infra: Infra) -> Iterator[Run]:
    started = Run(infra)
    try:
        yield started
    finally:
        started.close()


def test_the_service_announces_what_the_rules_give_over_the_whole_history_and_a_rerun_the_same(run: Run) -> None:
    catalogue = Catalogue.load(Settings().programmes_dir, TiersProgramme)
    seen = {"examples": 0, "changes": 0, "downgrades": 0, "reversed": 0}

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(steps=histories(), cuts=st.lists(st.integers(0, 30), max_size=6), again=st.lists(st.integers(0, 30),
                                                                                          max_size=6))
    def check(steps: list[Step], cuts: list[int], again: list[int]) -> None:
        expected = model(steps, catalogue)
        announced, first = run.run(run.feed(0, steps, cuts))
        assert per_member(announced) == per_member(expected)
        # The same input cut into other batches, on another database: the same announcements, byte for byte.
        _, second = run.run(run.feed(1, steps, again))
        assert sorted(second) == sorted(first)
        seen["examples"] += 1
        seen["changes"] += len(expected)
        seen["downgrades"] += sum(1 for a in expected if a[3] == "downgrade")
        seen["reversed"] += sum(1 for a in expected if a[4] == "reversed")

    check()
    print(f"tiers property: {seen}")
    # The property means something only if tiers change, fall at reviews and are undone by reversals.
    assert seen["changes"] >= seen["examples"] and seen["downgrades"] >= 5 and seen["reversed"] >= 2, seen
