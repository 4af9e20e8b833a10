"""Visits: check-ins in, each member's visit count out. One method per contract type; the kit routes by type."""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.contracts.checkins import CheckinRecorded
from shared.programmes import Catalogue, ProgrammeVersion
from shared.refusal import Refusal
from shared.subscription import Batch, Handler, Inbound
from tests.example.visits import repository
from tests.example.visits.domain import FIRST, Visits
from tests.example.visits.metrics import VisitsMetrics
from tests.example.visits.repository import Member


@dataclass
class Changes:
    """What one batch changes: loaded once, changed in memory, stored with one statement."""

    batch: Batch
    visits: dict[Member, Visits]
    changed: dict[Member, Visits] = field(default_factory=dict)


@dataclass
class CountVisits(Handler[Changes]):
    catalogue: Catalogue[ProgrammeVersion]
    metrics: VisitsMetrics

    async def load(self, batch: Batch) -> Changes:
        members = [(i.data.program_id, i.data.member_id) for i in batch.of(CheckinRecorded)]
        return Changes(batch, await repository.load(batch.uow.db, members))

    async def checkin(self, item: Inbound[CheckinRecorded], changes: Changes) -> None:
        try:
            self.catalogue.in_force(item.data.program_id, item.event.time)
        except Refusal as refused:  # to the DLQ with its reason; the partition goes on
            changes.batch.reject(item, refused.reason, refused.detail)
            return
        member = (item.data.program_id, item.data.member_id)
        before = changes.visits.get(member, FIRST)
        after = before.after(item.data.day)
        if after != before:
            changes.visits[member] = changes.changed[member] = after
            changes.batch.uow.after_commit.append(self.metrics.counted.labels(item.data.program_id).inc)

    async def store(self, changes: Changes) -> None:
        if changes.changed:
            await repository.store(changes.batch.uow.db, changes.changed)
