"""Judging a set of referrers: their referrals re-judged from the stored facts (domain.judge), and the difference
from what was decided before turned into ledger commands and outcome events, through the outbox (domain.plan).

Every use case ends here: a batch of events, the ledger's answers, a reviewer's decision, the expiry job. Each
gathers what it changes in one `Changes`; the caller holds the programme's lock (repository.lock), so what judging
reads is every fact committed before it."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import orjson

from services.referral.domain import (
    Group,
    Held,
    Member,
    Peer,
    Referral,
    Role,
    Verdict,
    judge,
    plan,
)
from services.referral.metrics import ReferralMetrics
from services.referral.programme import ReferralProgramme
from services.referral.records import (
    Judged,
    MemberKey,
    NewCredit,
    NewMember,
    NewPurchase,
    NewReferral,
    NewRefund,
    Reversal,
    Span,
    Stored,
)
from services.referral.repository import credits, members, referrals
from shared import keys
from shared.contracts.ledger_commands import Cause, PostCredit, ReverseEntry
from shared.contracts.referral_outcomes import ReferralRejected, ReferralRevoked, ReferralRewarded
from shared.metrics import Family
from shared.programmes import Catalogue
from shared.refusal import Refusal
from shared.subscription import Rejections
from shared.uow import UnitOfWork

Outcome = ReferralRewarded | ReferralRejected | ReferralRevoked  # the outcome events


@dataclass
class Changes:
    """What one batch changes (a run of events, the ledger's answers, a reviewer's decision, a page of the expiry
    job), gathered to be written with one statement per table: the facts it brings and whom they touch, the ledger's
    answers to the service's commands, and what judging again moves."""

    uow: UnitOfWork
    rejections: Rejections = field(default_factory=Rejections)  # the events of the run refused by a rule
    programs: set[str] = field(default_factory=set)  # the programmes whose lock the batch takes
    # Facts in (a run of events), and whom they touch.
    taking: set[str] = field(default_factory=set)  # programmes with a referral section: their facts are kept
    code_owners: dict[tuple[str, str], str] = field(default_factory=dict)  # codes the run names: (programme, code)
    members: list[NewMember] = field(default_factory=list)
    purchases: list[NewPurchase] = field(default_factory=list)
    refunds: list[NewRefund] = field(default_factory=list)
    referrals: list[NewReferral] = field(default_factory=list)
    referees: set[MemberKey] = field(default_factory=set)  # their referrals as referee may change
    either: set[MemberKey] = field(default_factory=set)  # ... on either side
    devices: set[MemberKey] = field(default_factory=set)  # ... and the referrals of referees on their devices
    # The ledger's answers, by credit key.
    credits_posted: list[str] = field(default_factory=list)
    credits_refused: list[str] = field(default_factory=list)
    reversals_done: list[str] = field(default_factory=list)
    reversals_failed: list[str] = field(default_factory=list)
    # What judging again moves.
    judged: list[Judged] = field(default_factory=list)
    reversals: list[Reversal] = field(default_factory=list)
    credits: list[NewCredit] = field(default_factory=list)
    commands: list[PostCredit] = field(default_factory=list)
    outcomes: list[tuple[Outcome, str, str, datetime]] = field(default_factory=list)  # with event id, key, time
    after: list[Callable[[], None]] = field(default_factory=list)  # metrics, counted once the batch is stored


@dataclass
class Judging:
    """The programmes' referral terms, and re-judging referrers' referrals under them."""

    catalogue: Catalogue[ReferralProgramme]
    metrics: ReferralMetrics

    def terms(self, program_id: str, at: datetime) -> ReferralProgramme | None:
        """The programme version in effect at `at`, if it has a referral section."""
        programme = self.catalogue.at(program_id, at)
        return programme if programme is not None and programme.referral is not None else None

    def terms_of(self, program_id: str, referrer: str, at: datetime) -> tuple[ReferralProgramme, dict[str, str]] | None:
        """The terms of a referral the referee accepted at `at`: the version in effect then with the referrer's arm
        of every experiment running then (the referrer is shown the offer and shares it, so both rewards follow the
        referrer's arm), and those arms; None when that version takes no referrals."""
        if self.catalogue.at(program_id, at) is None:
            return None
        programme, arms = self.catalogue.for_member(program_id, referrer, at)
        return (programme, arms) if programme.referral is not None else None

    def taking(self, program_id: str, at: datetime) -> ReferralProgramme:
        """The version in effect at `at`, which must take referrals: `unknown_program` (the catalogue's one
        refusal) or `no_rule`."""
        programme = self.catalogue.in_force(program_id, at)
        if programme.referral is None:
            raise Refusal("no_rule", f"programme {program_id!r} takes no referrals at {at.isoformat()}")
        return programme

    def serving(self, program_id: str, now: datetime) -> None:
        """A programme the HTTP side answers for: in force, with a referral section in some version
        (`unknown_program` or `no_referrals`)."""
        self.catalogue.in_force(program_id, now)
        if program_id not in self.programmes():
            raise Refusal("no_referrals", f"programme {program_id!r} has no referral section")

    def programmes(self) -> set[str]:
        """Programmes with a referral section in some version: their purchases and members are worth keeping."""
        self.catalogue.refresh()
        return {p.program_id for p in self.catalogue if p.referral is not None}

    async def rejudge(self, changes: Changes, referrers: Iterable[MemberKey], now: datetime) -> int:
        """Judge every referral of these referrers at `now` and write what changes; returns how many verdicts
        changed."""
        db = changes.uow.db
        stored = {s.referral_id: s for s in await referrals.referrals_of(db, referrers)}
        found: dict[str, Referral] = {}
        for s in stored.values():
            terms = self.terms_of(s.program_id, s.referrer, s.accepted_at)
            if terms is not None:
                programme, arms = terms
                found[s.referral_id] = Referral(s.referral_id, s.referrer, s.referee, s.accepted_at, programme,
                                                s.decision, s.decided_at, arms)
        await referrals.forget_due(db, [i for i in stored if i not in found])
        groups = await self._groups(db, found.values())
        before = len(changes.judged)
        for group in groups:
            for referral_id, verdict in judge(group, now).items():
                self._move(stored[referral_id], found[referral_id], verdict, changes)
        await self._apply(changes)
        return len(changes.judged) - before

    async def _groups(self, db: asyncpg.Connection, judged: Iterable[Referral]) -> list[Group]:
        """Each referrer's referrals with every fact that judges them, loaded for all referrers at once."""
        by_referrer: dict[MemberKey, list[Referral]] = defaultdict(list)
        for r in judged:
            by_referrer[(r.programme.program_id, r.referrer)].append(r)
        if not by_referrer:
            return []
        every = [r for found in by_referrer.values() for r in found]
        referees = {(r.programme.program_id, r.referee) for r in every}
        known = await members.members_of(db, referees | set(by_referrer))
        first = await referrals.first_referrals(db, referees)
        purchases = await members.purchases_of(db, _purchase_spans(every))
        peers = await referrals.device_peers(db, _device_spans(every, known))
        groups = []
        for (program_id, referrer), found in by_referrer.items():
            people = {referrer, *(r.referee for r in found)}
            groups.append(Group(
                referrals=sorted(found, key=lambda r: r.order_key),
                members={m: replace(known[(program_id, m)], purchases=purchases.get((program_id, m), ()))
                         for m in people},
                first_referral={r.referee: first[(program_id, r.referee)] for r in found},
                device_peers=_peers_of(program_id, peers)))
        return groups

    def _move(self, stored: Stored, referral: Referral, verdict: Verdict, out: Changes) -> None:
        """What the new verdict changes for one referral: reversals, new grants, an outcome, the stored state."""
        rules = referral.rules
        step = plan(Held(stored.status, stored.reason, stored.live), verdict, rules)
        program_id = referral.programme.program_id
        grants, live = dict(stored.grants), dict(stored.live)
        revoked = verdict.refund if verdict.status == "revoked" else None
        taken_back: dict[Role, int] = {}
        for role in sorted(step.reverse):
            out.reversals.append(Reversal(
                referral.referral_id, role, grants[role], revoked.occurred_at if revoked else None,
                "referral_revoked" if revoked else f"referral_{verdict.reason or verdict.status}",
                revoked.event_id if revoked else stored.event_id))
            taken_back[role] = live.pop(role)
            out.after.append(_counted(self.metrics.reversed, program_id, role, taken_back[role]))
        order = verdict.order
        for role, points in step.credit.items():
            assert order is not None, "only a rewarded verdict pays, and it has its qualifying purchase"
            grants[role] = grants.get(role, 0) + 1
            live[role] = points
            member = referral.referee if role == "referee" else referral.referrer
            key = keys.referral_credit(referral.referral_id, role, grants[role])
            out.credits.append(NewCredit(key, program_id, referral.referral_id, grants[role], role, member, points,
                                         order.occurred_at, dict(referral.arms) or None))
            out.commands.append(PostCredit(
                idempotency_key=key, program_id=program_id, member_id=member, amount=points,
                occurred_at=order.occurred_at, available_at=order.occurred_at + timedelta(days=rules.pending_days),
                expires_at=order.occurred_at + timedelta(days=rules.expires_after_days)
                if rules.expires_after_days else None,
                cause=Cause(source_event_id=order.event_id, rule_id=f"referral-{role}",
                            rule_version=referral.programme.version, reason="referral",
                            arms=dict(referral.arms) or None),
                details={"referral_id": referral.referral_id, "role": role, "order_id": order.order_id,
                         "referrer_member_id": referral.referrer, "referee_member_id": referral.referee,
                         "position": verdict.position}))
            out.after.append(_counted(self.metrics.points, program_id, role, points))
        announced = stored.announced
        if step.announce is not None:
            announced += 1
            out.outcomes.append((_outcome(step.announce, referral, verdict, taken_back),
                                 keys.referral_outcome_event(referral.referral_id, announced), referral.referrer,
                                 verdict.at))
        judged = Judged(
            referral.referral_id, verdict.status, verdict.reason, verdict.detail, verdict.at,
            order.order_id if order else None, order.occurred_at if order else None, verdict.position,
            referral.programme.version,
            order.occurred_at + timedelta(days=rules.pending_days) if order and verdict.status == "rewarded" else None,
            grants, live, announced, referral.deadline if verdict.status == "pending" else None)
        if judged != stored.judged:
            out.judged.append(judged)
            if (stored.status, stored.reason) != (verdict.status, verdict.reason):
                out.after.append(self._moved(program_id, stored, verdict))

    async def _apply(self, out: Changes) -> None:
        uow = out.uow
        for credit in await credits.want_reversals(uow.db, out.reversals):
            uow.emit(reversal(credit), at=credit["reverse_at"], subject=credit["member_id"])
        await credits.add(uow.db, out.credits)
        for command in out.commands:
            uow.emit(command, at=command.occurred_at, subject=command.member_id)
        for outcome, event_id, referrer, at in out.outcomes:
            uow.emit(outcome, at=at, event_id=event_id, key=referrer)
        await referrals.store_verdicts(uow.db, out.judged)
        uow.after_commit.extend(out.after)

    def _moved(self, program_id: str, before: Stored, verdict: Verdict) -> Callable[[], None]:
        def count() -> None:
            if before.status is not None:
                self.metrics.referrals.labels(program_id, before.status, before.reason or "").dec()
                if before.status == "review":
                    self.metrics.review_queue.labels(program_id).dec()
            self.metrics.referrals.labels(program_id, verdict.status, verdict.reason or "").inc()
            self.metrics.verdicts.labels(program_id, verdict.status, verdict.reason or "").inc()
            if verdict.status == "review":
                self.metrics.review_queue.labels(program_id).inc()

        return count


def reversal(credit: asyncpg.Record) -> ReverseEntry:
    """The reversal of a stored credit, by the credit's key: all of it that the ledger has not reversed yet."""
    return ReverseEntry(
        idempotency_key=keys.referral_reversal(credit["key"]), program_id=credit["program_id"],
        member_id=credit["member_id"], entry_key=credit["key"], occurred_at=credit["reverse_at"],
        cause=Cause(source_event_id=credit["reverse_source"], rule_id=f"referral-{credit['role']}",
                    reason=credit["reverse_reason"], arms=_json(credit["arms"]) or None),
        details={"referral_id": credit["referral_id"], "role": credit["role"]})


def _outcome(kind: str, referral: Referral, verdict: Verdict, taken_back: dict[Role, int]) -> Outcome:
    program_id, rules = referral.programme.program_id, referral.rules
    sides = {"referral_id": referral.referral_id, "referrer_member_id": referral.referrer,
             "referee_member_id": referral.referee, "arms": dict(referral.arms)}
    if kind == "rewarded" and verdict.order is not None:
        return ReferralRewarded(program_id=program_id, **sides, qualifying_order_id=verdict.order.order_id,
                                referrer_points=rules.referrer_points, referee_points=rules.referee_points,
                                bonus_points=verdict.bonus)
    if kind == "revoked" and verdict.order is not None and verdict.refund is not None:
        # The referrer's points taken back include the bonus, if the referral earned one.
        return ReferralRevoked(program_id=program_id, **sides, order_id=verdict.order.order_id,
                               refund_id=verdict.refund.refund_id,
                               referrer_points=taken_back.get("referrer", 0) + taken_back.get("bonus", 0),
                               referee_points=taken_back.get("referee", 0))
    return ReferralRejected(program_id=program_id, **sides, reason=verdict.reason or verdict.status,
                            detail=verdict.detail)


def _json(value: Any) -> Any:
    """A jsonb column as read: text on a bare asyncpg connection, already decoded on an engine's."""
    return orjson.loads(value) if isinstance(value, str | bytes) else value


def _counted(family: Family, program_id: str, role: str, points: int) -> Callable[[], None]:
    return lambda: family.labels(program_id, role).inc(points)


def _purchase_spans(every: Iterable[Referral]) -> list[Span]:
    """Each referee's purchases from their earliest acceptance to their latest deadline: the ones that can qualify
    (earlier ones only count as the first purchase, which `members` keeps)."""
    spans: dict[MemberKey, tuple[datetime, datetime]] = {}
    for r in every:
        key = (r.programme.program_id, r.referee)
        since, until = spans.get(key, (r.accepted_at, r.deadline))
        spans[key] = (min(since, r.accepted_at), max(until, r.deadline))
    return [Span(p, m, since, until) for (p, m), (since, until) in sorted(spans.items())]


def _device_spans(every: Iterable[Referral], known: dict[MemberKey, Member]) -> list[Span]:
    """Each referee device's velocity windows: the referrals on it that can count against a referral judged."""
    spans: dict[tuple[str, str], tuple[datetime, datetime]] = {}
    for r in every:
        limits = r.rules.velocity
        member = known.get((r.programme.program_id, r.referee))
        if limits is None or limits.per_device is None or member is None:
            continue
        for kind, device in member.fingerprints:
            if kind != "device":
                continue
            key = (r.programme.program_id, device)
            since = r.accepted_at - timedelta(days=limits.days)
            before = spans.get(key, (since, r.accepted_at))
            spans[key] = (min(before[0], since), max(before[1], r.accepted_at))
    return [Span(p, h, since, until) for (p, h), (since, until) in sorted(spans.items())]


def _peers_of(program_id: str, peers: dict[tuple[str, str], list[Peer]]) -> dict[str, list[Peer]]:
    return {device: found for (p, device), found in peers.items() if p == program_id}

