"""Judging a set of referrers: their referrals re-judged from the stored facts (domain.judge), and the difference
from what was decided before turned into ledger commands and outcome events, through the outbox (domain.plan).

Every use case ends here: a batch of events, the ledger's answers, a reviewer's decision, the expiry job. The caller
holds the programme's lock (repository.lock), so what it reads is every fact committed before it."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import asyncpg
from prometheus_client import CollectorRegistry

from services.referral import credits, repository
from services.referral.credits import NewCredit, Reversal
from services.referral.domain import (
    Group,
    Held,
    Member,
    Peer,
    Referral,
    ReferralProgramme,
    Role,
    Verdict,
    judge,
    plan,
)
from services.referral.repository import Judged, MemberKey, Span, Stored
from shared.contracts.ledger_commands import Cause, PostCredit, ReverseEntry
from shared.contracts.referral_outcomes import ReferralRejected, ReferralRevoked, ReferralRewarded
from shared.metrics import Family, counter, gauge
from shared.programmes import Catalogue
from shared.uow import UnitOfWork

REVERSAL = ":reversal"  # a reversal's key is its credit's key and this
Outcome = ReferralRewarded | ReferralRejected | ReferralRevoked


def credit_key(referral_id: str, grant_no: int, role: Role) -> str:
    """Derived from the referral, so a credit derived again is the same command to the ledger. A side's first
    grant is `referral:{id}:{role}`; a later one (paid again after a verdict took the first back) names its
    number, `referral:{id}:{role}:{n}`."""
    return f"referral:{referral_id}:{role}" if grant_no == 1 else f"referral:{referral_id}:{role}:{grant_no}"


class ReferralMetrics:
    """The service's own metrics, beside the kit's (events, DLQ, jobs, outbox)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        def family(kind: Callable[..., Family], name: str, documentation: str, *labels: str) -> Family:
            return kind(registry, "referral", name, documentation, ["program_id", *labels])

        self.referrals = family(gauge, "jifen_referrals", "Referrals by status and reason (recounted by every round of "
                                "the expiry job, moved by every verdict)", "status", "reason")
        self.review_queue = family(gauge, "jifen_referrals_in_review", "Referrals held for review (velocity)")
        self.verdicts = family(counter, "jifen_referral_verdicts", "Verdicts reached (a referral's status or reason "
                               "changed)", "status", "reason")
        self.points = family(counter, "jifen_referral_points", "Points credited for referrals, by side", "role")
        self.reversed = family(counter, "jifen_referral_points_reversed", "Points of referral credits taken back "
                               "(refunds, late refusals, moved bonuses), by side", "role")
        self.ledger_refusals = family(counter, "jifen_referral_ledger_refusals", "Referral credits or reversals the "
                                      "ledger refused, by its reason", "reason")
        self.ignored = family(counter, "jifen_referral_events_ignored", "Events the referral service keeps nothing of "
                              "(a programme without referrals)", "reason")

    def recount(self, counts: dict[tuple[str, str, str], int]) -> None:
        self.referrals.clear()
        self.review_queue.clear()
        for (program_id, status, reason), n in counts.items():
            self.referrals.labels(program_id, status, reason).set(n)
            if status == "review":
                self.review_queue.labels(program_id).inc(n)


@dataclass
class Judging:
    """The programmes' referral terms, and re-judging referrers' referrals under them."""

    catalogue: Catalogue[ReferralProgramme]
    metrics: ReferralMetrics

    def terms(self, program_id: str, at: datetime) -> ReferralProgramme | None:
        """The programme version in effect at `at`, if it has a referral section."""
        programme = self.catalogue.at(program_id, at)
        return programme if programme is not None and programme.referral is not None else None

    def programmes(self) -> set[str]:
        """Programmes with a referral section in some version: their purchases and members are worth keeping."""
        self.catalogue.refresh()
        return {p.program_id for p in self.catalogue if p.referral is not None}

    async def rejudge(self, uow: UnitOfWork, referrers: Iterable[MemberKey], now: datetime) -> int:
        """Judge every referral of these referrers at `now`; returns how many verdicts changed."""
        stored = {s.referral_id: s for s in await repository.referrals_of(uow.db, referrers)}
        referrals: dict[str, Referral] = {}
        for s in stored.values():
            programme = self.terms(s.program_id, s.accepted_at)
            if programme is not None:
                referrals[s.referral_id] = Referral(s.referral_id, s.referrer, s.referee, s.accepted_at, programme,
                                                    s.decision, s.decided_at)
        await repository.forget_due(uow.db, [i for i in stored if i not in referrals])
        groups = await self._groups(uow.db, referrals.values())
        out = Moves()
        for group in groups:
            for referral_id, verdict in judge(group, now).items():
                self._move(stored[referral_id], referrals[referral_id], verdict, out)
        await self._apply(uow, out)
        return len(out.judged)

    async def _groups(self, db: asyncpg.Connection, referrals: Iterable[Referral]) -> list[Group]:
        """Each referrer's referrals with every fact that judges them, loaded for all referrers at once."""
        by_referrer: dict[MemberKey, list[Referral]] = defaultdict(list)
        for r in referrals:
            by_referrer[(r.programme.program_id, r.referrer)].append(r)
        if not by_referrer:
            return []
        every = [r for found in by_referrer.values() for r in found]
        referees = {(r.programme.program_id, r.referee) for r in every}
        members = await repository.members_of(db, referees | set(by_referrer))
        first = await repository.first_referrals(db, referees)
        purchases = await repository.purchases_of(db, _purchase_spans(every))
        peers = await repository.device_peers(db, _device_spans(every, members))
        groups = []
        for (program_id, referrer), found in by_referrer.items():
            people = {referrer, *(r.referee for r in found)}
            groups.append(Group(
                referrals=sorted(found, key=lambda r: r.order_key),
                members={m: replace(members[(program_id, m)], purchases=purchases.get((program_id, m), ()))
                         for m in people},
                first_referral={r.referee: first[(program_id, r.referee)] for r in found},
                device_peers=_peers_of(program_id, peers)))
        return groups

    def _move(self, stored: Stored, referral: Referral, verdict: Verdict, out: Moves) -> None:
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
            key = credit_key(referral.referral_id, grants[role], role)
            out.credits.append(NewCredit(key, program_id, referral.referral_id, grants[role], role, member, points,
                                         order.occurred_at))
            out.commands.append(PostCredit(
                idempotency_key=key, program_id=program_id, member_id=member, amount=points,
                occurred_at=order.occurred_at, available_at=order.occurred_at + timedelta(days=rules.pending_days),
                expires_at=order.occurred_at + timedelta(days=rules.expires_after_days)
                if rules.expires_after_days else None,
                cause=Cause(source_event_id=order.event_id, rule_id=f"referral-{role}",
                            rule_version=referral.programme.version, reason="referral"),
                details={"referral_id": referral.referral_id, "role": role, "order_id": order.order_id,
                         "referrer_member_id": referral.referrer, "referee_member_id": referral.referee,
                         "position": verdict.position}))
            out.after.append(_counted(self.metrics.points, program_id, role, points))
        announced = stored.announced
        if step.announce is not None:
            announced += 1
            out.outcomes.append((_outcome(step.announce, referral, verdict, taken_back),
                                 f"{referral.referral_id}:{announced}", referral.referrer, verdict.at))
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

    async def _apply(self, uow: UnitOfWork, out: Moves) -> None:
        for credit in await credits.want_reversals(uow.db, out.reversals):
            uow.emit(reversal(credit), at=credit["reverse_at"], subject=credit["member_id"])
        await credits.add(uow.db, out.credits)
        for command in out.commands:
            uow.emit(command, at=command.occurred_at, subject=command.member_id)
        for outcome, event_id, referrer, at in out.outcomes:
            uow.emit(outcome, at=at, event_id=event_id, key=referrer)
        await repository.store_verdicts(uow.db, out.judged)
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


@dataclass
class Moves:
    """What judging a set of referrers changes, gathered to be written with one statement per table."""

    judged: list[Judged] = field(default_factory=list)
    reversals: list[Reversal] = field(default_factory=list)
    credits: list[NewCredit] = field(default_factory=list)
    commands: list[PostCredit] = field(default_factory=list)
    outcomes: list[tuple[Outcome, str, str, datetime]] = field(default_factory=list)  # with event id, key, time
    after: list[Callable[[], None]] = field(default_factory=list)  # metrics, counted once the batch is stored


def reversal(credit: asyncpg.Record) -> ReverseEntry:
    """The reversal of a stored credit, by the credit's key: all of it that the ledger has not reversed yet."""
    return ReverseEntry(
        idempotency_key=credit["key"] + REVERSAL, program_id=credit["program_id"], member_id=credit["member_id"],
        entry_key=credit["key"], occurred_at=credit["reverse_at"],
        cause=Cause(source_event_id=credit["reverse_source"], rule_id=f"referral-{credit['role']}",
                    reason=credit["reverse_reason"]),
        details={"referral_id": credit["referral_id"], "role": credit["role"]})


def _outcome(kind: str, referral: Referral, verdict: Verdict, taken_back: dict[Role, int]) -> Outcome:
    program_id, rules = referral.programme.program_id, referral.rules
    sides = {"referral_id": referral.referral_id, "referrer_member_id": referral.referrer,
             "referee_member_id": referral.referee}
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


def _counted(family: Family, program_id: str, role: str, points: int) -> Callable[[], None]:
    return lambda: family.labels(program_id, role).inc(points)


def _purchase_spans(referrals: Iterable[Referral]) -> list[Span]:
    """Each referee's purchases from their earliest acceptance to their latest deadline: the ones that can qualify
    (earlier ones only count as the first purchase, which `members` keeps)."""
    spans: dict[MemberKey, tuple[datetime, datetime]] = {}
    for r in referrals:
        key = (r.programme.program_id, r.referee)
        since, until = spans.get(key, (r.accepted_at, r.deadline))
        spans[key] = (min(since, r.accepted_at), max(until, r.deadline))
    return [Span(p, m, since, until) for (p, m), (since, until) in sorted(spans.items())]


def _device_spans(referrals: Iterable[Referral], members: dict[MemberKey, Member]) -> list[Span]:
    """Each referee device's velocity windows: the referrals on it that can count against a referral judged."""
    spans: dict[tuple[str, str], tuple[datetime, datetime]] = {}
    for r in referrals:
        limits = r.rules.velocity
        member = members.get((r.programme.program_id, r.referee))
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

