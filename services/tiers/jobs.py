"""The tiers service's periodic job: the daily review that applies what is due and warns before a drop."""

from __future__ import annotations

from datetime import datetime

from services.tiers import domain, repository
from services.tiers.domain import reach
from services.tiers.handlers import Changes, record
from services.tiers.metrics import TiersMetrics
from services.tiers.programme import TiersProgramme
from services.tiers.repository import MemberKey
from shared.jobs import Job, Page
from shared.programmes import Catalogue
from shared.uow import UnitOfWork


def review(catalogue: Catalogue[TiersProgramme], metrics: TiersMetrics, schema: str, interval_s: float,
           page_size: int = 500, rebuilding: bool = False) -> Job:
    """The daily review: members whose tier period ended (plus grace) are reviewed, at that time; members within
    `warn_days` of a review that, as things stand, lowers their tier are warned once per period. The first page of
    a round also counts the members per tier. `rebuilding`: the rebuild's own review, under the lock it holds,
    announcing nothing again."""

    async def page(uow: UnitOfWork, now: datetime, cursor: object) -> Page:
        if not rebuilding and not await repository.share_projection(uow.db, schema):
            return Page(0)  # a rebuild is running: the next round reviews
        if cursor is None:
            for (program_id, tier), n in (await repository.counts(uow.db)).items():
                metrics.members.labels(program_id, tier).set(n)
        keys = await repository.due(uow.db, now, page_size)
        rules: dict[MemberKey, TiersProgramme] = {}
        for key in keys:
            programme = catalogue.at(key[0], now)
            if programme is not None and programme.tiers is not None:
                rules[key] = programme
        changes = Changes(uow, states=await repository.members(uow.db, {
            k: (now, reach(p.tiers)) for k, p in rules.items() if p.tiers is not None}))
        for key, programme in rules.items():
            member, tiers = changes.states.get(key), programme.tiers
            if member is None or tiers is None:
                continue
            changes.touched[key] = (tiers, now)
            changes.changed += [(key, change, tiers) for change in domain.advance(member, tiers, programme.zone, now)]
            warning = domain.expiring(member, tiers, programme.zone, now)
            if warning is not None:
                member.warned_for = member.valid_until
                changes.warnings.append((key, warning, now))
        await repository.forget_due(uow.db, [k for k in keys if k not in rules])
        await record(changes, metrics, announce=not rebuilding)
        return Page(len(keys), True if len(keys) == page_size else None)

    return Job("tier-review", page, interval_s)
