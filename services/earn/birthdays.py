"""The birthday bonus: once a day (and at start), earn looks for members whose birthday it is in each
programme's time zone and sends their bonus through the outbox, keyed `birthday:{program}:{member}:{year}` so a
second run, or a second earn process, cannot pay it twice."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from services.earn import repository
from services.earn.activity import birthday_pays
from services.earn.domain import expires_at
from services.earn.programmes import Catalogue
from shared.contracts import Cause, PostCredit
from shared.db import advisory_key
from shared.outbox import ledger_command
from shared.service import every
from shared.uow import UnitOfWork

log = logging.getLogger(__name__)
SOURCE = "jifen.earn.birthdays"


@dataclass
class BirthdayBonus:
    engine: AsyncEngine
    schema: str
    catalogue: Catalogue
    commands_topic: str
    clock: Callable[[], datetime]
    interval_s: float = 3600.0
    batch_size: int = 1000

    async def pay_due(self) -> int:
        """Pay every birthday due now; returns how many were paid."""
        now, paid = self.clock(), 0
        lock = advisory_key(f"birthdays:{self.schema}")
        for program_id in list(self.catalogue.versions):
            programme = self.catalogue.at(program_id, now)
            rule = programme.activity.birthday if programme is not None else None
            if programme is None or rule is None:
                continue
            today = now.astimezone(programme.zone).date()
            # 29 February birthdays are kept on 28 February in years without one.
            leap = today.year % 4 == 0 and (today.year % 100 != 0 or today.year % 400 == 0)
            days = [today.strftime("%m-%d")] + (["02-29"] if today.strftime("%m-%d") == "02-28" and not leap else [])
            while True:
                async with UnitOfWork(self.engine, self.schema) as uow:
                    if not await uow.db.fetchval("SELECT pg_try_advisory_xact_lock($1)", lock):
                        return paid  # another earn process is paying them
                    due = await repository.birthdays_due(uow.db, program_id, days, today.year, self.batch_size)
                    for row in due:
                        await repository.birthday_paid(uow.db, program_id, row["member_id"], today.year)
                        if row["birthday_set_at"] is None or not birthday_pays(
                                rule, row["birthday"], row["birthday_set_at"], now, programme.zone):
                            continue  # set too recently (or 29 February in another year's check): nothing this year
                        key = f"birthday:{program_id}:{row['member_id']}:{today.year}"
                        credit = PostCredit(
                            idempotency_key=key, program_id=program_id, member_id=row["member_id"],
                            amount=rule.points, occurred_at=now, available_at=now,
                            expires_at=expires_at(programme, now),
                            cause=Cause(source_event_id=f"{SOURCE}|{key}", rule_id=rule.rule_id,
                                        rule_version=programme.version, reason="birthday"),
                            details={"rule": {"rule_id": rule.rule_id, "points": rule.points, "why": "birthday"}})
                        uow.publish(ledger_command(credit, self.commands_topic, SOURCE, now,
                                                  subject=credit.member_id))
                        paid += 1
                    await uow.commit()
                if len(due) < self.batch_size:
                    break
        if paid:
            log.info("birthday bonuses sent", extra={"paid": paid})
        return paid

    async def run(self) -> None:
        await every(self.interval_s, self.pay_due, "birthday round")
