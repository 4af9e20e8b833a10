"""The referral service's periodic jobs, for the kit's runner: referrals closed when their time runs out, and old
purchases of members who are nobody's referee forgotten."""

from __future__ import annotations

from datetime import datetime, timedelta

from services.referral.judging import Changes, Judging
from services.referral.repository import lock, members, referrals
from shared.jobs import Job, Page
from shared.uow import UnitOfWork


def expiry(judging: Judging, schema: str, interval_s: float, page_size: int = 500) -> Job:
    """Close referrals whose referee made no qualifying purchase in time (`expired`), at the round's time; the first
    page of a round also recounts the referrals by status for the metrics."""

    async def page(uow: UnitOfWork, now: datetime, cursor: object) -> Page:
        if cursor is None:
            judging.metrics.recount(await referrals.counts(uow.db))
        referrers, more = await referrals.due(uow.db, now, page_size)
        if not referrers:
            return Page(0)
        await lock(uow.db, schema, {program_id for program_id, _ in referrers})
        changed = await judging.rejudge(Changes(uow), referrers, now)
        return Page(changed, True if more and changed else None)  # no change: nothing more this round can do

    return Job("referral-expiry", page, interval_s)


def purchase_prune(judging: Judging, schema: str, retention_days: float, interval_s: float,
                   page_size: int = 5000) -> Job:
    """Forget purchases older than `retention_days` of members who are nobody's referee, a page at a time. A
    referral that arrives later than that after its own time finds no purchases after accepting (it expires), which
    is why the retention is long (a year and more by default)."""

    async def page(uow: UnitOfWork, now: datetime, cursor: object) -> Page:
        # Under every programme's lock: a referral stored meanwhile makes its referee's purchases worth keeping.
        await lock(uow.db, schema, judging.programmes())
        gone = await members.prune_purchases(uow.db, now - timedelta(days=retention_days), page_size)
        return Page(gone, True if gone >= page_size else None)

    return Job("purchase-prune", page, interval_s)
