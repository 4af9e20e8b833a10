"""Tiers use cases: ledger entries, purchases and member events in, tier changes out (announced on jifen.tiers);
and the daily review that applies what is due and warns before a drop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import cast

from prometheus_client import CollectorRegistry

from services.tiers import domain, repository
from services.tiers.domain import Change, Contribution, Expiring, Member
from services.tiers.programme import TierRules, TiersProgramme
from services.tiers.repository import MemberKey, NewContribution, Stored
from shared.consumer import Retryable
from shared.contracts.base import Contract
from shared.contracts.ledger_entries import PointsEntryPosted
from shared.contracts.members import MemberEnrolled, TierAssigned
from shared.contracts.purchases import PurchaseCompleted, PurchaseRefunded
from shared.contracts.tiers import TierChanged, TierExpiring
from shared.db import advisory_key
from shared.jobs import Job, Page
from shared.metrics import counter, gauge
from shared.programmes import Catalogue
from shared.subscription import Inbound, Rejections
from shared.uow import UnitOfWork

REVERSALS = frozenset({"reversal", "cancel"})  # the ledger's kinds for taking back an earn credit
RECHECK = timedelta(days=1)  # a member inside the warning window is looked at again daily


class TiersMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.members = gauge(registry, "tiers", "jifen_tiers_members", "Members known to the tiers service, by tier "
                             "(counted by each review round, moved by every change)", ["program_id", "tier"])
        self.changes = counter(registry, "tiers", "jifen_tier_changes", "Tier changes announced, by reason",
                               ["program_id", "reason"])
        self.warnings = counter(registry, "tiers", "jifen_tier_warnings", "Warnings sent before a review lowers a "
                                "tier", ["program_id"])
        self.ignored = counter(registry, "tiers", "jifen_tiers_events_ignored", "Events that move no tier metric (a "
                               "programme without tiers or with another metric, a correction of something not "
                               "counted)", ["program_id", "reason"])


def lock_key(schema: str) -> int:
    """Held exclusively by `jifen tiers rebuild`, shared by every batch and review page of the live service."""
    return advisory_key(f"tiers-projection:{schema}")


def reach(rules: TierRules) -> timedelta:
    """How far back from a moment a change can look: a window, and a month to spare."""
    months = rules.window.months if rules.window.kind == "rolling" else 12
    return timedelta(days=31 * (months + 1))


def wake_at(member: Member, rules: TierRules, now: datetime | None = None) -> datetime | None:
    """When the review job must look at a member next: the start of the warning window while a warning may still
    be due (then daily, from `now`, until the review), else the scheduled transition itself."""
    due = member.due(rules)
    if due is None:
        return None
    if member.manual or not rules.warn_days or member.warned_for == member.valid_until:
        return due
    warn = due - timedelta(days=rules.warn_days)
    return warn if now is None or warn > now else min(due, now + RECHECK)


@dataclass
class Step:
    """One event's part in a batch, in order."""

    item: Inbound[Contract]
    key: MemberKey
    at: datetime  # when it happened: what judges it
    programme: TiersProgramme
    rules: TierRules
    added: NewContribution | None = None
    corrects: str | None = None  # the key a reversal or refund corrects, to be found
    assignment: TierAssigned | None = None
    enrolled_at: datetime | None = None


@dataclass
class Outcome:
    """What a batch or a review page changed: members' states, the changes to announce, the warnings."""

    states: dict[MemberKey, Member] = field(default_factory=dict)
    touched: dict[MemberKey, tuple[TierRules, datetime | None]] = field(default_factory=dict)
    created: set[MemberKey] = field(default_factory=set)  # members seen for the first time
    changes: list[tuple[MemberKey, Change, TierRules]] = field(default_factory=list)
    warnings: list[tuple[MemberKey, Expiring, datetime]] = field(default_factory=list)  # and when it was sent


@dataclass
class ProjectTiers:
    """Project members' tiers from the events that move their metrics. Idempotent by itself: contributions and
    manual assignments are stored by key and only new ones change anything, so a replay without the inbox (a
    rebuild) changes nothing twice."""

    catalogue: Catalogue[TiersProgramme]
    metrics: TiersMetrics
    schema: str
    program: str | None = None  # a rebuild: only this programme
    rebuilding: bool = False  # a rebuild holds the projection's lock and announces nothing again

    async def __call__(self, items: list[Inbound[Contract]], uow: UnitOfWork, rejections: Rejections) -> None:
        if not self.rebuilding and not await uow.db.fetchval("SELECT pg_try_advisory_xact_lock_shared($1)",
                                                             lock_key(self.schema)):
            raise Retryable("`jifen tiers rebuild` is rebuilding the projection; the batch waits for it")
        steps = [step for item in items if (step := self._read(item, rejections)) is not None]
        if not steps:
            return
        out = Outcome(states=await self._load(uow, steps))
        fresh = await repository.add_contributions(uow.db, [s.added for s in steps if s.added is not None])
        for step in steps:
            await self._apply(uow, step, fresh, out)
        await record(uow, out, self.metrics, announce=not self.rebuilding)

    def _read(self, item: Inbound[Contract], rejections: Rejections) -> Step | None:
        data, kind = item.data, type(item.data)  # exact types: a pydantic class's isinstance is slow per event
        program_id: str = getattr(data, "program_id", "default")
        if self.program is not None and program_id != self.program:
            return None
        at = cast(PointsEntryPosted, data).occurred_at if kind is PointsEntryPosted else item.event.time
        programme = self.catalogue.at(program_id, at)
        rules = programme.tiers if programme is not None else None
        if programme is None or rules is None:
            if kind is TierAssigned:
                rejections.reject(item, "no_rule", f"programme {program_id!r} has no tiers at {at.isoformat()}")
            else:
                self.metrics.ignored.labels(program_id, "no_tiers").inc()
            return None
        step = Step(item, (program_id, getattr(data, "member_id")), at, programme, rules)  # noqa: B009
        if kind is PointsEntryPosted and rules.metric == "points_earned":
            entry = cast(PointsEntryPosted, data)
            key = f"entry:{entry.entry_id}"
            if entry.kind == "earn" and entry.amount > 0:
                step.added = NewContribution(program_id, entry.member_id, key, None, Contribution(at, entry.amount))
            elif entry.kind in REVERSALS and entry.amount < 0 and entry.corrects_entry_id is not None:
                step.corrects = f"entry:{entry.corrects_entry_id}"
                step.added = NewContribution(program_id, entry.member_id, key, step.corrects,
                                             Contribution(at, entry.amount))
            else:
                return None  # spending, expiry, transfers, adjustments: not earning (docs/tiers.md says why)
        elif kind is PurchaseCompleted and rules.metric in ("spend", "purchases"):
            purchase = cast(PurchaseCompleted, data)
            if programme.currency is not None and purchase.currency != programme.currency:
                self.metrics.ignored.labels(program_id, "currency").inc()
                return None
            step.added = NewContribution(program_id, purchase.member_id, f"order:{purchase.order_id}", None,
                                         Contribution(at, spend=purchase.total, purchases=1))
        elif kind is PurchaseRefunded and rules.metric in ("spend", "purchases"):
            refund = cast(PurchaseRefunded, data)
            step.corrects = f"order:{refund.order_id}"
            step.added = NewContribution(program_id, refund.member_id, f"refund:{refund.refund_id}", step.corrects,
                                         Contribution(at, spend=-refund.total))
        elif kind is TierAssigned:
            assigned = cast(TierAssigned, data)
            refused = _assignment_refusal(rules, item.event.source, assigned)
            if refused is not None:
                rejections.reject(item, *refused)
                return None
            step.assignment = assigned
        elif kind is MemberEnrolled:
            step.enrolled_at = cast(MemberEnrolled, data).enrolled_at or item.event.time
        else:
            self.metrics.ignored.labels(program_id, "other_metric").inc()
            return None
        return step

    async def _load(self, uow: UnitOfWork, steps: list[Step]) -> dict[MemberKey, Member]:
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
        refunded: dict[tuple[str, str], Decimal] = {}
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
            taken = step.added.contribution
            purchases = 0
            if step.corrects.startswith("order:"):
                before = refunded.get(ref, Decimal(row["refunded"]) if row is not None else Decimal(0))
                refunded[ref] = before - taken.spend
                purchases = -1 if before < original.spend <= refunded[ref] else 0
            step.added = NewContribution(step.added.program_id, step.added.member_id, step.added.key,
                                         step.corrects, Contribution(original.occurred_at, taken.points, taken.spend,
                                                                     purchases))
        return states

    async def _apply(self, uow: UnitOfWork, step: Step, fresh: set[tuple[str, str]], out: Outcome) -> None:
        key, rules, zone = step.key, step.rules, step.programme.zone
        member = out.states.get(key)
        if member is None:
            member = out.states[key] = Member.new(rules)
            out.created.add(key)
        changes: list[Change] = []
        if step.added is not None:
            if (key[0], step.added.key) not in fresh:
                return  # stored before: a replay
            changes = domain.contribute(member, rules, zone, step.added.contribution, step.at)
        elif step.assignment is not None:
            assigned = step.assignment
            if not await repository.add_assignment(uow.db, step.item.event.event_id, key[0], key[1], assigned.tier,
                                                   assigned.until, step.at, assigned.assigned_by, assigned.reason):
                return  # recorded before: a replay
            changes = domain.assign(member, rules, assigned.tier, assigned.until, step.at, zone)
        elif step.enrolled_at is not None:
            domain.enrol(member, step.enrolled_at)
        elif step.corrects is not None:
            return  # a correction of nothing counted here
        out.touched[key] = (rules, None)
        out.changes += [(key, change, rules) for change in changes]


def _assignment_refusal(rules: TierRules, source: str, assigned: TierAssigned) -> tuple[str, str] | None:
    if rules.manual is None or source not in rules.manual.sources:
        return "untrusted_source", f"source {source!r} may not set tiers (the programme's tiers.manual.sources)"
    if assigned.tier not in {level.tier for level in rules.levels}:
        return "unknown_tier", f"{assigned.tier!r} is not a tier of this programme"
    return None


async def record(uow: UnitOfWork, out: Outcome, metrics: TiersMetrics, announce: bool = True) -> None:
    """Number each member's changes, store states and changes, and announce them and the warnings."""
    numbered: list[tuple[MemberKey, int, Change, TierRules]] = []
    for key, change, rules in out.changes:
        member = out.states[key]
        member.announced += 1
        numbered.append((key, member.announced, change, rules))
    states = [Stored(key, out.states[key], wake_at(out.states[key], rules, now))
              for key, (rules, now) in out.touched.items()]
    await repository.store(uow.db, states, [(k, n, c) for k, n, c, _ in numbered])
    for key in out.created & out.touched.keys():
        uow.after_commit.append(metrics.members.labels(key[0], out.touched[key][0].base.tier).inc)
    if not announce:
        return
    for (program_id, member_id), n, change, rules in numbered:
        uow.emit(TierChanged(
            program_id=program_id, member_id=member_id, tier=change.tier, previous_tier=change.previous,
            earn_multiplier=rules.level(change.tier).earn_multiplier, reason=change.reason, detail=change.detail,
            valid_until=change.valid_until, qualifying_value=change.qualifying_value),
            at=change.at, event_id=f"tier:{program_id}:{member_id}:{n}")
        uow.after_commit.append(_counted(metrics, program_id, change))
    for (program_id, member_id), warning, at in out.warnings:
        uow.emit(TierExpiring(program_id=program_id, member_id=member_id, tier=warning.tier,
                              drops_to=warning.drops_to, on=warning.on, needed=warning.needed),
                 at=at, event_id=f"tier-expiring:{program_id}:{member_id}:{warning.period_end.isoformat()}")
        uow.after_commit.append(metrics.warnings.labels(program_id).inc)


def _counted(metrics: TiersMetrics, program_id: str, change: Change) -> Callable[[], None]:
    def count() -> None:
        metrics.changes.labels(program_id, change.reason).inc()
        metrics.members.labels(program_id, change.previous).dec()
        metrics.members.labels(program_id, change.tier).inc()

    return count


def review(catalogue: Catalogue[TiersProgramme], metrics: TiersMetrics, schema: str, interval_s: float,
           page_size: int = 500, rebuilding: bool = False) -> Job:
    """The daily review: members whose tier period ended (plus grace) are reviewed, at that time; members within
    `warn_days` of a review that, as things stand, lowers their tier are warned once per period. The first page of
    a round also counts the members per tier. `rebuilding`: the rebuild's own review, under the lock it holds,
    announcing nothing again."""

    async def page(uow: UnitOfWork, now: datetime, cursor: object) -> Page:
        if not rebuilding and not await uow.db.fetchval("SELECT pg_try_advisory_xact_lock_shared($1)",
                                                        lock_key(schema)):
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
        out = Outcome(states=await repository.members(uow.db, {
            k: (now, reach(p.tiers)) for k, p in rules.items() if p.tiers is not None}))
        for key, programme in rules.items():
            member, tiers = out.states.get(key), programme.tiers
            if member is None or tiers is None:
                continue
            out.touched[key] = (tiers, now)
            out.changes += [(key, change, tiers) for change in domain.advance(member, tiers, programme.zone, now)]
            warning = domain.expiring(member, tiers, programme.zone, now)
            if warning is not None:
                member.warned_for = member.valid_until
                out.warnings.append((key, warning, now))
        await repository.forget_due(uow.db, [k for k in keys if k not in rules])
        await record(uow, out, metrics, announce=not rebuilding)
        return Page(len(keys), True if len(keys) == page_size else None)

    return Job("tier-review", page, interval_s)
