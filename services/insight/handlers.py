"""Insight: the public topics in, per-programme per-day sums and a little per-member state out. One method per
contract type; every change of a batch is summed in memory and stored with a few multi-row statements."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import partial

from services.insight import repository
from services.insight.cohorts import Buckets, outcome_of
from services.insight.metrics import InsightMetrics
from services.insight.programme import InsightProgramme
from services.insight.repository import Decision, Exposed, Exposure, Fact, Member, MemberDay, MemberState
from shared import keys
from shared.consumer import Retryable
from shared.contracts.base import Contract
from shared.contracts.checkins import CheckinRecorded
from shared.contracts.ledger_entries import PointsEntryPosted
from shared.contracts.members import MemberEnrolled
from shared.contracts.purchases import PurchaseCompleted, PurchaseRefunded
from shared.contracts.redemptions import (
    CouponUsed,
    PaymentCaptured,
    RedemptionCancelled,
    RedemptionCompleted,
    RedemptionRejected,
)
from shared.contracts.referral_outcomes import ReferralRejected, ReferralRevoked, ReferralRewarded
from shared.contracts.tasks import TaskCompleted
from shared.contracts.tiers import TierChanged
from shared.experiments import arm_of
from shared.programmes import Catalogue
from shared.subscription import Batch, Handler, Inbound

# A redemption this soon after the member's last earn is counted for the abuse watch ("earn and cash out").
SOON = timedelta(hours=1)

INBOUND: list[type[Contract]] = [PurchaseCompleted, PurchaseRefunded, TaskCompleted, CheckinRecorded, MemberEnrolled]
ANNOUNCED: list[type[Contract]] = [
    PointsEntryPosted, RedemptionCompleted, RedemptionRejected, RedemptionCancelled, PaymentCaptured, CouponUsed,
    ReferralRewarded, ReferralRejected, ReferralRevoked, TierChanged]


def month_of(day: date) -> date:
    return day.replace(day=1)


@dataclass
class Changes:
    """What one batch adds: sums by (programme, day, metric, dim), by member and day, and the members' state."""

    batch: Batch
    members: dict[Member, MemberState]
    buckets: dict[Member, Buckets]
    lot_cohorts: dict[int, date]
    referrals: dict[tuple[str, str], Decision]
    decided: set[tuple[str, str]] = field(default_factory=set)
    facts: dict[Fact, list[Decimal | int]] = field(default_factory=lambda: defaultdict(lambda: [0, Decimal(0), 0]))
    days: dict[MemberDay, dict[str, Decimal | int]] = field(default_factory=lambda: defaultdict(dict))
    touched: set[Member] = field(default_factory=set)
    cohort_facts: dict[tuple[str, date, date, str], int] = field(default_factory=lambda: defaultdict(int))
    new_lots: dict[int, date] = field(default_factory=dict)
    fingerprints: set[tuple[str, str, str, str]] = field(default_factory=set)
    orders: list[tuple[str, str, str, date, Decimal]] = field(default_factory=list)
    refunds: dict[tuple[str, str], Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    related: set[tuple[str, str]] = field(default_factory=set)
    baskets: dict[tuple[str, str, str], tuple[date, int]] = field(default_factory=dict)
    referees: dict[Member, date] = field(default_factory=dict)
    entries: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    exposures: dict[Exposed, Exposure] = field(default_factory=dict)

    def add(self, program_id: str, day: date, metric: str, dim: str = "", *, points: int = 0,
            money: Decimal = Decimal(0), n: int = 1) -> None:
        fact = self.facts[(program_id, day, metric, dim)]
        fact[0] += points
        fact[1] += money
        fact[2] += n

    def member_day(self, program_id: str, day: date, member_id: str, column: str, value: Decimal | int = 1) -> None:
        sums = self.days[(program_id, day, member_id)]
        sums[column] = sums.get(column, 0) + value

    def member(self, program_id: str, member_id: str) -> MemberState:
        key = (program_id, member_id)
        self.touched.add(key)
        state = self.members.get(key)
        if state is None:
            state = self.members[key] = MemberState()
        return state


@dataclass
class ProjectInsight(Handler[Changes]):
    catalogue: Catalogue[InsightProgramme]
    metrics: InsightMetrics
    rebuilding: bool = False  # `jifen insight rebuild`: it holds the projection's lock the live batches share

    async def load(self, batch: Batch) -> Changes:
        if not self.rebuilding and not await repository.share_projection(batch.uow.db, batch.uow.schema):
            raise Retryable("`jifen insight rebuild` is rebuilding the projection; the batch waits for it")
        members = {(i.data.program_id, i.data.member_id) for i in batch.items  # type: ignore[attr-defined]
                   if hasattr(i.data, "member_id")}
        entries = batch.of(PointsEntryPosted)
        spenders = {(i.data.program_id, i.data.member_id) for i in entries}
        expiring = [lot for i in entries if i.data.kind == "expire" and (lot := _expired_lot(i.data)) is not None]
        db = batch.uow.db
        referrals = {(i.data.program_id, i.data.referral_id)
                     for i in batch.of(ReferralRewarded) + batch.of(ReferralRejected) + batch.of(ReferralRevoked)}
        return Changes(batch, await repository.members(db, members), await repository.buckets(db, spenders),
                       await repository.lot_cohorts(db, expiring), await repository.referrals(db, referrals))

    def _day(self, program_id: str, at: datetime) -> date | None:
        programme = self.catalogue.at(program_id, at)
        if programme is None:
            return None  # a programme this service has no file for: counted, never guessed at
        return at.astimezone(programme.zone).date()

    def _exposed(self, changes: Changes, program_id: str, member_id: str, at: datetime) -> list[Exposure]:
        """The member's row in each experiment of the version in force at `at` that runs then: the member is seen
        in it, in the arm every service gives them."""
        programme = self.catalogue.at(program_id, at)
        rows = []
        for experiment in programme.experiments if programme is not None else ():
            if not experiment.running(at):
                continue
            key = (program_id, experiment.experiment_id, member_id)
            row = changes.exposures.get(key)
            if row is None:
                row = changes.exposures[key] = Exposure(arm_of(program_id, experiment, member_id).name, at)
            row.first_seen = min(row.first_seen, at)
            rows.append(row)
        return rows

    def _ignored(self, program_id: str) -> None:
        self.metrics.ignored.labels(program_id, "unknown_program").inc()

    # --- the ledger ------------------------------------------------------------------------------------------

    async def entry(self, item: Inbound[PointsEntryPosted], changes: Changes) -> None:
        e = item.data
        day = self._day(e.program_id, e.occurred_at)
        if day is None:
            return self._ignored(e.program_id)
        p, m = e.program_id, e.member_id
        points = abs(e.amount)
        changes.add(p, day, f"{'in' if e.amount > 0 else 'out'}:{e.kind}", points=points)
        changes.entries[p] += 1
        for row in self._exposed(changes, p, m, e.occurred_at):
            if e.kind == "earn" and e.amount > 0:
                row.earned += points
                row.referral_points += points if (e.cause.rule_id or "").startswith("referral-") else 0
        state = changes.member(p, m)
        if e.seq > state.seq:
            state.seq, state.balance = e.seq, e.balance_after
        if e.kind == "earn" and e.amount > 0:
            changes.add(p, day, "issued_rule", e.cause.rule_id or "", points=points)
            changes.member_day(p, day, m, "earned", points)
            state.last_earned_at = max(filter(None, (state.last_earned_at, e.occurred_at)))
            if e.cause.rule_id:
                basket = (p, e.cause.rule_id, e.cause.source_event_id)
                changes.baskets[basket] = (day, changes.baskets.get(basket, (day, 0))[1] + points)
            for lot in e.lots:
                if lot.lot_id is not None and lot.expires_at is not None:
                    changes.new_lots[lot.lot_id] = month_of(day)
            if any(lot.available_at > e.occurred_at for lot in e.lots):
                for lot in e.lots:
                    pending_day = self._day(p, lot.available_at)
                    if pending_day is not None and lot.amount and lot.available_at > e.occurred_at:
                        # Pending until `pending_day`: summed on the day it was issued, by the day it matures.
                        changes.add(p, day, "pending", pending_day.isoformat(), points=lot.amount)
        elif e.kind == "redeem":
            changes.member_day(p, day, m, "redeemed", points)
            if state.last_earned_at is not None and timedelta(0) <= e.occurred_at - state.last_earned_at <= SOON:
                changes.member_day(p, day, m, "redeemed_soon", 1)
        elif e.kind == "transfer_in":
            changes.member_day(p, day, m, "received", points)
        if e.kind in ("earn", "redeem"):
            state.last_active_at = max(filter(None, (state.last_active_at, e.occurred_at)))
        self._cohorts(e, day, changes)

    def _cohorts(self, e: PointsEntryPosted, day: date, changes: Changes) -> None:
        key = (e.program_id, e.member_id)
        buckets = changes.buckets.setdefault(key, Buckets())
        month = month_of(day)
        if e.amount > 0:
            outcome = "issued" if e.kind == "earn" else "credited"
            repaid = buckets.add(month, e.amount)
            # Points that pay a debt go back to the debt's cohort, as the ledger's repayment does: not issued anew.
            for debt_month, part in repaid:
                changes.cohort_facts[(e.program_id, debt_month, month, "credited")] += part
            rest = e.amount - sum(part for _, part in repaid)
            if rest:
                changes.cohort_facts[(e.program_id, month, month, outcome)] += rest
            return
        first = None
        if e.kind == "expire":
            lot = _expired_lot(e)
            first = changes.new_lots.get(lot) or changes.lot_cohorts.get(lot) if lot is not None else None
        for cohort, taken in buckets.take(-e.amount, month, first):
            changes.cohort_facts[(e.program_id, cohort, month, outcome_of(e.kind))] += taken

    # --- purchases, tasks, check-ins, members ------------------------------------------------------------------

    async def purchase(self, item: Inbound[PurchaseCompleted], changes: Changes) -> None:
        d = item.data
        day = self._day(d.program_id, item.event.time)
        if day is None:
            return self._ignored(d.program_id)
        for row in self._exposed(changes, d.program_id, d.member_id, item.event.time):
            row.spend += d.total
            row.orders += 1
        state = changes.member(d.program_id, d.member_id)
        changes.add(d.program_id, day, "purchase", d.channel, money=d.total)
        changes.add(d.program_id, day, "purchase_tier", state.tier or "", money=d.total)
        changes.member_day(d.program_id, day, d.member_id, "spend", d.total)
        changes.member_day(d.program_id, day, d.member_id, "purchases", 1)
        changes.orders.append((d.program_id, d.order_id, item.event.event_id, day, d.total))
        state.last_active_at = max(filter(None, (state.last_active_at, item.event.time)))

    async def refund(self, item: Inbound[PurchaseRefunded], changes: Changes) -> None:
        d = item.data
        day = self._day(d.program_id, item.event.time)
        if day is None:
            return self._ignored(d.program_id)
        for row in self._exposed(changes, d.program_id, d.member_id, item.event.time):
            row.spend -= d.total
        changes.add(d.program_id, day, "refund", money=d.total)
        changes.member_day(d.program_id, day, d.member_id, "spend", -d.total)
        changes.refunds[(d.program_id, d.order_id)] += d.total

    async def task(self, item: Inbound[TaskCompleted], changes: Changes) -> None:
        d = item.data
        day = self._day(d.program_id, item.event.time)
        if day is None:
            return self._ignored(d.program_id)
        self._exposed(changes, d.program_id, d.member_id, item.event.time)
        changes.add(d.program_id, day, "task", d.task_type)
        changes.member_day(d.program_id, day, d.member_id, "tasks", 1)
        state = changes.member(d.program_id, d.member_id)
        state.last_active_at = max(filter(None, (state.last_active_at, item.event.time)))

    async def checkin(self, item: Inbound[CheckinRecorded], changes: Changes) -> None:
        d = item.data
        day = self._day(d.program_id, item.event.time)
        if day is None:
            return self._ignored(d.program_id)
        self._exposed(changes, d.program_id, d.member_id, item.event.time)
        changes.add(d.program_id, day, "checkin", d.channel or "")
        changes.member_day(d.program_id, day, d.member_id, "checkins", 1)
        changes.member(d.program_id, d.member_id)

    async def enrolled(self, item: Inbound[MemberEnrolled], changes: Changes) -> None:
        d = item.data
        at = d.enrolled_at or item.event.time
        day = self._day(d.program_id, at)
        if day is None:
            return self._ignored(d.program_id)
        self._exposed(changes, d.program_id, d.member_id, at)
        state = changes.member(d.program_id, d.member_id)
        if state.enrolled_at is None:
            state.enrolled_at = at
            changes.add(d.program_id, day, "enrolled")
        if d.fingerprints is not None:
            for kind, value in d.fingerprints.model_dump(exclude_none=True).items():
                changes.fingerprints.add((d.program_id, kind, str(value), d.member_id))

    # --- what the other services announced ---------------------------------------------------------------------

    async def tier(self, item: Inbound[TierChanged], changes: Changes) -> None:
        d = item.data
        day = self._day(d.program_id, item.event.time)
        if day is None:
            return self._ignored(d.program_id)
        self._exposed(changes, d.program_id, d.member_id, item.event.time)
        changes.member(d.program_id, d.member_id).tier = d.tier
        changes.add(d.program_id, day, "tier_change", d.reason or "")

    async def redeemed(self, item: Inbound[RedemptionCompleted], changes: Changes) -> None:
        d = item.data
        day = self._day(d.program_id, item.event.time)
        if day is None:
            return self._ignored(d.program_id)
        for row in self._exposed(changes, d.program_id, d.member_id, item.event.time):
            row.redemptions += 1
            row.redeemed += d.points
        changes.add(d.program_id, day, "redeemed_reward", d.reward_id, points=d.points, n=d.quantity)

    async def cancelled(self, item: Inbound[RedemptionCancelled], changes: Changes) -> None:
        d = item.data
        day = self._day(d.program_id, item.event.time)
        if day is None:
            return self._ignored(d.program_id)
        for row in self._exposed(changes, d.program_id, d.member_id, item.event.time):
            row.redemptions -= 1
            row.redeemed -= d.points_returned
        changes.add(d.program_id, day, "cancelled_reward", d.reward_id, points=d.points_returned)

    async def refused(self, item: Inbound[RedemptionRejected], changes: Changes) -> None:
        d = item.data
        day = self._day(d.program_id, item.event.time)
        if day is None:
            return self._ignored(d.program_id)
        self._exposed(changes, d.program_id, d.member_id, item.event.time)
        changes.add(d.program_id, day, "redemption_rejected", d.reason)

    async def paid(self, item: Inbound[PaymentCaptured | CouponUsed], changes: Changes) -> None:
        d = item.data
        day = self._day(d.program_id, item.event.time)
        if day is None:
            return self._ignored(d.program_id)
        self._exposed(changes, d.program_id, d.member_id, item.event.time)
        kind = "points_payment" if isinstance(d, PaymentCaptured) else "coupon_used"
        changes.add(d.program_id, day, kind, money=d.value, points=getattr(d, "points", 0))
        changes.related.add((d.program_id, d.order_id))

    async def referral(self, item: Inbound[ReferralRewarded | ReferralRejected | ReferralRevoked],
                       changes: Changes) -> None:
        d = item.data
        day = self._day(d.program_id, item.event.time)
        if day is None:
            return self._ignored(d.program_id)
        key = (d.program_id, d.referral_id)
        before = changes.referrals.get(key)
        referrer = self._exposed(changes, d.program_id, d.referrer_member_id, item.event.time)
        if isinstance(d, ReferralRevoked):
            if before is None or not before.revoked:
                changes.add(d.program_id, day, "referral_revoked")
                changes.referrals[key] = Decision(before.outcome if before else "rewarded",
                                                  before.reason if before else "", before.decided_on if before
                                                  else day, True)
                changes.decided.add(key)
            return
        outcome, reason = ("rewarded", "") if isinstance(d, ReferralRewarded) else ("rejected", d.reason)
        if isinstance(d, ReferralRewarded):
            changes.referees.setdefault((d.program_id, d.referee_member_id), day)
        if before is not None and (before.outcome, before.reason) == (outcome, reason):
            return  # announced again (its points changed): the referral counts once
        was_rewarded = before is not None and before.outcome == "rewarded"
        for row in referrer:  # judged once; rewarded as it last became
            row.referrals_judged += int(before is None)
            row.referrals_rewarded += int(outcome == "rewarded") - int(was_rewarded)
        if before is not None:  # decided otherwise now: it counts as what it became, on the day it became it
            changes.add(d.program_id, before.decided_on, f"referral_{before.outcome}", before.reason, n=-1)
        changes.add(d.program_id, day, f"referral_{outcome}", reason)
        changes.referrals[key] = Decision(outcome, reason, day, before.revoked if before else False)
        changes.decided.add(key)

    async def store(self, changes: Changes) -> None:
        db = changes.batch.uow.db
        await repository.store(db, changes)
        for program_id, n in changes.entries.items():
            changes.batch.uow.after_commit.append(partial(self.metrics.entries.labels(program_id).inc, n))


def _expired_lot(entry: PointsEntryPosted) -> int | None:
    return keys.parse_lot_expiry(entry.idempotency_key)
