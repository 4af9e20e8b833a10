"""The redemption service's periodic jobs: the gauges read from the database, rejected redemptions pruned past
their retention, and the sealed copies of shown coupon codes forgotten once their reveal window closes."""

from __future__ import annotations

from datetime import datetime, timedelta

from services.redemption import repository
from services.redemption.metrics import RedemptionMetrics
from services.redemption.programme import RedemptionProgramme
from shared.jobs import Job, Page
from shared.programmes import Catalogue
from shared.uow import UnitOfWork

PAGE = 1000


def watch(metrics: RedemptionMetrics, catalogue: Catalogue[RedemptionProgramme], interval_s: float) -> Job:
    """Reads the gauges that a change alone cannot keep right: the oldest pending redemption's age, the stock, the
    cheapest reward of each catalogue in force."""

    async def page(uow: UnitOfWork, now: datetime, cursor: object) -> Page:
        for program_id in catalogue.versions:
            programme = catalogue.at(program_id, now)
            if programme is not None and programme.rewards:
                metrics.lowest_points.labels(program_id).set(min(r.points for r in programme.rewards))
        count, oldest = await repository.redemptions.oldest_pending(uow.db)
        metrics.pending.labels().set(count)
        metrics.pending_age.labels().set((now - oldest).total_seconds() if oldest is not None else 0)
        for row in await repository.stock.every_stock(uow.db):
            metrics.stock_left.labels(row["program_id"], row["reward_id"]).set(row["remaining"])
        return Page(0)

    return Job("redemption-watch", page, interval_s)


def prune_rejected(retention_s: float, interval_s: float, page_size: int = PAGE) -> Job:
    """Deletes redemptions rejected more than `retention_s` ago, a page at a time: they took no points, so nothing
    is lost but their record (and their key: the same Idempotency-Key after that makes a new redemption)."""

    async def page(uow: UnitOfWork, now: datetime, cursor: object) -> Page:
        deleted = await repository.redemptions.prune_rejected(uow.db, now - timedelta(seconds=retention_s), page_size)
        return Page(deleted, True if deleted == page_size else None)

    return Job("redemption-prune-rejected", page, interval_s)


def forget_codes(window_s: float, interval_s: float, page_size: int = PAGE) -> Job:
    """Drops the sealed copy of every coupon code shown more than `window_s` ago: only its hash is left."""

    async def page(uow: UnitOfWork, now: datetime, cursor: object) -> Page:
        forgotten = await repository.coupons.forget_codes(uow.db, now - timedelta(seconds=window_s), page_size)
        return Page(forgotten, True if forgotten == page_size else None)

    return Job("coupon-code-forget", page, interval_s)
