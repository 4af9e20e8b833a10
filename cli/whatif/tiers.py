"""The tiers service replayed in memory for the what-if: members' tiers evolved event by event with the service's
own decisions (services/tiers/handlers.py: `terms`, `earned`, `bought`, `refunded`, `corrected`, `assignable`) and
its pure domain (services/tiers/domain.py: `contribute`, `advance`, `assign`, `enrol`), writing nothing.

What the service does across processes, this does in one object: the handler's idempotency (a contribution counted
once by its key, a manual assignment once by its event), a correction resolved to the time of what it corrects (a
correction of nothing counted here is ignored, as the service ignores it), and the review job (services/tiers/
jobs.py) as `advance(until)`: each member's scheduled transition (a review, a downgrade after grace, a manual
tier's end) applied at its own time under the version in force then. The service's job applies it at its next round
(daily by default) under the version in force at that round: the two differ only for a version that takes effect
between a transition's time and that round.

The caller feeds events oldest first and calls `advance(t)` before an event at `t` (or before reading `tiers_at(t)`),
as the service's job would have run by then.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from services.tiers import domain
from services.tiers.domain import Change, Member, reach
from services.tiers.handlers import assignable, bought, corrected, earned, refunded, terms
from services.tiers.programme import Metric, TierRules, TiersProgramme
from services.tiers.repository import MemberKey, NewContribution
from shared.contracts.base import Contract
from shared.contracts.ledger_entries import PointsEntryPosted
from shared.contracts.members import MemberEnrolled, TierAssigned
from shared.contracts.purchases import PurchaseCompleted, PurchaseRefunded
from shared.envelope import CloudEvent
from shared.programmes import Catalogue

PRUNE_AT = 256  # contributions a member holds before those no window can reach any more are dropped


@dataclass(frozen=True, slots=True)
class TierMove:
    """A tier change, as the service announces it (jifen.tier.changed.v1): from `at`, the member holds `tier` and
    earns `multiplier` on purchases."""

    program_id: str
    member_id: str
    at: datetime
    tier: str
    multiplier: Decimal
    reason: str  # upgrade, downgrade, manual, expired_manual
    previous: str = ""
    detail: str | None = None  # `review` or `reversed` for a downgrade


@dataclass
class _Known:
    """A member as the service keeps them, with the rules of their last change (the schedule's) and their changes
    (for `tiers_at` and `announced_at`)."""

    member: Member
    rules: TierRules
    first_seen: datetime
    base: str  # the tier they started at
    moves: list[TierMove] = field(default_factory=list)


class TierSim:
    """Members' tiers of every programme of `catalogue`, in memory. `ignored` counts events that move no tier,
    by the service's reasons (jifen_tiers_events_ignored); `refused` counts manual assignments the service would
    dead-letter, by reason."""

    def __init__(self, catalogue: Catalogue[TiersProgramme]) -> None:
        self.catalogue = catalogue
        self.ignored: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self._members: dict[MemberKey, _Known] = {}
        self._counted: dict[tuple[str, str], domain.Contribution] = {}  # (program, key): as the service stores it
        self._refunds: dict[tuple[str, str], Decimal] = {}  # (program, order key): refunded so far
        self._assignments: set[str] = set()  # event ids of manual assignments applied
        self._due: list[tuple[datetime, str, str]] = []  # (when, program, member): a heap, stale entries skipped
        self._scheduled: dict[MemberKey, datetime] = {}
        self._keys = itertools.count(1)

    # --- events ------------------------------------------------------------------------------------------------

    def purchase(self, program_id: str, member_id: str, at: datetime, total: Decimal, order_id: str, *,
                 currency: str | None = None) -> list[TierMove]:
        """A purchase at `at` (its event's time); `currency` None: the programme's own."""
        found = self._terms(program_id, at, ("spend", "purchases"))
        if found is None:
            return []
        programme, rules = found
        added = bought(programme, member_id, order_id, currency or programme.currency or "", total, at)
        if added is None:
            self.ignored["currency"] += 1
            return []
        return self._contribute(programme, rules, added, at)

    def refund(self, program_id: str, member_id: str, at: datetime, total: Decimal, order_id: str, *,
               refund_id: str | None = None) -> list[TierMove]:
        """A refund of `total` of `order_id` at `at`; one `refund_id` counts once (None: a refund of its own)."""
        found = self._terms(program_id, at, ("spend", "purchases"))
        if found is None:
            return []
        programme, rules = found
        refund = refund_id if refund_id is not None else f"whatif-refund-{next(self._keys)}"
        return self._contribute(programme, rules, refunded(program_id, member_id, order_id, refund, total, at), at)

    def points(self, program_id: str, member_id: str, at: datetime, amount: int, kind: str, *,
               entry: str | int | None = None, corrects: str | int | None = None) -> list[TierMove]:
        """A ledger entry at `at` (its `occurred_at`), for the `points_earned` metric: an earn credit (`kind` earn,
        `amount` > 0; every service's credits are earn entries, referral's included) or a reversal of one (`kind`
        reversal or cancel, `amount` < 0, `corrects` the key of the credit it reverses, as `entry` named it). One
        `entry` counts once (None: an entry of its own). Other kinds move no tier."""
        found = self._terms(program_id, at, ("points_earned",))
        if found is None:
            return []
        programme, rules = found
        key = entry if entry is not None else f"whatif-entry-{next(self._keys)}"
        added = earned(program_id, member_id, kind, amount, key, corrects, at)
        return [] if added is None else self._contribute(programme, rules, added, at)

    def enrol(self, program_id: str, member_id: str, at: datetime, *,
              enrolled_at: datetime | None = None) -> list[TierMove]:
        """An enrolment (event time `at`; `enrolled_at` as the event gives it): the anniversary years count from the
        first one known. It changes no tier, but the member is counted from then on."""
        found = self._terms(program_id, at, None)
        if found is None:
            return []
        _, rules = found
        known = self._known(program_id, member_id, rules, at)
        domain.enrol(known.member, enrolled_at or at)
        return self._changed(program_id, member_id, known, rules, [])

    def assign(self, event: CloudEvent, data: TierAssigned) -> list[TierMove]:
        """A tier set by hand, from a source the programme trusts (else counted in `refused`, as the service
        dead-letters it); the same event twice applies once."""
        found = assignable(self.catalogue, event.source, data, event.time)
        if not isinstance(found, tuple):
            self.refused[found.reason] += 1
            return []
        if event.event_id in self._assignments:
            return []
        self._assignments.add(event.event_id)
        programme, rules = found
        known = self._known(data.program_id, data.member_id, rules, event.time)
        made = domain.assign(known.member, rules, data.tier, data.until, event.time, programme.zone)
        return self._changed(data.program_id, data.member_id, known, rules, made)

    def feed(self, event: CloudEvent, data: Contract) -> list[TierMove]:
        """An inbound event as the tiers service reads it: purchases and refunds (at the event's time), ledger
        entries (at their `occurred_at`), enrolments and manual tiers; other types move nothing."""
        if isinstance(data, PurchaseCompleted):
            return self.purchase(data.program_id, data.member_id, event.time, data.total, data.order_id,
                                 currency=data.currency)
        if isinstance(data, PurchaseRefunded):
            return self.refund(data.program_id, data.member_id, event.time, data.total, data.order_id,
                               refund_id=data.refund_id)
        if isinstance(data, PointsEntryPosted):
            return self.points(data.program_id, data.member_id, data.occurred_at, data.amount, data.kind,
                               entry=data.entry_id, corrects=data.corrects_entry_id)
        if isinstance(data, MemberEnrolled):
            return self.enrol(data.program_id, data.member_id, event.time, enrolled_at=data.enrolled_at)
        if isinstance(data, TierAssigned):
            return self.assign(event, data)
        return []

    # --- the review job ----------------------------------------------------------------------------------------

    def advance(self, until: datetime) -> list[TierMove]:
        """Every scheduled transition due by `until`, in time order, each at its own time under the version in
        force then: reviews (kept, or a downgrade), drops after grace, manual tiers ending."""
        moves: list[TierMove] = []
        while self._due and self._due[0][0] <= until:
            due, program_id, member_id = heapq.heappop(self._due)
            key = (program_id, member_id)
            if self._scheduled.get(key) != due:
                continue  # rescheduled since
            del self._scheduled[key]
            programme = self.catalogue.at(program_id, due)
            if programme is None or programme.tiers is None:
                continue  # the job forgets them until their next event
            known = self._members[key]
            made = domain.advance(known.member, programme.tiers, programme.zone, due)
            moves += self._changed(program_id, member_id, known, programme.tiers, made)
        return moves

    # --- reading -------------------------------------------------------------------------------------------------

    def tiers_at(self, program_id: str, at: datetime) -> Counter[str]:
        """Members of the programme known by `at`, by the tier each held at `at` (as far as events and `advance`
        have gone)."""
        counts: Counter[str] = Counter()
        for (program, _), known in self._members.items():
            if program != program_id or known.first_seen > at:
                continue
            last = _last(known.moves, at)
            counts[last.tier if last is not None else known.base] += 1
        return counts

    def announced_at(self, program_id: str, member_id: str, at: datetime) -> TierMove | None:
        """The last change in effect at `at` (from at or before it), as earn's tier history holds the service's
        announcements (services/earn/domain.py `tier_at`): its tier and multiplier are what earn applies to a
        purchase then; None before any change (earn applies no tier)."""
        known = self._members.get((program_id, member_id))
        return _last(known.moves, at) if known is not None else None

    def tier_of(self, program_id: str, member_id: str) -> str | None:
        """The member's tier now (after the last event and `advance`); None for a member never seen."""
        known = self._members.get((program_id, member_id))
        return known.member.tier if known is not None else None

    # --- inside --------------------------------------------------------------------------------------------------

    def _terms(self, program_id: str, at: datetime,
               moves: tuple[Metric, ...] | None) -> tuple[TiersProgramme, TierRules] | None:
        found = terms(self.catalogue, program_id, at, moves)
        if isinstance(found, str):
            self.ignored[found] += 1
            return None
        return found

    def _contribute(self, programme: TiersProgramme, rules: TierRules, added: NewContribution,
                    at: datetime) -> list[TierMove]:
        program_id = programme.program_id
        stored = (program_id, added.key)
        if stored in self._counted:
            return []  # counted before: a replay
        if added.ref is not None:
            ref = (program_id, added.ref)
            original = self._counted.get(ref)
            if original is None:
                self.ignored["correction_of_uncounted"] += 1
                return []  # it corrects something that never counted here: nothing to take back
            added, self._refunds[ref] = corrected(added, original, self._refunds.get(ref, Decimal(0)))
        self._counted[stored] = added.contribution
        known = self._known(program_id, added.member_id, rules, at)
        made = domain.contribute(known.member, rules, programme.zone, added.contribution, at)
        if len(known.member.contributions) > PRUNE_AT:
            _prune(known.member, rules, at)
        return self._changed(program_id, added.member_id, known, rules, made)

    def _known(self, program_id: str, member_id: str, rules: TierRules, at: datetime) -> _Known:
        key = (program_id, member_id)
        known = self._members.get(key)
        if known is None:
            member = Member.new(rules)
            known = self._members[key] = _Known(member, rules, at, member.tier)
        known.first_seen = min(known.first_seen, at)
        return known

    def _changed(self, program_id: str, member_id: str, known: _Known, rules: TierRules,
                 made: list[Change]) -> list[TierMove]:
        """Record the changes and the member's next scheduled transition under the rules that made them."""
        known.rules = rules
        moves = [TierMove(program_id, member_id, change.at, change.tier, rules.level(change.tier).earn_multiplier,
                          change.reason, change.previous, change.detail) for change in made]
        known.moves += moves
        due = known.member.due(rules)
        key = (program_id, member_id)
        if due is not None and self._scheduled.get(key) != due:
            self._scheduled[key] = due
            heapq.heappush(self._due, (due, program_id, member_id))
        elif due is None:
            self._scheduled.pop(key, None)
        return moves


def _last(moves: list[TierMove], at: datetime) -> TierMove | None:
    """The last of a member's changes (in the order made) that took effect at or before `at`."""
    found = None
    for move in moves:
        if move.at <= at:
            found = move
    return found


def _prune(member: Member, rules: TierRules, at: datetime) -> None:
    """Drop contributions older than any window a change can look at: what the service loads for a change starts
    `reach` before the earliest of the event, the tier period's end and the last upgrade's window (twice that is
    kept here, for events fed a little out of order)."""
    since = min(t for t in (at, member.valid_until, member.upgraded_in.start if member.upgraded_in else None)
                if t is not None) - 2 * reach(rules)
    member.contributions = [c for c in member.contributions if c.occurred_at >= since]
