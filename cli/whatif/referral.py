"""The referral service replayed in memory for the what-if: referrals judged with the service's own rules
(services/referral/domain.py: `judge`, `plan`, and through them the qualifying purchase, the refund that revokes,
velocity, the cap per period, the bonus on every Kth place, the expiry of referrals nobody qualified), under the
terms services/referral/judging.py gives them (`terms_of`: the version in effect at acceptance, in the referrer's
experiment arms), the facts kept as services/referral/handlers.py keeps them and re-judged as judging.py re-judges
them, writing nothing.

Every event stores its facts (the earliest event of an order, a refund or a referral stands) and the referrers it
touches are judged again; what a new verdict moves (`plan`) becomes awards: a side's credit (at the qualifying
purchase's time, spendable after `pending_days`), or the reversal of one (at the revoking refund's time, or at the
credit's own time for a late refusal or a moved bonus). The ledger is assumed to post every credit.

What a replay cannot know, it says in `notes`: a referral held for a person's review (velocity) is counted as held
and awarded nothing, as no one decides it; referral codes are issued over the service's HTTP side, not in the
events, so an enrolment's code resolves only through the `codes` given.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Literal

from prometheus_client import CollectorRegistry

from services.referral.codes import owner_of
from services.referral.domain import (
    FINGERPRINTS,
    Group,
    Held,
    Member,
    Peer,
    Purchase,
    Referral,
    Refund,
    Role,
    Status,
    Verdict,
    judge,
    plan,
    referral_id,
)
from services.referral.judging import Judging
from services.referral.metrics import ReferralMetrics
from services.referral.programme import ReferralProgramme
from shared import keys
from shared.contracts.base import Contract
from shared.contracts.members import MemberEnrolled
from shared.contracts.purchases import PurchaseCompleted, PurchaseRefunded
from shared.contracts.referrals import ReferralAccepted
from shared.envelope import CloudEvent
from shared.programmes import Catalogue
from shared.refusal import Refusal

MemberKey = tuple[str, str]  # (program_id, member_id)
HELD_NAMED = 5  # held referrals named in the note; the rest are counted


@dataclass(frozen=True, slots=True)
class ReferralAward:
    """Points a referral moves: a credit (`rewarded`) or a reversal of one (`revoked`, negative points)."""

    program_id: str
    referral_id: str
    member_id: str
    role: Role  # referrer, referee, bonus (the referrer's)
    points: int
    rule_id: str  # as the ledger's cause names it: referral-referrer, referral-referee, referral-bonus
    at: datetime
    outcome: Literal["rewarded", "revoked"]
    credit: str = ""  # the ledger key of the credit this is, or reverses (referral:{id}:{role}[:{grant}])
    available_at: datetime | None = None  # a credit's: spendable from then (after pending_days)
    expires_at: datetime | None = None  # a credit's: expires then (None: never)
    # The referrer's experiment arms that set the referral's terms (a reversal: those of the credit it reverses).
    arms: dict[str, str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class _Fact:
    """A purchase or a refund as stored: the earliest event of its id stands."""

    member_id: str
    event_id: str
    at: datetime
    total: Decimal
    currency: str = ""
    order_id: str = ""  # a refund's order


@dataclass
class _Referral:
    """A referral as stored, with what was decided of it last."""

    referral_id: str
    program_id: str
    referrer: str
    referee: str
    accepted_at: datetime
    event_id: str
    status: Status | None = None
    reason: str | None = None
    detail: str = ""
    live: dict[Role, int] = field(default_factory=dict)  # points credited and not taken back, by side
    grants: dict[Role, int] = field(default_factory=dict)  # each side's grants so far (a credit's key names it)
    credited_at: dict[Role, datetime] = field(default_factory=dict)  # each live credit's time
    credited_arms: dict[Role, dict[str, str]] = field(default_factory=dict)  # ... and the arms it was paid under
    due: datetime | None = None  # the deadline the expiry looks at, once pending

    @property
    def order_key(self) -> tuple[datetime, str]:
        return self.accepted_at, self.referral_id


class ReferralSim:
    """Referrals of every programme of `catalogue`, in memory. `codes` (programme, code) → member resolves the
    referral codes enrolments and acceptances carry (the service issues them over HTTP). `refused` counts inbound
    events the service would dead-letter, by reason."""

    def __init__(self, catalogue: Catalogue[ReferralProgramme],
                 codes: Mapping[tuple[str, str], str] | None = None) -> None:
        self.judging = Judging(catalogue, ReferralMetrics(CollectorRegistry()))
        self.codes = codes
        self.refused: Counter[str] = Counter()
        self.unresolved_codes = 0  # enrolments with a code, and no `codes` to resolve it
        self.unchecked_codes = 0  # acceptances whose code was not checked against its owner, for want of `codes`
        self._now: datetime | None = None
        self._prints: dict[MemberKey, set[tuple[str, str]]] = defaultdict(set)
        self._devices: dict[tuple[str, str], set[str]] = defaultdict(set)  # (programme, device hash): members
        self._first_purchase: dict[MemberKey, datetime] = {}
        self._orders: dict[tuple[str, str], _Fact] = {}
        self._orders_of: dict[MemberKey, set[str]] = defaultdict(set)
        self._refunds: dict[tuple[str, str], _Fact] = {}
        self._refunds_of: dict[tuple[str, str], set[str]] = defaultdict(set)  # (programme, order): refund ids
        self._referrals: dict[str, _Referral] = {}
        self._by_referrer: dict[MemberKey, list[str]] = defaultdict(list)
        self._by_referee: dict[MemberKey, list[str]] = defaultdict(list)
        self._deadlines: list[tuple[datetime, str]] = []  # pending referrals' deadlines: a heap, stale skipped
        self._taking_for: set[str] = set()
        self._taking_in: object = None  # the catalogue's versions `_taking_for` was read from

    # --- events ------------------------------------------------------------------------------------------------

    def feed(self, event: CloudEvent, data: Contract) -> list[ReferralAward]:
        """An inbound event as the referral service takes it (referrals accepted, enrolments, purchases, refunds;
        other types move nothing), judged at the event's time (the service judges at its clock, which only
        expiry reads)."""
        touched = _Touched()
        if isinstance(data, ReferralAccepted):
            self._accepted(event, data, touched)
        elif isinstance(data, MemberEnrolled):
            self._enrolled(event, data, touched)
        elif isinstance(data, PurchaseCompleted):
            if self._taking(data.program_id):
                self._bought(event, data, touched)
        elif isinstance(data, PurchaseRefunded):
            if self._taking(data.program_id):
                self._refunded(event, data, touched)
        else:
            return []
        self._now = event.time if self._now is None else max(self._now, event.time)
        return self._rejudge(self._touched(touched), self._now)

    def advance(self, until: datetime) -> list[ReferralAward]:
        """The service's clock reaching `until`: referrals still waiting for a qualifying purchase after their
        deadline expire (the expiry job); nothing else in the service runs on its clock."""
        self._now = until if self._now is None else max(self._now, until)
        referrers: set[MemberKey] = set()
        while self._deadlines and self._deadlines[0][0] < until:
            _, rid = heapq.heappop(self._deadlines)
            r = self._referrals[rid]
            if r.status == "pending":
                referrers.add((r.program_id, r.referrer))
        return self._rejudge(referrers, self._now)

    # --- what was decided ----------------------------------------------------------------------------------------

    def outcomes(self, program_id: str | None = None) -> Counter[str]:
        """Referrals by what they became: `rewarded`, `revoked`, `review`, `pending`, `rejected:<reason>`."""
        return Counter((r.status if r.status != "rejected" else f"rejected:{r.reason}") or "new"
                       for r in self._referrals.values() if program_id is None or r.program_id == program_id)

    def rewarded(self, program_id: str | None = None) -> int:
        return self.outcomes(program_id)["rewarded"]

    def rejected(self, program_id: str | None = None) -> Counter[str]:
        """Rejected referrals by reason."""
        return Counter({key.partition(":")[2]: n for key, n in self.outcomes(program_id).items()
                        if key.startswith("rejected:")})

    def held(self, program_id: str | None = None) -> int:
        """Referrals held for a person's review (velocity): a replay cannot decide them."""
        return self.outcomes(program_id)["review"]

    @property
    def notes(self) -> list[str]:
        """What the replay could not judge as the service would have, in a sentence each."""
        notes = []
        held = sorted((r for r in self._referrals.values() if r.status == "review"), key=lambda r: r.order_key)
        if held:
            named = ", ".join(r.referral_id for r in held[:HELD_NAMED])
            more = f" and {len(held) - HELD_NAMED} more" if len(held) > HELD_NAMED else ""
            notes.append(f"{len(held)} referral(s) held for a person's review (velocity: {held[0].detail}): a replay "
                         f"cannot decide them, so they are counted as held and awarded nothing ({named}{more})")
        if self.unresolved_codes:
            notes.append(f"{self.unresolved_codes} enrolment(s) named a referral code the replay could not resolve "
                         "(codes are issued over the referral service's HTTP side, not in the events): not counted "
                         "as referrals")
        if self.unchecked_codes:
            notes.append(f"{self.unchecked_codes} accepted referral(s) carried a code not checked against its owner "
                         "(no codes given): taken with the referrer they name")
        if self.refused:
            notes.append("events the service would refuse: " + ", ".join(
                f"{reason} {n}" for reason, n in sorted(self.refused.items())))
        return notes

    # --- facts in, as handlers.py takes them ---------------------------------------------------------------------

    def _taking(self, program_id: str) -> bool:
        """A programme with a referral section in some version: its purchases and members are worth keeping
        (judging.programmes, read again only when the catalogue reloads)."""
        versions = self.judging.catalogue.versions
        if self._taking_in is not versions:
            self._taking_for, self._taking_in = self.judging.programmes(), self.judging.catalogue.versions
        return program_id in self._taking_for

    def _owner(self, program_id: str, typed: str, referrer: str | None) -> str | None:
        """The code's owner, as the service finds it (codes.owner_of: `unknown_referral_code`,
        `referral_code_mismatch`); None when no `codes` were given to look it up."""
        if self.codes is None:
            return None
        return owner_of(self.codes, program_id, typed, referrer)

    def _accepted(self, event: CloudEvent, accepted: ReferralAccepted, touched: _Touched) -> None:
        try:
            self.judging.taking(accepted.program_id, event.time)
            if accepted.referral_code is not None and self._owner(
                    accepted.program_id, accepted.referral_code, accepted.referrer_member_id) is None:
                self.unchecked_codes += 1
        except Refusal as refused:
            self.refused[refused.reason] += 1
            return
        self._refer(accepted.program_id, accepted.referrer_member_id, accepted.referee_member_id, event.time,
                    event.event_id, touched)

    def _enrolled(self, event: CloudEvent, enrolled: MemberEnrolled, touched: _Touched) -> None:
        program_id, member_id = enrolled.program_id, enrolled.member_id
        at = min(enrolled.enrolled_at, event.time) if enrolled.enrolled_at else event.time
        if self._taking(program_id):
            prints = enrolled.fingerprints
            found = [(kind, value) for kind in FINGERPRINTS if (value := getattr(prints, kind, None))]
            self._prints[(program_id, member_id)].update(found)
            for kind, value in found:
                if kind == "device":
                    self._devices[(program_id, value)].add(member_id)
            touched.either.add((program_id, member_id))
            if any(kind == "device" for kind, _ in found):
                touched.devices.add((program_id, member_id))
        if enrolled.referral_code is None:
            return
        try:
            self.judging.taking(program_id, at)
            referrer = self._owner(program_id, enrolled.referral_code, None)
        except Refusal as refused:
            self.refused[refused.reason] += 1
            return
        if referrer is None:
            self.unresolved_codes += 1
            return
        self._refer(program_id, referrer, member_id, at, event.event_id, touched)

    def _bought(self, event: CloudEvent, bought: PurchaseCompleted, touched: _Touched) -> None:
        key, member = (bought.program_id, bought.order_id), (bought.program_id, bought.member_id)
        fact = _Fact(bought.member_id, event.event_id, event.time, bought.total, bought.currency)
        stored = self._orders.get(key)
        if stored is None or (fact.at, fact.event_id) < (stored.at, stored.event_id):
            if stored is not None:
                self._orders_of[(bought.program_id, stored.member_id)].discard(bought.order_id)
            self._orders[key] = fact
            self._orders_of[member].add(bought.order_id)
        first = self._first_purchase.get(member)
        self._first_purchase[member] = event.time if first is None else min(first, event.time)
        touched.referees.add(member)

    def _refunded(self, event: CloudEvent, refund: PurchaseRefunded, touched: _Touched) -> None:
        key = (refund.program_id, refund.refund_id)
        fact = _Fact(refund.member_id, event.event_id, event.time, refund.total, order_id=refund.order_id)
        stored = self._refunds.get(key)
        if stored is None or (fact.at, fact.event_id) < (stored.at, stored.event_id):
            if stored is not None:
                self._refunds_of[(refund.program_id, stored.order_id)].discard(refund.refund_id)
            self._refunds[key] = fact
            self._refunds_of[(refund.program_id, refund.order_id)].add(refund.refund_id)
        touched.referees.add((refund.program_id, refund.member_id))

    def _refer(self, program_id: str, referrer: str, referee: str, at: datetime, event_id: str,
               touched: _Touched) -> None:
        rid = referral_id(program_id, referrer, referee)
        stored = self._referrals.get(rid)
        if stored is None:
            self._referrals[rid] = _Referral(rid, program_id, referrer, referee, at, event_id)
            self._by_referrer[(program_id, referrer)].append(rid)
            self._by_referee[(program_id, referee)].append(rid)
        elif (at, event_id) < (stored.accepted_at, stored.event_id):
            stored.accepted_at, stored.event_id = at, event_id  # announced again: the earliest acceptance stands
        touched.referees.add((program_id, referee))
        touched.devices.add((program_id, referee))

    def _touched(self, touched: _Touched) -> set[MemberKey]:
        """The referrers whose referrals new facts may change, as repository.referrals.touched finds them."""
        referrers: set[MemberKey] = set()
        for key in touched.referees | touched.either:
            referrers.update((key[0], self._referrals[rid].referrer) for rid in self._by_referee.get(key, ()))
        for key in touched.either:
            if self._by_referrer.get(key):
                referrers.add(key)
        for program_id, member_id in touched.devices:
            for kind, device in self._prints.get((program_id, member_id), ()):
                if kind != "device":
                    continue
                for peer in self._devices[(program_id, device)]:
                    referrers.update((program_id, self._referrals[rid].referrer)
                                     for rid in self._by_referee.get((program_id, peer), ()))
        return referrers

    # --- judging, as judging.py does it --------------------------------------------------------------------------

    def _rejudge(self, referrers: set[MemberKey], now: datetime) -> list[ReferralAward]:
        awards: list[ReferralAward] = []
        for program_id, referrer in sorted(referrers):
            found: dict[str, Referral] = {}
            for rid in self._by_referrer[(program_id, referrer)]:
                r = self._referrals[rid]
                terms = self.judging.terms_of(program_id, referrer, r.accepted_at)  # the referrer's arms apply
                if terms is not None:
                    programme, arms = terms
                    found[rid] = Referral(rid, referrer, r.referee, r.accepted_at, programme, arms=arms)
            if not found:
                continue
            for rid, verdict in judge(self._group(program_id, referrer, list(found.values())), now).items():
                awards += self._move(self._referrals[rid], found[rid], verdict)
        return awards

    def _group(self, program_id: str, referrer: str, found: list[Referral]) -> Group:
        """The referrer's referrals with every fact that judges them (what judging._groups loads)."""
        people = {referrer, *(r.referee for r in found)}
        devices = {device for r in found for kind, device in self._prints.get((program_id, r.referee), ())
                   if kind == "device"}
        return Group(
            referrals=sorted(found, key=lambda r: r.order_key),
            members={m: Member(frozenset(self._prints.get((program_id, m), ())),
                               self._first_purchase.get((program_id, m)), self._purchases(program_id, m))
                     for m in people},
            first_referral={r.referee: min(self._referrals[rid].order_key
                                           for rid in self._by_referee[(program_id, r.referee)]) for r in found},
            device_peers={device: [Peer(self._referrals[rid].accepted_at, rid, peer)
                                   for peer in self._devices[(program_id, device)]
                                   for rid in self._by_referee.get((program_id, peer), ())]
                          for device in devices})

    def _purchases(self, program_id: str, member_id: str) -> tuple[Purchase, ...]:
        """The member's purchases in (time, order id) order, each with its refunds in (time, refund id) order. All
        of them: those outside the span the service loads cannot qualify a referral it judges."""
        found = []
        for order_id in self._orders_of.get((program_id, member_id), ()):
            order = self._orders[(program_id, order_id)]
            refunds = sorted((Refund(refund_id, f.event_id, f.at, f.total)
                              for refund_id in self._refunds_of.get((program_id, order_id), ())
                              for f in (self._refunds[(program_id, refund_id)],)),
                             key=lambda r: (r.occurred_at, r.refund_id))
            found.append(Purchase(order_id, order.event_id, order.at, order.currency, order.total, tuple(refunds)))
        return tuple(sorted(found, key=lambda p: (p.occurred_at, p.order_id)))

    def _move(self, stored: _Referral, referral: Referral, verdict: Verdict) -> list[ReferralAward]:
        """What the new verdict moves (domain.plan): reversals of the sides' credits in force, new credits."""
        rules = referral.rules
        step = plan(Held(stored.status, stored.reason, dict(stored.live)), verdict, rules)
        revoked = verdict.refund if verdict.status == "revoked" else None
        awards = []
        for role in sorted(step.reverse):
            points = stored.live.pop(role)
            at = revoked.occurred_at if revoked is not None else stored.credited_at[role]
            awards.append(ReferralAward(stored.program_id, stored.referral_id, self._side(stored, role), role, -points,
                                        f"referral-{role}", at, "revoked",
                                        keys.referral_credit(stored.referral_id, role, stored.grants[role]),
                                        arms=stored.credited_arms.pop(role, {})))
        order = verdict.order
        for role, points in step.credit.items():
            assert order is not None, "only a rewarded verdict pays, and it has its qualifying purchase"
            stored.live[role], stored.credited_at[role] = points, order.occurred_at
            stored.grants[role] = stored.grants.get(role, 0) + 1
            stored.credited_arms[role] = dict(referral.arms)
            awards.append(ReferralAward(
                stored.program_id, stored.referral_id, self._side(stored, role), role, points, f"referral-{role}",
                order.occurred_at, "rewarded", keys.referral_credit(stored.referral_id, role, stored.grants[role]),
                order.occurred_at + timedelta(days=rules.pending_days),
                order.occurred_at + timedelta(days=rules.expires_after_days) if rules.expires_after_days else None,
                dict(referral.arms)))
        stored.status, stored.reason, stored.detail = verdict.status, verdict.reason, verdict.detail
        if verdict.status == "pending" and stored.due != referral.deadline:
            stored.due = referral.deadline
            heapq.heappush(self._deadlines, (referral.deadline, stored.referral_id))
        return awards

    @staticmethod
    def _side(stored: _Referral, role: Role) -> str:
        return stored.referee if role == "referee" else stored.referrer


@dataclass
class _Touched:
    """Whom an event's facts touch (as handlers.py gathers them in `Changes`)."""

    referees: set[MemberKey] = field(default_factory=set)  # their referrals as referee may change
    either: set[MemberKey] = field(default_factory=set)  # ... on either side
    devices: set[MemberKey] = field(default_factory=set)  # ... and the referrals of referees on their devices
