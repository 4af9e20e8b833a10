"""Earn use cases: inbound events in, ledger commands out (through the outbox)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from services.earn import repository
from services.earn.activity import Award, award_refusal, checkin_awards, period_of, streak_length, task_award
from services.earn.domain import (
    MemberTier,
    credits_from,
    expires_at,
    fired_rules,
    lines_of,
    purchase_refusal,
    tier_at,
)
from services.earn.metrics import EarnMetrics
from services.earn.programme import Programme
from services.earn.refunds import Earned, Order, RefundRefused, points_to_take_back
from services.earn.repository import BudgetKey, CapKey, NewOrder, TierHistory, Usage
from shared import keys
from shared.contracts.base import Contract
from shared.contracts.checkins import CheckinRecorded
from shared.contracts.ledger_commands import Cause, LedgerCommand, PostCredit, ReverseEntry
from shared.contracts.members import MemberEnrolled
from shared.contracts.purchases import PurchaseCompleted, PurchaseRefunded
from shared.contracts.tasks import PointsAwarded, TaskCompleted
from shared.contracts.tiers import TierChanged
from shared.programmes import Catalogue, UnknownProgram
from shared.subscription import Batch, Handler, Inbound

# What earn handles on the inbound topics: the events that earn or take back points (and, subscribed apart, the
# tiers service's announcements).
INBOUND = (PurchaseCompleted, PurchaseRefunded, CheckinRecorded, TaskCompleted, MemberEnrolled, PointsAwarded)
Earning = PurchaseCompleted | TaskCompleted | CheckinRecorded | PointsAwarded  # events that may draw on limits


class Changes:
    """A batch's state and what it changes: the orders recorded before and those it adds (written before any
    refund reads), the members' tier histories, and the caps and budgets it draws on.

    Every read and write of earn's state by the handler goes through this object (the handler's methods never
    touch the database themselves), so the what-if (cli/whatif/earn.py) runs the same methods over an in-memory
    twin of it."""

    def __init__(self, batch: Batch, recorded: dict[tuple[str, str], str], tiers: TierHistory) -> None:
        self.batch = batch
        self.uow = batch.uow
        self.recorded = recorded
        self.tiers = tiers
        self.usage = Usage(batch.uow.db)
        self.new: list[NewOrder] = []
        self.orders: dict[tuple[str, str], tuple[Order, list[PurchaseRefunded]]] = {}

    @classmethod
    async def read(cls, batch: Batch, purchases: Sequence[tuple[str, str, str]], caps: Sequence[CapKey],
                   budgets: Sequence[BudgetKey]) -> Changes:
        """What a batch needs, read at once: the orders and tiers of its purchases (program, member, order) and
        the caps and budgets its earning events may draw on."""
        db = batch.uow.db
        changes = cls(batch, await repository.order_events(db, [(p, o) for p, _, o in purchases]),
                      await repository.tier_histories(db, [(p, m) for p, m, _ in purchases]))
        await changes.usage.load(caps, budgets)
        return changes

    def reject(self, item: Inbound[Contract], reason: str, detail: str) -> None:
        self.batch.reject(item, reason, detail)

    def emit(self, cmd: LedgerCommand, at: datetime, subject: str) -> None:
        self.uow.emit(cmd, at=at, subject=subject)

    def recorded_by(self, program_id: str, order_id: str) -> str | None:
        """The purchase event that recorded the order, if one did."""
        return self.recorded.get((program_id, order_id))

    def tier_at(self, program_id: str, member_id: str, at: datetime) -> MemberTier | None:
        """The tier the member held at `at`, as announced by the tiers service (None: none yet)."""
        return tier_at(self.tiers.get((program_id, member_id), ()), at)

    async def add_tier(self, program_id: str, member_id: str, at: datetime, event_id: str, tier: MemberTier) -> None:
        await repository.add_tier(self.uow.db, program_id, member_id, at, event_id, tier)
        history = self.tiers.setdefault((program_id, member_id), [])
        history.append((at, tier))
        history.sort(key=lambda held: held[0])

    async def record_award(self, award: PointsAwarded, event_id: str, source: str, at: datetime) -> str | None:
        return await repository.record_award(self.uow.db, award, event_id, source, at)

    async def check_in(self, program_id: str, member_id: str, day: date, event_id: str,
                       lookback_days: int) -> set[date] | None:
        return await repository.check_in(self.uow.db, program_id, member_id, day, event_id, lookback_days)

    async def enrol(self, program_id: str, member_id: str, birthday: str | None, enrolled_at: datetime,
                    at: datetime) -> None:
        await repository.enrol(self.uow.db, program_id, member_id, birthday, enrolled_at, at)

    async def use_rule(self, program_id: str, member_id: str, rule_id: str, period: str, cap: int) -> bool:
        return await repository.use_rule(self.uow.db, program_id, member_id, rule_id, period, cap)

    async def record_capped(self, program_id: str, member_id: str, rule_id: str, event_id: str, period: str,
                            why: str, at: datetime) -> None:
        await repository.record_capped(self.uow.db, program_id, member_id, rule_id, event_id, period, why, at)

    async def take_cap(self, key: CapKey, wanted: int, limit: int) -> int:
        return await self.usage.take_cap(key, wanted, limit)

    async def take_budget(self, key: BudgetKey, wanted: int, limit: int) -> int:
        return await self.usage.take_budget(key, wanted, limit)

    def add_order(self, new: NewOrder) -> None:
        self.new.append(new)
        self.recorded[(new.program_id, new.order.order_id)] = new.event_id
        self.orders[(new.program_id, new.order.order_id)] = (new.order, [])

    async def order(self, program_id: str, order_id: str) -> tuple[Order, list[PurchaseRefunded]] | None:
        await self.flush()
        key = (program_id, order_id)
        if key not in self.orders:
            found = await repository.order_with_refunds(self.uow.db, program_id, order_id)
            if found is None:
                return None
            self.orders[key] = found
        return self.orders[key]

    async def add_refund(self, program_id: str, refund: PurchaseRefunded, event_id: str, taken_back: dict[str, int],
                         at: datetime) -> None:
        await repository.add_refund(self.uow.db, program_id, refund, event_id, taken_back, at)

    async def flush(self) -> None:
        await repository.add_orders(self.uow.db, self.new)
        self.new = []
        await self.usage.flush()


@dataclass
class EarnFromEvents(Handler[Changes]):
    catalogue: Catalogue[Programme]
    metrics: EarnMetrics

    async def load(self, batch: Batch) -> Changes:
        """What the batch's events need, read at once: the orders and tiers its purchases look up, and the caps
        and budgets its earning events may draw on."""
        purchases = [(i.data.program_id, i.data.member_id, i.data.order_id) for i in batch.of(PurchaseCompleted)]
        return await Changes.read(batch, purchases, *self._limits_used(batch))

    async def store(self, changes: Changes) -> None:
        await changes.flush()

    def _limits_used(self, batch: Batch) -> tuple[list[CapKey], list[BudgetKey]]:
        """The caps and budgets the batch's events may draw on, to read them all in one go (in any order: the
        limits are locked in key order)."""
        caps: list[CapKey] = []
        budgets: list[BudgetKey] = []
        earning: list[Inbound[Earning]] = [*batch.of(PurchaseCompleted), *batch.of(TaskCompleted),
                                           *batch.of(CheckinRecorded), *batch.of(PointsAwarded)]
        for item in earning:
            programme = self.catalogue.at(item.data.program_id, item.event.time)
            if programme is None:
                continue
            caps += [(programme.program_id, item.data.member_id, cap.rule_id,
                      period_of(cap.per, item.event.time, programme.zone)) for cap in programme.caps]
            if programme.budget is not None:
                budgets.append((programme.program_id, period_of(programme.budget.per, item.event.time, programme.zone)))
        return caps, budgets

    async def tier(self, item: Inbound[TierChanged], changes: Changes) -> None:
        # Kept for any programme: the tiers service may announce tiers before earn has the programme's rules.
        change = item.data
        await changes.add_tier(change.program_id, change.member_id, item.event.time, item.event.event_id,
                               MemberTier(change.tier, change.earn_multiplier))

    async def manual(self, item: Inbound[PointsAwarded], changes: Changes) -> None:
        award = item.data
        found = self._programme(item, award.program_id, award.member_id, changes)
        if found is None:
            return
        programme, arms = found
        rule = programme.activity.manual
        if rule is None:
            changes.reject(item, "no_rule", f"programme {programme.program_id!r} takes no manual awards")
            return
        refused = award_refusal(rule, item.event.source, award.points)
        if refused is not None:
            changes.reject(item, *refused)
            return
        paid_by = await changes.record_award(award, item.event.event_id, item.event.source, item.event.time)
        if paid_by == item.event.event_id:
            return  # a replay that passed the inbox (it was cleared): its credit was sent before
        if paid_by is not None:
            changes.reject(item, "duplicate_award", f"award {award.award_id!r} was paid by event {paid_by!r}")
            return
        await self._award(item, programme, award.member_id, Award(rule.rule_id, award.points, award.reason),
                          "manual", changes, {"award_id": award.award_id, "awarded_by": award.awarded_by,
                                              "source": item.event.source}, arms)

    async def checkin(self, item: Inbound[CheckinRecorded], changes: Changes) -> None:
        checkin = item.data
        found = self._programme(item, checkin.program_id, checkin.member_id, changes)
        if found is None:
            return
        programme, arms = found
        rule = programme.activity.checkin
        if rule is None:
            changes.reject(item, "no_rule", f"programme {programme.program_id!r} does not reward check-ins")
            return
        lookback = max([366 if s.repeat else s.days for s in rule.streaks], default=0)
        earlier = await changes.check_in(checkin.program_id, checkin.member_id, checkin.day, item.event.event_id,
                                         lookback)
        if earlier is None:
            self.metrics.skipped.labels(programme.program_id, "already_checked_in").inc()
            return  # once per member per day: the second check-in of a day earns nothing, and that is no error
        streak = streak_length(checkin.day, earlier)
        for award in checkin_awards(rule, streak):
            await self._award(item, programme, checkin.member_id, award, "checkin", changes,
                              {"day": checkin.day.isoformat(), "streak": streak}, arms)

    async def enrol(self, item: Inbound[MemberEnrolled], changes: Changes) -> None:
        member = item.data
        if self._programme(item, member.program_id, member.member_id, changes) is None:
            return
        await changes.enrol(member.program_id, member.member_id, member.birthday,
                            member.enrolled_at or item.event.time, item.event.time)

    async def task(self, item: Inbound[TaskCompleted], changes: Changes) -> None:
        task = item.data
        found = self._programme(item, task.program_id, task.member_id, changes)
        if found is None:
            return
        programme, arms = found
        rule = next((t for t in programme.activity.tasks if t.task_type == task.task_type), None)
        if rule is None:
            changes.reject(item, "no_rule", f"programme {programme.program_id!r} has no rule for tasks "
                                            f"of type {task.task_type!r}")
            return
        award = task_award(rule, used=0)
        if rule.cap is not None:
            period = period_of(rule.cap.per, item.event.time, programme.zone)
            if not await changes.use_rule(task.program_id, task.member_id, rule.rule_id, period, rule.cap.count):
                award = task_award(rule, used=rule.cap.count)
                await changes.record_capped(task.program_id, task.member_id, rule.rule_id, item.event.event_id,
                                            period, award.why, item.event.time)
                self.metrics.skipped.labels(programme.program_id, "capped").inc()
                return
        await self._award(item, programme, task.member_id, award, "task", changes,
                          {"task_id": task.task_id, "task_type": task.task_type}, arms)

    async def purchase(self, item: Inbound[PurchaseCompleted], changes: Changes) -> None:
        # Judged by the programme version in effect when the purchase happened, so a replay earns the same.
        purchase = item.data
        found = self._programme(item, purchase.program_id, purchase.member_id, changes)
        if found is None:
            return
        programme, arms = found
        refused = purchase_refusal(programme, purchase)
        if refused is not None:
            changes.reject(item, *refused)
            return
        recorded_by = changes.recorded_by(purchase.program_id, purchase.order_id)
        if recorded_by is not None and recorded_by != item.event.event_id:
            # Another event for an order already credited (a till resending with a new id): crediting it would
            # count the order twice.
            changes.reject(item, "duplicate_order", f"order {purchase.order_id!r} was credited by event "
                                                    f"{recorded_by!r}")
            return
        if recorded_by is not None:
            return  # a replay that passed the inbox (it was cleared): its credits were sent before
        # The tier the member held when the purchase happened, as announced by the tiers service (None: none yet).
        tier = changes.tier_at(purchase.program_id, purchase.member_id, item.event.time)
        fired = fired_rules(programme, item.event.time, purchase, tier)
        credits = credits_from(programme, item.event.event_id, item.event.time, purchase, fired, tier, arms)
        limited = [await self._limit(programme, credit, item, changes) for credit in credits]
        earned = [Earned(r.rule_id, c.idempotency_key, c.amount, r.lines)
                  for r, c in zip(fired, limited, strict=True) if c is not None]
        credits = [c for c in limited if c is not None]
        order = Order(purchase.order_id, purchase.member_id, purchase.total,
                      [(line.sku, line.total) for line in lines_of(purchase)], earned, item.event.time)
        changes.add_order(NewOrder(purchase.program_id, order, item.event.event_id, item.event.time))
        for credit in credits:
            self._send(credit, item, changes)

    async def refund(self, item: Inbound[PurchaseRefunded], changes: Changes) -> None:
        refund = item.data
        if self._programme(item, refund.program_id, refund.member_id, changes) is None:
            return
        found = await changes.order(refund.program_id, refund.order_id)
        if found is None:
            changes.reject(item, "unknown_order", f"no order {refund.order_id!r} in programme "
                                                  f"{refund.program_id!r} earned points here")
            return
        order, earlier = found
        if refund.member_id != order.member_id:
            changes.reject(item, "member_mismatch", f"order {order.order_id!r} belongs to another member")
            return
        try:
            back = points_to_take_back(order, earlier, refund)
        except RefundRefused as refused:
            changes.reject(item, refused.reason, refused.detail)
            return
        credit_keys = {e.rule_id: e.credit_key for e in order.earned}
        arms = self._arms_at_purchase(refund.program_id, order)
        for rule_id, points in back.items():
            cmd = ReverseEntry(
                idempotency_key=keys.refund_reversal(item.event.event_id, rule_id), program_id=refund.program_id,
                member_id=order.member_id, entry_key=credit_keys[rule_id], amount=points, occurred_at=item.event.time,
                cause=Cause(source_event_id=item.event.event_id, rule_id=rule_id, reason="refund", arms=arms or None),
                details={"order_id": order.order_id, "refund_id": refund.refund_id, "total": str(refund.total)})
            self._emit(cmd, item, changes)
        earlier.append(refund)
        await changes.add_refund(refund.program_id, refund, item.event.event_id, back, item.event.time)

    async def _limit(self, programme: Programme, credit: PostCredit, item: Inbound[Contract],
                     changes: Changes) -> PostCredit | None:
        """The credit as the programme's caps and budget let it through: cut (saying what and why), or None."""
        wanted, amount, cuts = credit.amount, credit.amount, []
        for cap in (c for c in programme.caps if c.rule_id == credit.cause.rule_id):
            period = period_of(cap.per, item.event.time, programme.zone)
            amount = await changes.take_cap((programme.program_id, credit.member_id, cap.rule_id, period), amount,
                                            cap.points)
            if amount < wanted:
                cuts.append(f"{cap.points} points per member per {cap.per} from {cap.rule_id}")
        if programme.budget is not None and amount > 0:
            period = period_of(programme.budget.per, item.event.time, programme.zone)
            before = amount
            amount = await changes.take_budget((programme.program_id, period), amount, programme.budget.points)
            if amount < before:
                cuts.append(f"the programme's budget of {programme.budget.points} points per {programme.budget.per}")
        if amount == wanted:
            return credit
        self.metrics.skipped.labels(programme.program_id, "capped").inc()
        if amount == 0:
            return None
        details = {**(credit.details or {}), "capped": {"wanted": wanted, "granted": amount, "why": cuts}}
        return credit.model_copy(update={"amount": amount, "details": details})

    async def _award(self, item: Inbound[Contract], programme: Programme, member_id: str, award: Award, reason: str,
                     changes: Changes, details: dict[str, object], arms: dict[str, str] | None = None) -> None:
        credit = PostCredit(
            idempotency_key=keys.earn_credit(item.event.event_id, award.rule_id), program_id=programme.program_id,
            member_id=member_id, amount=award.points, occurred_at=item.event.time, available_at=item.event.time,
            expires_at=expires_at(programme, item.event.time),
            cause=Cause(source_event_id=item.event.event_id, rule_id=award.rule_id, rule_version=programme.version,
                        reason=reason, arms=arms or None),
            details={**details, "rule": {"rule_id": award.rule_id, "points": award.points, "why": award.why}})
        limited = await self._limit(programme, credit, item, changes)
        if limited is not None:
            self._send(limited, item, changes)

    def _programme(self, item: Inbound[Contract], program_id: str, member_id: str,
                   changes: Changes) -> tuple[Programme, dict[str, str]] | None:
        """The version in force when the event happened as the member sees it (their arm's overrides of every
        experiment running then applied), with those arms; an unknown programme goes to the DLQ (None)."""
        try:
            return self.catalogue.for_member(program_id, member_id, item.event.time)
        except UnknownProgram as unknown:
            changes.reject(item, unknown.reason, unknown.detail)
            return None

    def _arms_at_purchase(self, program_id: str, order: Order) -> dict[str, str]:
        """The arms the refunded purchase's member was in when they bought (none known: an order recorded before
        orders kept their time, or no version in force then)."""
        if order.occurred_at is None:
            return {}
        try:
            return self.catalogue.for_member(program_id, order.member_id, order.occurred_at)[1]
        except UnknownProgram:
            return {}

    def _send(self, credit: PostCredit, item: Inbound[Contract], changes: Changes) -> None:
        self._emit(credit, item, changes)
        self.metrics.points.labels(credit.program_id, credit.cause.rule_id or "").inc(credit.amount)

    @staticmethod
    def _emit(cmd: LedgerCommand, item: Inbound[Contract], changes: Changes) -> None:
        changes.emit(cmd, at=item.event.time, subject=cmd.member_id)
