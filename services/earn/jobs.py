"""Earn's periodic jobs.

The birthday bonus (hourly, and once at start) looks for members whose birthday it is in each programme's time zone
and sends their bonus through the outbox, keyed `birthday:{program}:{member}:{year}` so a second round, or a second
earn process, cannot pay it twice."""

from __future__ import annotations

from datetime import datetime

from services.earn import repository
from services.earn.activity import birthday_days, birthday_pays
from services.earn.domain import expires_at
from services.earn.programme import Programme
from shared import keys
from shared.contracts.ledger_commands import Cause, PostCredit
from shared.jobs import Job, Page
from shared.programmes import Catalogue
from shared.uow import UnitOfWork

SOURCE = "jifen.earn.birthdays"


def birthdays(catalogue: Catalogue[Programme], interval_s: float, batch_size: int = 1000) -> Job:
    """A page is up to `batch_size` members of one programme whose birthday is due and not yet paid this year; the
    cursor is the programme's place in the list of programmes with a birthday rule."""

    async def page(uow: UnitOfWork, now: datetime, cursor: int | None) -> Page:
        due_in = [(p, p.activity.birthday) for p in (catalogue.at(pid, now) for pid in sorted(catalogue.versions))
                  if p is not None and p.activity.birthday is not None]
        at = cursor or 0
        if at >= len(due_in):
            return Page(0)
        programme, rule = due_in[at]
        assert rule is not None
        local = now.astimezone(programme.zone)
        due = await repository.birthdays_due(uow.db, programme.program_id, birthday_days(local), local.year,
                                             batch_size)
        paid = 0
        for row in due:
            await repository.birthday_paid(uow.db, programme.program_id, row["member_id"], local.year)
            # The member's arm of every experiment running now may change the bonus (or take it away).
            theirs, arms = catalogue.for_member(programme.program_id, row["member_id"], now)
            bonus = theirs.activity.birthday
            if bonus is None or row["birthday_set_at"] is None or not birthday_pays(
                    bonus, row["birthday"], row["birthday_set_at"], now, programme.zone):
                continue  # set too recently (or 29 February in another year's check): nothing this year
            key = keys.birthday_credit(programme.program_id, row["member_id"], local.year)
            credit = PostCredit(
                idempotency_key=key, program_id=programme.program_id, member_id=row["member_id"], amount=bonus.points,
                occurred_at=now, available_at=now, expires_at=expires_at(theirs, now),
                cause=Cause(source_event_id=keys.cause_of(SOURCE, key), rule_id=bonus.rule_id,
                            rule_version=programme.version, reason="birthday", arms=arms or None),
                details={"rule": {"rule_id": bonus.rule_id, "points": bonus.points, "why": "birthday"}})
            uow.emit(credit, at=now, subject=credit.member_id, source=SOURCE)
            paid += 1
        if len(due) == batch_size:
            return Page(paid, at)  # more of this programme's members are due
        return Page(paid, at + 1 if at + 1 < len(due_in) else None)

    return Job("birthdays", page, interval_s)
