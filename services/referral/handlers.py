"""What the referral service consumes: referrals, enrolments, purchases and refunds become stored facts and the
referrals they touch are judged again (`TakeEvents`); the ledger's answers to the service's commands let reversals
go out and close them (`TakeLedgerAnswers`). Each run of events is one `Changes` (judging.py), written in `store`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from services.referral.codes import normalise, owner_of
from services.referral.domain import FINGERPRINTS, referral_id
from services.referral.judging import Changes, Judging, reversal
from services.referral.records import NewMember, NewPurchase, NewReferral, NewRefund
from services.referral.repository import codes, credits, lock, members, referrals
from shared import keys
from shared.contracts.ledger_entries import CommandRejected, PointsEntryPosted
from shared.contracts.members import MemberEnrolled
from shared.contracts.purchases import PurchaseCompleted, PurchaseRefunded
from shared.contracts.referrals import ReferralAccepted
from shared.refusal import Refusal
from shared.subscription import Batch, Handler, Inbound


@dataclass
class TakeEvents(Handler[Changes]):
    """Referrals, enrolments, purchases and refunds in: store them and judge again what they touch. Idempotent by
    itself: every fact is stored by its key (a replay stores nothing new) and judging the same facts again
    changes nothing."""

    judging: Judging
    schema: str
    clock: Callable[[], datetime]

    async def load(self, batch: Batch) -> Changes:
        given = [(i.data.program_id, i.data.referral_code) for i in batch.of(ReferralAccepted)]
        given += [(i.data.program_id, i.data.referral_code) for i in batch.of(MemberEnrolled)]
        named = [(program_id, code) for program_id, typed in given
                 if typed is not None and (code := normalise(typed)) is not None]
        return Changes(batch.uow, batch.rejections, taking=self.judging.programmes(),
                       code_owners=await codes.owners(batch.uow.db, named))

    async def accepted(self, item: Inbound[ReferralAccepted], changes: Changes) -> None:
        accepted = item.data
        try:
            self.judging.taking(accepted.program_id, item.event.time)
            if accepted.referral_code is not None:
                owner_of(changes.code_owners, accepted.program_id, accepted.referral_code, accepted.referrer_member_id)
        except Refusal as refused:
            changes.rejections.reject(item, refused.reason, refused.detail)
            return
        _refer(changes, accepted.program_id, accepted.referrer_member_id, accepted.referee_member_id,
               item.event.time, "accepted", item.event.event_id)

    async def enrolled(self, item: Inbound[MemberEnrolled], changes: Changes) -> None:
        enrolled = item.data
        program_id, member_id = enrolled.program_id, enrolled.member_id
        # Enrolment is when the referee accepted a code it carries; a sender's enrolled_at ahead of the event's
        # own time would judge the referral by a time that has not happened yet.
        at = min(enrolled.enrolled_at, item.event.time) if enrolled.enrolled_at else item.event.time
        if program_id in changes.taking:
            prints = enrolled.fingerprints
            found = tuple((kind, value) for kind in FINGERPRINTS if (value := getattr(prints, kind, None)))
            changes.programs.add(program_id)
            changes.members.append(NewMember(program_id, member_id, at, found))
            changes.either.add((program_id, member_id))
            if any(kind == "device" for kind, _ in found):
                changes.devices.add((program_id, member_id))
        if enrolled.referral_code is None:
            if program_id not in changes.taking:
                self.judging.metrics.ignored.labels(program_id, "no_referral_section").inc()
            return
        try:
            self.judging.taking(program_id, at)
            referrer = owner_of(changes.code_owners, program_id, enrolled.referral_code, None)
        except Refusal as refused:
            # The member and their fingerprints are kept (they judge other referrals); only the referral is refused.
            changes.rejections.reject(item, refused.reason, refused.detail)
            return
        _refer(changes, program_id, referrer, member_id, at, "enrolled", item.event.event_id)

    async def purchase(self, item: Inbound[PurchaseCompleted], changes: Changes) -> None:
        bought = item.data
        if self._ignored(bought.program_id, changes):
            return
        changes.programs.add(bought.program_id)
        changes.purchases.append(NewPurchase(bought.program_id, bought.order_id, bought.member_id,
                                             item.event.event_id, item.event.time, bought.currency, bought.total))
        changes.referees.add((bought.program_id, bought.member_id))

    async def refund(self, item: Inbound[PurchaseRefunded], changes: Changes) -> None:
        refunded = item.data
        if self._ignored(refunded.program_id, changes):
            return
        changes.programs.add(refunded.program_id)
        changes.refunds.append(NewRefund(refunded.program_id, refunded.refund_id, refunded.order_id,
                                         refunded.member_id, item.event.event_id, item.event.time, refunded.total))
        changes.referees.add((refunded.program_id, refunded.member_id))

    async def store(self, changes: Changes) -> None:
        if not changes.programs:
            return
        db = changes.uow.db
        await lock(db, self.schema, changes.programs)
        await members.add_members(db, changes.members)
        await members.add_purchases(db, changes.purchases)
        await members.add_refunds(db, changes.refunds)
        await referrals.add_referrals(db, changes.referrals)
        touched = await referrals.touched(db, changes.referees, changes.either, changes.devices)
        await self.judging.rejudge(changes, touched, self.clock())

    def _ignored(self, program_id: str, changes: Changes) -> bool:
        """A programme without referrals: nothing of its purchases is kept, only counted."""
        if program_id in changes.taking:
            return False
        self.judging.metrics.ignored.labels(program_id, "no_referral_section").inc()
        return True


def _refer(changes: Changes, program_id: str, referrer: str, referee: str, at: datetime, via: str,
           event_id: str) -> None:
    changes.programs.add(program_id)
    changes.referrals.append(NewReferral(referral_id(program_id, referrer, referee), program_id, referrer, referee,
                                         at, via, event_id))
    changes.referees.add((program_id, referee))
    changes.devices.add((program_id, referee))


@dataclass
class TakeLedgerAnswers(Handler[Changes]):
    """The ledger's answers to the service's commands: a credit posted lets a reversal that waited for it go out;
    a refused credit needs none; a reversal's answer closes it. Other services' entries are passed over without a
    query."""

    judging: Judging
    schema: str

    async def load(self, batch: Batch) -> Changes:
        return Changes(batch.uow, batch.rejections)

    async def posted(self, item: Inbound[PointsEntryPosted], changes: Changes) -> None:
        key = item.data.idempotency_key
        if not keys.is_referral_credit(key):
            return  # most entries: earn's, redemption's, the sweeper's
        changes.programs.add(item.data.program_id)
        credit = keys.reversed_credit(key)
        if credit is not None:
            changes.reversals_done.append(credit)
        else:
            changes.credits_posted.append(key)

    async def rejected(self, item: Inbound[CommandRejected], changes: Changes) -> None:
        key = item.data.idempotency_key
        if not keys.is_referral_credit(key):
            return
        changes.programs.add(item.data.program_id)
        credit = keys.reversed_credit(key)
        if credit is not None:
            changes.reversals_failed.append(credit)
        else:
            changes.credits_refused.append(key)
            self.judging.metrics.ledger_refusals.labels(item.data.program_id, item.data.reason).inc()

    async def store(self, changes: Changes) -> None:
        if not changes.programs:
            return
        uow = changes.uow
        await lock(uow.db, self.schema, changes.programs)
        for credit in await credits.posted(uow.db, changes.credits_posted):
            uow.emit(reversal(credit), at=credit["reverse_at"], subject=credit["member_id"])
        await credits.refused(uow.db, changes.credits_refused)
        await credits.reversals_answered(uow.db, changes.reversals_done, "done")
        for row in await credits.reversals_answered(uow.db, changes.reversals_failed, "failed"):
            self.judging.metrics.ledger_refusals.labels(row["program_id"], "reversal_refused").inc()
