"""Tiers use cases: ledger entries, purchases and member events in, tier changes out (announced on jifen.tiers).

`load` turns the batch's events into steps, reads their members' states and what their corrections correct, and
stores the new contributions (by key: only new ones move a tier); the methods then apply each event in order;
`store` writes the members and announces their changes (`record`, which the review job shares)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from services.tiers import domain, repository
from services.tiers.domain import Change, Contribution, Expiring, Member, reach, wake_at
from services.tiers.metrics import TiersMetrics
from services.tiers.programme import Metric, TierRules, TiersProgramme
from services.tiers.repository import MemberKey, NewContribution, Stored
from shared import keys
from shared.consumer import Retryable
from shared.contracts.ledger_entries import PointsEntryPosted
from shared.contracts.members import MemberEnrolled, TierAssigned
from shared.contracts.purchases import PurchaseCompleted, PurchaseRefunded
from shared.contracts.tiers import TierChanged, TierExpiring
from shared.programmes import Catalogue
from shared.refusal import Refusal
from shared.subscription import Batch, Handler, Inbound
from shared.uow import UnitOfWork

REVERSALS = frozenset({"reversal", "cancel"})  # the ledger's kinds for taking back an earn credit


@dataclass
class Step:
    """One event's part in a batch, in order."""

    item: Inbound[PointsEntryPosted | PurchaseCompleted | PurchaseRefunded | TierAssigned | MemberEnrolled]
    key: MemberKey
    at: datetime  # when it happened: what judges it
    programme: TiersProgramme
    rules: TierRules
    added: NewContribution | None = None
    corrects: str | None = None  # the key a reversal or refund corrects, to be found
    assignment: TierAssigned | None = None
    enrolled_at: datetime | None = None


@dataclass
class Changes:
    """What a batch or a review page changed: members' states, the changes to announce, the warnings."""

    uow: UnitOfWork
    states: dict[MemberKey, Member] = field(default_factory=dict)
    touched: dict[MemberKey, tuple[TierRules, datetime | None]] = field(default_factory=dict)
    created: set[MemberKey] = field(default_factory=set)  # members seen for the first time
    changed: list[tuple[MemberKey, Change, TierRules]] = field(default_factory=list)
    warnings: list[tuple[MemberKey, Expiring, datetime]] = field(default_factory=list)  # and when it was sent
    steps: dict[int, Step] = field(default_factory=dict)  # a batch's steps, by id() of their event
    fresh: set[tuple[str, str]] = field(default_factory=set)  # (program, key) of contributions not stored before


@dataclass
class ProjectTiers(Handler[Changes]):
    """Project members' tiers from the events that move their metrics. Idempotent by itself: contributions and
    manual assignments are stored by key and only new ones change anything, so a replay without the inbox (a
    rebuild) changes nothing twice."""

    catalogue: Catalogue[TiersProgramme]
    metrics: TiersMetrics
    schema: str
    program: str | None = None  # a rebuild: only this programme
    rebuilding: bool = False  # a rebuild holds the projection's lock and announces nothing again

    async def load(self, batch: Batch) -> Changes:
        uow = batch.uow
        if not self.rebuilding and not await repository.share_projection(uow.db, self.schema):
            raise Retryable("`jifen tiers rebuild` is rebuilding the projection; the batch waits for it")
        read: dict[int, Step | None] = {}
        for entry in batch.of(PointsEntryPosted):
            read[id(entry)] = self._entry(entry)
        for purchase in batch.of(PurchaseCompleted):
            read[id(purchase)] = self._purchase(purchase)
        for refund in batch.of(PurchaseRefunded):
            read[id(refund)] = self._refund(refund)
        for assigned in batch.of(TierAssigned):
            read[id(assigned)] = self._assigned(assigned, batch)
        for enrolled in batch.of(MemberEnrolled):
            read[id(enrolled)] = self._enrolled(enrolled)
        steps = [step for item in batch.items if (step := read.get(id(item))) is not None]
        changes = Changes(uow, steps={id(step.item): step for step in steps})
        if steps:
            changes.states = await self._states(uow, steps)
            changes.fresh = await repository.add_contributions(uow.db, [s.added for s in steps if s.added])
        return changes

    async def contribution(self, item: Inbound[PointsEntryPosted | PurchaseCompleted | PurchaseRefunded],
                           changes: Changes) -> None:
        step = changes.steps.get(id(item))
        if step is None:
            return
        member = self._member(step, changes)
        if step.added is None:
            return  # a correction of nothing counted here
        stored = (step.key[0], step.added.key)
        if stored not in changes.fresh:
            return  # stored before: a replay
        changes.fresh.discard(stored)  # a second copy in this batch (a producer's retry) is a replay too
        self._changed(step, changes, domain.contribute(member, step.rules, step.programme.zone,
                                                       step.added.contribution, step.at))

    async def assignment(self, item: Inbound[TierAssigned], changes: Changes) -> None:
        step = changes.steps.get(id(item))
        if step is None or step.assignment is None:
            return
        member, assigned, key = self._member(step, changes), step.assignment, step.key
        if not await repository.add_assignment(changes.uow.db, item.event.event_id, key[0], key[1], assigned.tier,
                                               assigned.until, step.at, assigned.assigned_by, assigned.reason):
            return  # recorded before: a replay
        self._changed(step, changes, domain.assign(member, step.rules, assigned.tier, assigned.until, step.at,
                                                   step.programme.zone))

    async def enrolment(self, item: Inbound[MemberEnrolled], changes: Changes) -> None:
        step = changes.steps.get(id(item))
        if step is None or step.enrolled_at is None:
            return
        domain.enrol(self._member(step, changes), step.enrolled_at)
        self._changed(step, changes, [])

    async def store(self, changes: Changes) -> None:
        if changes.steps:
            await record(changes, self.metrics, announce=not self.rebuilding)

    # --- reading the batch -------------------------------------------------------------------------------------

    def _step(self, item: Inbound[PointsEntryPosted | PurchaseCompleted | PurchaseRefunded | MemberEnrolled],
              at: datetime, moves: tuple[Metric, ...] | None = None) -> Step | None:
        """The event's programme and tier rules at its time; None for an event no tier rule reads (none of the
        metrics it `moves` is the programme's)."""
        program_id = item.data.program_id
        if self.program is not None and program_id != self.program:
            return None
        found = terms(self.catalogue, program_id, at, moves)
        if isinstance(found, str):
            self.metrics.ignored.labels(program_id, found).inc()
            return None
        programme, rules = found
        return Step(item, (program_id, item.data.member_id), at, programme, rules)

    def _entry(self, item: Inbound[PointsEntryPosted]) -> Step | None:
        entry = item.data
        step = self._step(item, entry.occurred_at, ("points_earned",))
        if step is None:
            return None
        step.added = earned(step.key[0], entry.member_id, entry.kind, entry.amount, entry.entry_id,
                            entry.corrects_entry_id, step.at)
        if step.added is None:
            return None
        step.corrects = step.added.ref
        return step

    def _purchase(self, item: Inbound[PurchaseCompleted]) -> Step | None:
        purchase = item.data
        step = self._step(item, item.event.time, ("spend", "purchases"))
        if step is None:
            return None
        step.added = bought(step.programme, purchase.member_id, purchase.order_id, purchase.currency, purchase.total,
                            step.at)
        if step.added is None:
            self.metrics.ignored.labels(step.key[0], "currency").inc()
            return None
        return step

    def _refund(self, item: Inbound[PurchaseRefunded]) -> Step | None:
        refund = item.data
        step = self._step(item, item.event.time, ("spend", "purchases"))
        if step is None:
            return None
        step.added = refunded(step.key[0], refund.member_id, refund.order_id, refund.refund_id, refund.total,
                              step.at)
        step.corrects = step.added.ref
        return step

    def _assigned(self, item: Inbound[TierAssigned], batch: Batch) -> Step | None:
        assigned, at = item.data, item.event.time
        if self.program is not None and assigned.program_id != self.program:
            return None
        found = assignable(self.catalogue, item.event.source, assigned, at)
        if not isinstance(found, tuple):
            batch.reject(item, found.reason, found.detail)
            return None
        programme, rules = found
        step = Step(item, (assigned.program_id, assigned.member_id), at, programme, rules)
        step.assignment = assigned
        return step

    def _enrolled(self, item: Inbound[MemberEnrolled]) -> Step | None:
        step = self._step(item, item.event.time)
        if step is not None:
            step.enrolled_at = item.data.enrolled_at or item.event.time
        return step

    async def _states(self, uow: UnitOfWork, steps: list[Step]) -> dict[MemberKey, Member]:
        """The batch's members with the contributions their windows can reach; corrections resolved to the time
        of what they correct (a refund that takes back all of an order also takes back its purchase count)."""
        first: dict[MemberKey, tuple[datetime, timedelta]] = {}
        for step in steps:
            if step.key not in first or step.at < first[step.key][0]:
                first[step.key] = (step.at, reach(step.rules))
        states = await repository.members(uow.db, first)
        in_batch = {(s.key[0], s.added.key): s.added.contribution for s in steps if s.added is not None}
        stored = await repository.referenced(uow.db, list({(s.key[0], s.corrects) for s in steps
                                                           if s.corrects and (s.key[0], s.corrects) not in in_batch}))
        refunds: dict[tuple[str, str], Decimal] = {}  # what each order has had refunded so far
        for step in steps:
            if step.corrects is None or step.added is None:
                continue
            ref = (step.key[0], step.corrects)
            row = stored.get(ref)
            original = in_batch.get(ref) or (Contribution(row["occurred_at"], row["points"], row["spend"],
                                                          row["purchases"]) if row is not None else None)
            if original is None:
                self.metrics.ignored.labels(step.key[0], "correction_of_uncounted").inc()
                step.added = None  # it corrects something that never counted here: nothing to take back
                continue
            before = refunds.get(ref, Decimal(row["refunded"]) if row is not None else Decimal(0))
            step.added, refunds[ref] = corrected(step.added, original, before)
        return states

    # --- applying it -------------------------------------------------------------------------------------------

    @staticmethod
    def _member(step: Step, changes: Changes) -> Member:
        member = changes.states.get(step.key)
        if member is None:
            member = changes.states[step.key] = Member.new(step.rules)
            changes.created.add(step.key)
        return member

    @staticmethod
    def _changed(step: Step, changes: Changes, made: list[Change]) -> None:
        changes.touched[step.key] = (step.rules, None)
        changes.changed += [(step.key, change, step.rules) for change in made]


# --- what an event is to the tiers, pure (the what-if's simulation, cli/whatif/tiers.py, shares these) ---------

def terms(catalogue: Catalogue[TiersProgramme], program_id: str, at: datetime,
          moves: tuple[Metric, ...] | None = None) -> tuple[TiersProgramme, TierRules] | str:
    """The version in effect at `at` and its tier rules, or why the event moves no tier: `no_tiers`, or
    `other_metric` (none of the metrics it `moves` is the programme's)."""
    programme = catalogue.at(program_id, at)
    rules = programme.tiers if programme is not None else None
    if programme is None or rules is None:
        return "no_tiers"
    if moves is not None and rules.metric not in moves:
        return "other_metric"
    return programme, rules


def earned(program_id: str, member_id: str, kind: str, amount: int, entry: str | int, corrects: str | int | None,
           at: datetime) -> NewContribution | None:
    """A ledger entry's part in `points_earned`: an earn credit, or a reversal of one (to be resolved to the time of
    what it corrects, `corrected`); None for spending, expiry, transfers, adjustments: not earning (docs/tiers.md
    says why)."""
    key = keys.contribution("entry", entry)
    if kind == "earn" and amount > 0:
        return NewContribution(program_id, member_id, key, None, Contribution(at, amount))
    if kind in REVERSALS and amount < 0 and corrects is not None:
        return NewContribution(program_id, member_id, key, keys.contribution("entry", corrects),
                               Contribution(at, amount))
    return None


def bought(programme: TiersProgramme, member_id: str, order_id: str, currency: str, total: Decimal,
           at: datetime) -> NewContribution | None:
    """A purchase's spend and count; None in a currency other than the programme's."""
    if programme.currency is not None and currency != programme.currency:
        return None
    return NewContribution(programme.program_id, member_id, keys.contribution("order", order_id), None,
                           Contribution(at, spend=total, purchases=1))


def refunded(program_id: str, member_id: str, order_id: str, refund_id: str, total: Decimal,
             at: datetime) -> NewContribution:
    """A refund: spend taken back from its order (resolved to the order's time by `corrected`)."""
    return NewContribution(program_id, member_id, keys.contribution("refund", refund_id),
                           keys.contribution("order", order_id), Contribution(at, spend=-total))


def corrected(added: NewContribution, original: Contribution, refunded_before: Decimal
              ) -> tuple[NewContribution, Decimal]:
    """A reversal or refund as it counts: at the time of what it corrects (so it leaves the window that counted
    it); a refund that takes back all of an order also takes back its purchase count. Returns it and what the order
    has had refunded with it."""
    taken, purchases, refunded_after = added.contribution, 0, refunded_before
    if added.ref is not None and keys.contribution_kind(added.ref) == "order":
        refunded_after = refunded_before - taken.spend
        purchases = -1 if refunded_before < original.spend <= refunded_after else 0
    return NewContribution(added.program_id, added.member_id, added.key, added.ref,
                           Contribution(original.occurred_at, taken.points, taken.spend, purchases)), refunded_after


def assignable(catalogue: Catalogue[TiersProgramme], source: str, assigned: TierAssigned,
               at: datetime) -> tuple[TiersProgramme, TierRules] | Refusal:
    """The version in effect at `at` and its tier rules for a tier set by hand, or why it is refused: `no_rule`,
    `untrusted_source` (not one of the programme's `tiers.manual.sources`), `unknown_tier`."""
    programme = catalogue.at(assigned.program_id, at)
    if programme is None or programme.tiers is None:
        return Refusal("no_rule", f"programme {assigned.program_id!r} has no tiers at {at.isoformat()}")
    rules = programme.tiers
    if rules.manual is None or source not in rules.manual.sources:
        return Refusal("untrusted_source", f"source {source!r} may not set tiers (the programme's "
                       "tiers.manual.sources)")
    if assigned.tier not in {level.tier for level in rules.levels}:
        return Refusal("unknown_tier", f"{assigned.tier!r} is not a tier of this programme")
    return programme, rules


async def record(changes: Changes, metrics: TiersMetrics, announce: bool = True) -> None:
    """Number each member's changes, store states and changes, and announce them and the warnings."""
    uow = changes.uow
    numbered: list[tuple[MemberKey, int, Change, TierRules]] = []
    for key, change, rules in changes.changed:
        member = changes.states[key]
        member.announced += 1
        numbered.append((key, member.announced, change, rules))
    states = [Stored(key, changes.states[key], wake_at(changes.states[key], rules, now))
              for key, (rules, now) in changes.touched.items()]
    await repository.store(uow.db, states, [(k, n, c) for k, n, c, _ in numbered])
    for key in changes.created & changes.touched.keys():
        uow.after_commit.append(metrics.members.labels(key[0], changes.touched[key][0].base.tier).inc)
    if not announce:
        return
    for (program_id, member_id), n, change, rules in numbered:
        uow.emit(TierChanged(
            program_id=program_id, member_id=member_id, tier=change.tier, previous_tier=change.previous,
            earn_multiplier=rules.level(change.tier).earn_multiplier, reason=change.reason, detail=change.detail,
            valid_until=change.valid_until, qualifying_value=change.qualifying_value),
            at=change.at, event_id=keys.tier_event(program_id, member_id, n))
        uow.after_commit.append(_counted(metrics, program_id, change))
    for (program_id, member_id), warning, at in changes.warnings:
        uow.emit(TierExpiring(program_id=program_id, member_id=member_id, tier=warning.tier,
                              drops_to=warning.drops_to, on=warning.on, needed=warning.needed),
                 at=at, event_id=keys.tier_warning(program_id, member_id, warning.period_end))
        uow.after_commit.append(metrics.warnings.labels(program_id).inc)


def _counted(metrics: TiersMetrics, program_id: str, change: Change) -> Callable[[], None]:
    def count() -> None:
        metrics.changes.labels(program_id, change.reason).inc()
        metrics.members.labels(program_id, change.previous).dec()
        metrics.members.labels(program_id, change.tier).inc()

    return count
