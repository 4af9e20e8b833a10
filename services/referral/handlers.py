"""Referral use cases: events in (referrals, enrolments, purchases, refunds) become stored facts and the referrals
they touch are judged again; the ledger's answers to the service's commands; a reviewer's decision; the expiry job.
Each ends in `Judging.rejudge`, which sends what changed through the outbox."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from services.referral import credits, reads, repository
from services.referral.codes import normalise
from services.referral.domain import FINGERPRINTS, Decision, referral_id
from services.referral.judging import REVERSAL, Judging, reversal
from services.referral.repository import MemberKey, NewMember, NewPurchase, NewReferral, NewRefund
from shared.contracts.base import Contract
from shared.contracts.ledger_entries import CommandRejected, PointsEntryPosted
from shared.contracts.members import MemberEnrolled
from shared.contracts.purchases import PurchaseCompleted, PurchaseRefunded
from shared.contracts.referrals import ReferralAccepted
from shared.jobs import Job, Page
from shared.refusal import Refusal
from shared.subscription import Inbound, Rejections
from shared.uow import UnitOfWork

KEY_PREFIX = "referral:"  # the ledger commands this service sends


@dataclass
class Facts:
    """A batch's new facts, and whom they touch."""

    programs: set[str] = field(default_factory=set)
    members: list[NewMember] = field(default_factory=list)
    purchases: list[NewPurchase] = field(default_factory=list)
    refunds: list[NewRefund] = field(default_factory=list)
    referrals: list[NewReferral] = field(default_factory=list)
    referees: set[MemberKey] = field(default_factory=set)  # their referrals as referee may change
    either: set[MemberKey] = field(default_factory=set)  # ... on either side
    devices: set[MemberKey] = field(default_factory=set)  # ... and the referrals of referees on their devices


@dataclass
class TakeEvents:
    """Referrals, enrolments, purchases and refunds in: store them and judge again what they touch. Idempotent by
    itself: every fact is stored by its key (a replay stores nothing new) and judging the same facts again
    changes nothing."""

    judging: Judging
    schema: str
    clock: Callable[[], datetime]

    async def __call__(self, items: list[Inbound[Contract]], uow: UnitOfWork, rejections: Rejections) -> None:
        wanted = self.judging.programmes()
        owners = await repository.code_owners(uow.db, _codes_named(items))
        facts = Facts()
        for item in items:
            match item.data:
                case ReferralAccepted() as accepted:
                    self._accepted(item, accepted, owners, facts, rejections)
                case MemberEnrolled() as enrolled:
                    self._enrolled(item, enrolled, owners, wanted, facts, rejections)
                case PurchaseCompleted() as bought if bought.program_id in wanted:
                    facts.programs.add(bought.program_id)
                    facts.purchases.append(NewPurchase(bought.program_id, bought.order_id, bought.member_id,
                                                       item.event.event_id, item.event.time, bought.currency,
                                                       bought.total))
                    facts.referees.add((bought.program_id, bought.member_id))
                case PurchaseRefunded() as refunded if refunded.program_id in wanted:
                    facts.programs.add(refunded.program_id)
                    facts.refunds.append(NewRefund(refunded.program_id, refunded.refund_id, refunded.order_id,
                                                   refunded.member_id, item.event.event_id, item.event.time,
                                                   refunded.total))
                    facts.referees.add((refunded.program_id, refunded.member_id))
                case PurchaseCompleted() | PurchaseRefunded():
                    self.judging.metrics.ignored.labels(item.data.program_id, "no_referral_section").inc()
        if not facts.programs:
            return
        await repository.lock(uow.db, self.schema, facts.programs)
        await repository.add_members(uow.db, facts.members)
        await repository.add_purchases(uow.db, facts.purchases)
        await repository.add_refunds(uow.db, facts.refunds)
        await repository.add_referrals(uow.db, facts.referrals)
        touched = await repository.touched(uow.db, facts.referees, facts.either, facts.devices)
        await self.judging.rejudge(uow, touched, self.clock())

    def _accepted(self, item: Inbound[Contract], accepted: ReferralAccepted, owners: dict[tuple[str, str], str],
                  facts: Facts, rejections: Rejections) -> None:
        refused = self._refusal(accepted.program_id, item.event.time)
        if refused is None and accepted.referral_code is not None:
            refused = _code_refusal(accepted.program_id, accepted.referral_code, owners, accepted.referrer_member_id)
        if refused is not None:
            rejections.reject(item, refused.reason, refused.detail)
            return
        self._refer(accepted.program_id, accepted.referrer_member_id, accepted.referee_member_id, item.event.time,
                    "accepted", item.event.event_id, facts)

    def _enrolled(self, item: Inbound[Contract], enrolled: MemberEnrolled, owners: dict[tuple[str, str], str],
                  wanted: set[str], facts: Facts, rejections: Rejections) -> None:
        program_id, member_id = enrolled.program_id, enrolled.member_id
        # Enrolment is when the referee accepted a code it carries; a sender's enrolled_at ahead of the event's
        # own time would judge the referral by a time that has not happened yet.
        at = min(enrolled.enrolled_at, item.event.time) if enrolled.enrolled_at else item.event.time
        if program_id in wanted:
            prints = enrolled.fingerprints
            found = tuple((kind, value) for kind in FINGERPRINTS if (value := getattr(prints, kind, None)))
            facts.programs.add(program_id)
            facts.members.append(NewMember(program_id, member_id, at, found))
            facts.either.add((program_id, member_id))
            if any(kind == "device" for kind, _ in found):
                facts.devices.add((program_id, member_id))
        if enrolled.referral_code is None:
            if program_id not in wanted:
                self.judging.metrics.ignored.labels(program_id, "no_referral_section").inc()
            return
        refused = self._refusal(program_id, at) or _code_refusal(program_id, enrolled.referral_code, owners, None)
        if refused is not None:
            # The member and their fingerprints are kept (they judge other referrals); only the referral is refused.
            rejections.reject(item, refused.reason, refused.detail)
            return
        referrer = owners[(program_id, normalise(enrolled.referral_code) or "")]
        self._refer(program_id, referrer, member_id, at, "enrolled", item.event.event_id, facts)

    def _refusal(self, program_id: str, at: datetime) -> Refusal | None:
        if self.judging.terms(program_id, at) is not None:
            return None
        if program_id not in self.judging.catalogue.versions:
            return Refusal("unknown_program", f"no programme {program_id!r}")
        return Refusal("no_rule", f"programme {program_id!r} takes no referrals at {at.isoformat()}")

    @staticmethod
    def _refer(program_id: str, referrer: str, referee: str, at: datetime, via: str, event_id: str,
               facts: Facts) -> None:
        facts.programs.add(program_id)
        facts.referrals.append(NewReferral(referral_id(program_id, referrer, referee), program_id, referrer, referee,
                                           at, via, event_id))
        facts.referees.add((program_id, referee))
        facts.devices.add((program_id, referee))


def _codes_named(items: list[Inbound[Contract]]) -> list[tuple[str, str]]:
    named = []
    for item in items:
        data = item.data
        if isinstance(data, ReferralAccepted | MemberEnrolled) and data.referral_code is not None:
            code = normalise(data.referral_code)
            if code is not None:
                named.append((data.program_id, code))
    return named


def _code_refusal(program_id: str, typed: str, owners: dict[tuple[str, str], str],
                  referrer: str | None) -> Refusal | None:
    code = normalise(typed)
    owner = owners.get((program_id, code)) if code is not None else None
    if owner is None:
        return Refusal("unknown_referral_code", f"no member of programme {program_id!r} has the referral code given")
    if referrer is not None and owner != referrer:
        return Refusal("referral_code_mismatch", "the referral code given is not the referrer's")
    return None


@dataclass
class TakeLedgerAnswers:
    """The ledger's answers to the service's commands: a credit posted lets a reversal that waited for it go out;
    a refused credit needs none; a reversal's answer closes it. Other entries are skipped without a query."""

    judging: Judging
    schema: str

    async def __call__(self, items: list[Inbound[Contract]], uow: UnitOfWork, rejections: Rejections) -> None:
        posted: list[str] = []
        refused: list[str] = []
        reversed_: list[str] = []
        failed: list[str] = []
        programs: set[str] = set()
        for item in items:
            data = item.data
            if not isinstance(data, PointsEntryPosted | CommandRejected):
                continue
            key = data.idempotency_key
            if not key.startswith(KEY_PREFIX):
                continue  # most entries: earn's, redemption's, the sweeper's
            programs.add(data.program_id)
            if key.endswith(REVERSAL):
                (reversed_ if isinstance(data, PointsEntryPosted) else failed).append(key.removesuffix(REVERSAL))
            elif isinstance(data, PointsEntryPosted):
                posted.append(key)
            else:
                refused.append(key)
                self.judging.metrics.ledger_refusals.labels(data.program_id, data.reason).inc()
        if not programs:
            return
        await repository.lock(uow.db, self.schema, programs)
        for credit in await credits.posted(uow.db, posted):
            uow.emit(reversal(credit), at=credit["reverse_at"], subject=credit["member_id"])
        await credits.refused(uow.db, refused)
        await credits.reversals_answered(uow.db, reversed_, "done")
        for row in await credits.reversals_answered(uow.db, failed, "failed"):
            self.judging.metrics.ledger_refusals.labels(row["program_id"], "reversal_refused").inc()


class Undecidable(Refusal):
    """A decision on a referral that is unknown or not held for review."""


async def decide(judging: Judging, schema: str, uow: UnitOfWork, program_id: str, referral: str,
                 decision: Decision, by: str, now: datetime) -> None:
    """A reviewer approves or rejects a referral held for velocity; the same decision again changes nothing."""
    await repository.lock(uow.db, schema, [program_id])
    found = await reads.referral(uow.db, program_id, referral)
    if found is None:
        raise Undecidable("unknown_referral", f"programme {program_id!r} has no referral {referral!r}")
    if found["decision"] == decision:
        return
    if found["status"] != "review":
        raise Undecidable("not_in_review", f"referral {referral!r} is {found['status']}, not held for review")
    await repository.decide(uow.db, referral, decision, now, by)
    await judging.rejudge(uow, [(program_id, found["referrer_id"])], now)


def expiry(judging: Judging, schema: str, interval_s: float, page_size: int = 500) -> Job:
    """Close referrals whose referee made no qualifying purchase in time (`expired`), at the round's time; the first
    page of a round also recounts the referrals by status for the metrics."""

    async def page(uow: UnitOfWork, now: datetime, cursor: object) -> Page:
        if cursor is None:
            judging.metrics.recount(await reads.counts(uow.db))
        referrers, more = await repository.due(uow.db, now, page_size)
        if not referrers:
            return Page(0)
        await repository.lock(uow.db, schema, {program_id for program_id, _ in referrers})
        changed = await judging.rejudge(uow, referrers, now)
        return Page(changed, True if more and changed else None)  # no change: nothing more this round can do

    return Job("referral-expiry", page, interval_s)


def purchase_prune(judging: Judging, schema: str, retention_days: float, interval_s: float,
                   page_size: int = 5000) -> Job:
    """Forget purchases older than `retention_days` of members who are nobody's referee, a page at a time. A
    referral that arrives later than that after its own time finds no purchases after accepting (it expires), which
    is why the retention is long (a year and more by default)."""

    async def page(uow: UnitOfWork, now: datetime, cursor: object) -> Page:
        # Under every programme's lock: a referral stored meanwhile makes its referee's purchases worth keeping.
        await repository.lock(uow.db, schema, judging.programmes())
        gone = await repository.prune_purchases(uow.db, now - timedelta(days=retention_days), page_size)
        return Page(gone, True if gone >= page_size else None)

    return Job("purchase-prune", page, interval_s)
