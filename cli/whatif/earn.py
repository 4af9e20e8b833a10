"""Earn replayed in memory for the what-if: earn's own handler (services/earn/handlers.py `EarnFromEvents`) run
event by event over `Memory`, an in-memory twin of its per-batch `Changes` (dicts where the service has tables), so
a replay earns exactly what the service's code earns, writing nothing.

The birthday job (services/earn/jobs.py) is replayed by `Birthdays`: the same domain functions (`birthday_days`,
`birthday_pays`, `expires_at`) and the same credit, run at each hour the replay passes, as the job runs hourly.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, cast

from services.earn.activity import birthday_days, birthday_pays, granted
from services.earn.domain import MemberTier, expires_at, tier_at
from services.earn.handlers import Changes
from services.earn.jobs import SOURCE as BIRTHDAYS
from services.earn.programme import Programme
from services.earn.refunds import Order
from services.earn.repository import BudgetKey, CapKey, NewOrder
from shared import keys
from shared.contracts.base import Contract
from shared.contracts.ledger_commands import Cause, LedgerCommand, PostCredit
from shared.contracts.purchases import PurchaseRefunded
from shared.contracts.tasks import PointsAwarded
from shared.envelope import CloudEvent
from shared.programmes import Catalogue
from shared.subscription import Inbound

MemberKey = tuple[str, str]  # (program_id, member_id)
# The tier a purchase gets, when the caller knows better than the tier history (None: the history decides).
class Unknown:
    """A tier source's "I cannot say": the purchase's tier comes from the announcements earn heard."""


UNKNOWN = Unknown()
TierOf = Callable[[str, str, datetime], MemberTier | Unknown | None]


def inbound(event: CloudEvent, data: Contract) -> Inbound[Contract]:
    """An event as the handler takes it; a replay has no Kafka record."""
    return Inbound(cast(Any, None), event, data)


@dataclass
class Member:
    birthday: str | None
    birthday_set_at: datetime | None


class Memory(Changes):
    """Earn's state in memory, one object for the whole replay (the service's tables, as `Changes` reads and writes
    them): orders with their refunds, tier histories, caps and budgets used, capped rule uses, check-in days,
    enrolments and manual awards. What the handler emits is collected in `sent` (drained by the caller), what it
    refuses counted in `refused` by reason.

    `tier_of`, when given, answers a purchase's tier before the history does (the tier earn recorded, or the
    draft's simulated tiers, or None: it knows the purchase had none); `UNKNOWN` from it falls back to the history of
    announcements fed through `tier`."""

    def __init__(self, tier_of: TierOf | None = None) -> None:  # no batch: the replay is one long batch
        self.recorded: dict[tuple[str, str], str] = {}
        self.tiers: dict[MemberKey, list[tuple[datetime, MemberTier]]] = {}
        self.orders: dict[tuple[str, str], tuple[Order, list[PurchaseRefunded]]] = {}
        self.sent: list[LedgerCommand] = []
        self.refused: Counter[str] = Counter()
        self.members: dict[MemberKey, Member] = {}
        self.by_birthday: dict[tuple[str, str], set[str]] = {}  # (program, MM-DD) → members
        self.birthdays_paid: set[tuple[str, str, int]] = set()
        self._tier_of = tier_of
        self._caps: dict[CapKey, int] = {}
        self._budgets: dict[BudgetKey, int] = {}
        self._rule_uses: dict[tuple[str, str, str, str], int] = {}
        self._checkins: dict[MemberKey, set[date]] = {}
        self._awards: dict[tuple[str, str], str] = {}

    def reject(self, item: Inbound[Contract], reason: str, detail: str) -> None:
        self.refused[reason] += 1

    def emit(self, cmd: LedgerCommand, at: datetime, subject: str) -> None:
        self.sent.append(cmd)

    def recorded_by(self, program_id: str, order_id: str) -> str | None:
        return self.recorded.get((program_id, order_id))

    def tier_at(self, program_id: str, member_id: str, at: datetime) -> MemberTier | None:
        if self._tier_of is not None:
            told = self._tier_of(program_id, member_id, at)
            if not isinstance(told, Unknown):
                return told
        return tier_at(self.tiers.get((program_id, member_id), ()), at)

    async def add_tier(self, program_id: str, member_id: str, at: datetime, event_id: str, tier: MemberTier) -> None:
        history = self.tiers.setdefault((program_id, member_id), [])
        history.append((at, tier))
        if len(history) > 1 and history[-2][0] > at:
            history.sort(key=lambda held: held[0])

    async def record_award(self, award: PointsAwarded, event_id: str, source: str, at: datetime) -> str | None:
        key = (award.program_id, award.award_id)
        if key in self._awards:
            return self._awards[key]
        self._awards[key] = event_id
        return None

    async def check_in(self, program_id: str, member_id: str, day: date, event_id: str,
                       lookback_days: int) -> set[date] | None:
        days = self._checkins.setdefault((program_id, member_id), set())
        if day in days:
            return None
        since = day - timedelta(days=lookback_days)
        earlier = {d for d in days if since <= d < day}
        days.add(day)
        return earlier

    async def enrol(self, program_id: str, member_id: str, birthday: str | None, enrolled_at: datetime,
                    at: datetime) -> None:
        # As repository.enrol's upsert: the birthday kept unless a new one is given; its set time moves only when
        # it changes.
        key = (program_id, member_id)
        member = self.members.get(key)
        if member is None:
            self.members[key] = Member(birthday, at if birthday is not None else None)
        elif birthday is not None and birthday != member.birthday:
            if member.birthday is not None:
                self.by_birthday.get((program_id, member.birthday), set()).discard(member_id)
            member.birthday, member.birthday_set_at = birthday, at
        else:
            return
        if birthday is not None:
            self.by_birthday.setdefault((program_id, birthday), set()).add(member_id)

    async def use_rule(self, program_id: str, member_id: str, rule_id: str, period: str, cap: int) -> bool:
        key = (program_id, member_id, rule_id, period)
        used = self._rule_uses.get(key, 0)
        if used >= cap:
            return False
        self._rule_uses[key] = used + 1
        return True

    async def record_capped(self, program_id: str, member_id: str, rule_id: str, event_id: str, period: str,
                            why: str, at: datetime) -> None:
        return None  # the service keeps it for support; nothing the replay reads

    async def take_cap(self, key: CapKey, wanted: int, limit: int) -> int:
        given = granted(wanted, self._caps.get(key, 0), limit)
        if given:
            self._caps[key] = self._caps.get(key, 0) + given
        return given

    async def take_budget(self, key: BudgetKey, wanted: int, limit: int) -> int:
        given = granted(wanted, self._budgets.get(key, 0), limit)
        if given:
            self._budgets[key] = self._budgets.get(key, 0) + given
        return given

    def add_order(self, new: NewOrder) -> None:
        self.recorded[(new.program_id, new.order.order_id)] = new.event_id
        self.orders[(new.program_id, new.order.order_id)] = (new.order, [])

    async def order(self, program_id: str, order_id: str) -> tuple[Order, list[PurchaseRefunded]] | None:
        return self.orders.get((program_id, order_id))

    async def add_refund(self, program_id: str, refund: PurchaseRefunded, event_id: str, taken_back: dict[str, int],
                         at: datetime) -> None:
        return None  # the handler appends the refund to its order's list, which is the state itself here

    async def flush(self) -> None:
        return None

    def fork(self, into: Memory) -> None:
        """Give `into` a copy of this state (what the service's tables would hold now), each part copied as deep
        as the handler writes into it: orders are frozen, their refund lists grow; members change."""
        into.recorded = dict(self.recorded)
        into.tiers = {key: list(history) for key, history in self.tiers.items()}
        into.orders = {key: (order, list(refunds)) for key, (order, refunds) in self.orders.items()}
        into.refused = Counter(self.refused)
        into.members = {key: Member(m.birthday, m.birthday_set_at) for key, m in self.members.items()}
        into.by_birthday = {key: set(members) for key, members in self.by_birthday.items()}
        into.birthdays_paid = set(self.birthdays_paid)
        into._caps, into._budgets = dict(self._caps), dict(self._budgets)
        into._rule_uses = dict(self._rule_uses)
        into._checkins = {key: set(days) for key, days in self._checkins.items()}
        into._awards = dict(self._awards)

    def drain(self) -> list[LedgerCommand]:
        sent, self.sent = self.sent, []
        return sent


@dataclass
class Birthdays:
    """Earn's birthday job over `Memory`'s members: `due(now)` is one round of the job at `now` for every programme
    of `catalogue` with a birthday rule, as services/earn/jobs.py's page does it (a member due is marked paid for the
    year whether or not the bonus pays, as the job does)."""

    catalogue: Catalogue[Programme]
    memory: Memory
    program_ids: list[str] = field(default_factory=list)

    def due(self, now: datetime) -> list[PostCredit]:
        credits: list[PostCredit] = []
        for program_id in self.program_ids:
            programme = self.catalogue.at(program_id, now)
            if programme is None or programme.activity.birthday is None:
                continue
            local = now.astimezone(programme.zone)
            for day in birthday_days(local):
                for member_id in sorted(self.memory.by_birthday.get((program_id, day), ())):
                    paid = (program_id, member_id, local.year)
                    if paid in self.memory.birthdays_paid:
                        continue
                    self.memory.birthdays_paid.add(paid)
                    member = self.memory.members[(program_id, member_id)]
                    # As the job: the member's arm of every experiment running now may change the bonus.
                    theirs, arms = self.catalogue.for_member(program_id, member_id, now)
                    bonus = theirs.activity.birthday
                    if bonus is None or member.birthday is None or member.birthday_set_at is None or not (
                            birthday_pays(bonus, member.birthday, member.birthday_set_at, now, programme.zone)):
                        continue
                    key = keys.birthday_credit(program_id, member_id, local.year)
                    credits.append(PostCredit(
                        idempotency_key=key, program_id=program_id, member_id=member_id, amount=bonus.points,
                        occurred_at=now, available_at=now, expires_at=expires_at(theirs, now),
                        cause=Cause(source_event_id=keys.cause_of(BIRTHDAYS, key), rule_id=bonus.rule_id,
                                    rule_version=programme.version, reason="birthday", arms=arms or None),
                        details={"rule": {"rule_id": bonus.rule_id, "points": bonus.points, "why": "birthday"}}))
        return credits
