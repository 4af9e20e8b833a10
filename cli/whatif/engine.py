"""The what-if's replay: a programme's history, oldest first, through earn's own handler code in memory
(cli/whatif/earn.py) under the version in force and under a draft, side by side in one pass, with the tiers and
referral services simulated beside it (cli/whatif/tiers.py, cli/whatif/referral.py). Nothing is written.

The replay starts at the programme's first event, not at `start`: what happens before the period is a warm-up that
builds each side's state (caps, budgets, streaks, tiers, enrolments, orders later refunded); only what happens in
[start, end) is counted. The draft is laid into a temporary copy of the programme folder as a version above the
others taking effect at `start`, so it judges every event of the period and the versions in force judge the warm-up.

Tiers: unless the draft changes the `tiers` section, both sides give a purchase the tier earn recorded
(`cause.tier` on its ledger entries, when the history carries them within `LOOKAHEAD`), else the tier earn's own
history of the tiers service's announcements gives at the purchase's time. A draft that changes tiers moves its
members with `TierSim` fed with its own purchases and credits, and earns with the multipliers that gives.

Redemptions and expiry are as they happened (result.ASSUMPTION), from the history's ledger entries.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import AsyncIterable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any, cast

import yaml
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from cli.whatif.earn import UNKNOWN, Birthdays, Memory, TierOf, Unknown, inbound
from cli.whatif.referral import ReferralAward, ReferralSim
from cli.whatif.result import Comparison, Side
from cli.whatif.tiers import TierSim
from services.earn.domain import MemberTier
from services.earn.handlers import EarnFromEvents
from services.earn.metrics import EarnMetrics
from services.earn.programme import Programme
from services.referral.programme import ReferralProgramme
from services.tiers.programme import TiersProgramme
from shared import deltas
from shared.contracts import topics
from shared.contracts.base import Contract
from shared.contracts.ledger_commands import LedgerCommand, PostCredit, ReverseEntry
from shared.contracts.ledger_entries import PointsEntryPosted
from shared.contracts.purchases import PurchaseCompleted, PurchaseRefunded
from shared.contracts.tiers import TierChanged
from shared.envelope import CloudEvent
from shared.programmes import Catalogue, ProgrammeVersion

CONTRACTS = topics.contracts()
# How far ahead of an event the replay reads before judging it, to see the ledger entries of a purchase (posted a
# moment after it) and so the tier earn recorded on them.
LOOKAHEAD = timedelta(minutes=5)
PROGRESS_EVERY = 100_000
HOUR = timedelta(hours=1)
Progress = Callable[[int, float], None]  # events replayed, seconds since the start


class DraftError(ValueError):
    """A draft that cannot be laid over the folder (the message says why)."""


# --- the draft laid into a copy of the folder ------------------------------------------------------------------------


def _raw(path: Path) -> dict[str, Any]:
    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict):
        raise DraftError(f"{path}: a programme file must be a mapping")
    return raw


def _resolved(raw: dict[str, Any], by_version: dict[int, dict[str, Any]], path: Path) -> dict[str, Any]:
    """A version with `based_on` merged over its base (itself resolved), as the loader merges it."""
    base_version = raw.get("based_on")
    if base_version is None:
        return raw
    base = by_version.get(base_version)
    if base is None:
        raise DraftError(f"{path}: based_on {base_version}: no such version of {raw.get('program_id')!r}")
    merged = deltas.merge(_resolved(base, by_version, path), {k: v for k, v in raw.items() if k != "based_on"})
    merged.pop("based_on", None)
    return merged


def lay_draft(folder: Path, draft: Path, program_id: str, start: datetime, into: Path) -> tuple[int, list[str]]:
    """Copy the folder's programme files into `into` with the draft as a version of `program_id` above the others,
    effective from `start` (merged over its `based_on`, so it reads the same to every loader); the programme's
    versions that took effect from `start` on are left out, since the draft judges the whole period. Returns the
    draft's version number and the notes saying so."""
    raws = {path: _raw(path) for path in sorted(folder.glob("*.y*ml"))}
    mine = {raw["version"]: raw for raw in raws.values() if raw.get("program_id") == program_id}
    resolved = {version: _resolved(raw, mine, folder) for version, raw in mine.items()}
    delta = _raw(draft)
    if delta.get("program_id", program_id) != program_id:
        raise DraftError(f"{draft}: the draft is of programme {delta['program_id']!r}, not {program_id!r}")
    if "based_on" not in delta and not mine and "program_id" not in delta:
        raise DraftError(f"{draft}: programme {program_id!r} has no version to base the draft on")
    version = max(mine, default=0) + 1
    laid = _resolved(delta, resolved, draft)
    laid.update(program_id=program_id, version=version, effective_from=start)
    notes = [f"the draft ({draft.name}) judges every event from {start.isoformat()}, laid in as version {version} "
             f"of {program_id!r} effective from the period's start; the versions in force judge the warm-up"]
    replaced = []
    for path, raw in raws.items():
        if raw.get("program_id") == program_id and _aware(raw["effective_from"]) >= start:
            replaced.append(raw["version"])
            continue
        if raw.get("program_id") == program_id:
            raw = resolved[raw["version"]]
        (into / path.name).write_text(yaml.safe_dump(raw, sort_keys=False))
    if replaced:
        notes.append(f"version(s) {', '.join(map(str, sorted(replaced)))} of {program_id!r}, taking effect in the "
                     "period, are replaced by the draft on its side")
    (into / f"zz-whatif-draft-{program_id}.yaml").write_text(yaml.safe_dump(laid, sort_keys=False))
    return version, notes


def _aware(value: Any) -> datetime:
    when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    if when.tzinfo is None:
        raise DraftError(f"effective_from {value!r} has no UTC offset")
    return when


def _catalogue(folder: Path, model: type[Any]) -> Catalogue[Any]:
    catalogue = Catalogue.load(folder, model)
    catalogue.check_every_s = float("inf")  # the copy does not change during a replay
    return catalogue


# --- one side -------------------------------------------------------------------------------------------------------


@dataclass
class _Replay:
    """One programme's side: earn's handler over its own memory, its birthdays, and the tiers and referral
    simulations it feeds (shared with the other side when the draft leaves that section as it is)."""

    side: Side
    earn: EarnFromEvents
    memory: Memory
    birthdays: Birthdays
    start: datetime
    end: datetime
    tiers: TierSim | None = None  # fed by this side (None: the other side feeds the shared one)
    takes_announcements: bool = True  # earn's tier history fed with the tiers service's announcements
    net_total: int = 0  # net points issued over the whole replay (the warm-up too)
    rewarded: set[str] = field(default_factory=set)
    # Points for the tiers simulation, held until every side has judged the event: (program, member, at, amount,
    # kind, entry, corrects).
    pending: list[tuple[str, str, datetime, int, str, str, str | None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.methods = self.earn.methods()

    async def feed(self, event: CloudEvent, data: Contract) -> None:
        """Earn's handler on the event; what it moves of the tiers waits for `simulate`."""
        method = self.methods.get(type(data))
        if method is not None and (self.takes_announcements or not isinstance(data, TierChanged)):
            await method(inbound(event, data), self.memory)
            for cmd in self.memory.drain():
                self.count(cmd)

    def simulate(self, event: CloudEvent | None = None, data: Contract | None = None) -> None:
        """The event and the points counted since, to the tiers simulation: after every side's earn has judged the
        event, so a purchase's own upgrade reaches earn after it, as the tiers service's announcement does."""
        if self.tiers is None:
            return
        if event is not None and data is not None:
            self.tiers.feed(event, data)
        for program_id, member_id, at, amount, kind, entry, corrects in self.pending:
            self.tiers.points(program_id, member_id, at, amount, kind, entry=entry, corrects=corrects)
        self.pending.clear()

    def count(self, cmd: LedgerCommand) -> None:
        counted = self.start <= cmd.occurred_at < self.end
        rule = cmd.cause.rule_id or ""
        if isinstance(cmd, PostCredit):
            self.net_total += cmd.amount
            if counted:
                self.side.issued_by_rule[rule] += cmd.amount
                self.side.by_member[cmd.member_id] += cmd.amount
            self.pending.append((cmd.program_id, cmd.member_id, cmd.occurred_at, cmd.amount, "earn",
                                 cmd.idempotency_key, None))
        elif isinstance(cmd, ReverseEntry):
            amount = cmd.amount or 0  # earn's reversals always say how much
            self.net_total -= amount
            if counted:
                self.side.taken_back_by_rule[rule] += amount
                self.side.by_member[cmd.member_id] -= amount
            self.pending.append((cmd.program_id, cmd.member_id, cmd.occurred_at, -amount, "reversal",
                                 cmd.idempotency_key, cmd.entry_key))

    def award(self, award: ReferralAward) -> None:
        counted = self.start <= award.at < self.end
        self.net_total += award.points
        if counted:
            if award.outcome == "rewarded":
                self.side.issued_by_rule[award.rule_id] += award.points
                self.side.referral_points += award.points
                self.rewarded.add(award.referral_id)
            else:
                self.side.taken_back_by_rule[award.rule_id] -= award.points
                self.side.referral_points += award.points
            self.side.by_member[award.member_id] += award.points
        kind, entry = ("earn", award.credit) if award.outcome == "rewarded" else (
            "reversal", f"{award.credit}:reversed:{award.at.isoformat()}")
        self.pending.append((award.program_id, award.member_id, award.at, award.points, kind, entry,
                             award.credit if award.outcome == "revoked" else None))


# --- the run ----------------------------------------------------------------------------------------------------------


@dataclass
class _Ledger:
    """What the history's ledger entries say happened: redemptions and expiry in the period, each member's balance
    at its end, and the tier earn recorded on each purchase's credits."""

    start: datetime
    end: datetime
    seen: bool = False
    redeemed: int = 0
    expired: int = 0
    issued: int = 0  # earn credits less their reversals, in the period (the observed redemption rate's base)
    balances: dict[str, tuple[int, int]] = field(default_factory=dict)  # member → (seq, balance_after)
    recorded_tiers: dict[str, str] = field(default_factory=dict)  # purchase event id → the tier earn applied
    credited: set[str] = field(default_factory=set)  # events earn credited (their entries say which tier, or none)

    def index(self, entry: PointsEntryPosted) -> None:
        if entry.kind != "earn":
            return
        self.credited.add(entry.cause.source_event_id)
        tier = getattr(entry.cause, "tier", None)
        if tier:
            self.recorded_tiers[entry.cause.source_event_id] = tier

    def add(self, entry: PointsEntryPosted) -> None:
        self.seen = True
        if entry.occurred_at < self.end:
            held = self.balances.get(entry.member_id)
            if held is None or held[0] < entry.seq:
                self.balances[entry.member_id] = (entry.seq, entry.balance_after)
        if not self.start <= entry.occurred_at < self.end:
            return
        if entry.kind == "redeem":
            self.redeemed -= entry.amount
        elif entry.kind in ("reversal", "cancel") and entry.amount > 0:
            self.redeemed -= entry.amount  # a redemption given back
        elif entry.kind == "expire":
            self.expired -= entry.amount
        elif entry.kind in ("earn", "reversal", "cancel"):
            self.issued += entry.amount  # a reversal taking points out corrects a credit

    @property
    def liability(self) -> int:
        return sum(balance for _, balance in self.balances.values())

    def rate(self) -> Decimal | None:
        if self.issued <= 0:
            return None
        return (Decimal(self.redeemed) / Decimal(self.issued)).quantize(Decimal("0.0001"), ROUND_HALF_UP)


def _sections_differ(live: Catalogue[Any], draft: Catalogue[Any], program_id: str, section: str, start: datetime,
                     end: datetime) -> bool:
    """Whether the draft's `section` differs from that of any version in force during the period."""
    mine = draft.at(program_id, start)
    theirs = [v for v in live.versions.get(program_id, ()) if v.effective_from < end]
    in_force = [v for v in theirs if v.effective_from > start]
    first = live.at(program_id, start)
    if first is not None:
        in_force.append(first)
    if mine is None or not in_force:
        return mine is not None and getattr(mine, section) is not None
    return any(getattr(v, section) != getattr(mine, section) for v in in_force)


def _side(label: str, catalogue: Catalogue[Programme], program_id: str, start: datetime,
          version: int | None = None) -> Side:
    programme = catalogue.at(program_id, start) or next(iter(catalogue.versions.get(program_id, ())), None)
    header: ProgrammeVersion | None = programme
    return Side(label, version if version is not None else (header.version if header else None),
                header.point_value if header else None, header.currency if header else None)


async def _events(events: AsyncIterable[CloudEvent] | Iterable[CloudEvent]) -> AsyncIterable[CloudEvent]:
    if isinstance(events, AsyncIterable):
        async for event in events:
            yield event
    else:
        for event in events:
            yield event


async def run(events: AsyncIterable[CloudEvent] | Iterable[CloudEvent], *, program_id: str, folder: Path,
              draft: Path | None, start: datetime, end: datetime, source: str = "events",
              progress: Progress | None = None, lookahead: timedelta = LOOKAHEAD, borrowed: bool = False
              ) -> Comparison:
    """Replay `events` (the programme's history, oldest first, from its first event) under the versions of `folder`
    and under `draft` in their place from `start` (None: the versions in force on both sides), counting what falls
    in [start, end). `borrowed`: the history is another programme's (`--history-of`), so its balances are not this
    programme's: the liability at the end is each side's own net points less what was redeemed and expired."""
    with TemporaryDirectory(prefix="jifen-whatif-") as tmp:
        notes: list[str] = []
        draft_folder, draft_version = folder, None
        if draft is not None:
            draft_folder = Path(tmp)
            draft_version, laid = lay_draft(folder, draft, program_id, start, draft_folder)
            notes += laid
        else:
            notes.append("no draft: the versions in force on both sides")
        live_earn, draft_earn = _catalogue(folder, Programme), _catalogue(draft_folder, Programme)
        live_tiers, draft_tiers = _catalogue(folder, TiersProgramme), _catalogue(draft_folder, TiersProgramme)
        live_ref, draft_ref = _catalogue(folder, ReferralProgramme), _catalogue(draft_folder, ReferralProgramme)
        tiers_changed = _sections_differ(live_tiers, draft_tiers, program_id, "tiers", start, end)
        referral_changed = _sections_differ(live_ref, draft_ref, program_id, "referral", start, end)
        ledger = _Ledger(start, end)
        current: list[str] = [""]  # the event being judged, for the tier earn recorded on it
        announced = [False]  # whether the history has shown a tier announcement yet

        def recorded(memory: Memory) -> TierOf:
            def tier_of(program_id: str, member_id: str, at: datetime) -> MemberTier | Unknown | None:
                name = ledger.recorded_tiers.get(current[0])
                if name is None and current[0] in ledger.credited:
                    return None  # earn credited it and its entries name no tier: earn knew none then
                if name is None:
                    # No announcement yet in the history (a generated feed, another programme's, or a tiers
                    # service not running): the tiers as the service would have announced them.
                    return UNKNOWN if announced[0] else _announced(sims_live, program_id, member_id, at)
                for _, held in reversed(memory.tiers.get((program_id, member_id), ())):
                    if held.tier == name:
                        return held
                return UNKNOWN
            return tier_of

        sims_live = TierSim(live_tiers)
        live_memory = Memory()
        live_memory._tier_of = recorded(live_memory)
        live = _Replay(_side("in force", live_earn, program_id, start), _earn(live_earn), live_memory,
            Birthdays(live_earn, live_memory, [program_id]), start, end, tiers=sims_live)
        if tiers_changed:
            sims_draft = TierSim(draft_tiers)
            draft_memory = Memory(lambda p, m, at: _announced(sims_draft, p, m, at) or UNKNOWN)
            notes.append("the draft changes tiers: its members move between tiers by the tiers service's rules in "
                         "memory, fed with its own purchases and credits, and earn with the multipliers that gives; "
                         "the version in force keeps the tiers earn applied")
        else:
            draft_memory = Memory()
            draft_memory._tier_of = recorded(draft_memory)
        replay_draft = _Replay(_side("draft", draft_earn, program_id, start, draft_version), _earn(draft_earn),
            draft_memory,
            Birthdays(draft_earn, draft_memory, [program_id]), start, end,
            tiers=sims_draft if tiers_changed else None, takes_announcements=not tiers_changed)
        sides = (live, replay_draft)
        referrals_live = ReferralSim(live_ref)
        referrals_draft = ReferralSim(draft_ref) if referral_changed else None

        revenue = Decimal(0)
        orders: set[str] = set()
        refunds: set[str] = set()
        replayed = 0
        started = time.monotonic()
        next_hour: datetime | None = None
        purchases = recorded_used = warm_up = 0

        # Before the period both sides judge every event by the same versions, so the draft's earn is not run: the
        # in-force side's state is copied to it at the period's start (`fork`), and until then its tiers
        # simulation is fed the in-force side's credits (`mirror`).
        forked = [False]

        def fork() -> None:
            if forked[0]:
                return
            forked[0] = True
            live_memory.fork(draft_memory)
            if tiers_changed:
                draft_memory.tiers = {}  # from the period on, the draft's tiers are its simulation's alone
            replay_draft.net_total = live.net_total

        def mirror() -> None:
            if not forked[0] and replay_draft.tiers is not None:
                replay_draft.pending += live.pending

        def awards(found: list[ReferralAward], only: _Replay | None = None) -> None:
            for award in found:
                for side in (only,) if only is not None else sides:
                    side.award(award)

        def clock(until: datetime) -> None:
            # The services' jobs up to `until`: earn's birthdays hourly, the tiers' review, referral expiry.
            nonlocal next_hour
            if next_hour is None:
                next_hour = until.replace(minute=0, second=0, microsecond=0)
            while next_hour <= until:
                if next_hour >= start:
                    fork()
                for side in sides if forked[0] else (live,):
                    for credit in side.birthdays.due(next_hour):
                        side.count(credit)
                next_hour += HOUR
            if until >= start:
                fork()
            if referrals_draft is None:
                awards(referrals_live.advance(until))
            else:
                awards(referrals_live.advance(until), live)
                awards(referrals_draft.advance(until), replay_draft)
            mirror()
            for side in sides:
                side.simulate()
            sims_live.advance(until)
            if tiers_changed:
                sims_draft.advance(until)

        async def judge(event: CloudEvent, data: Contract) -> None:
            nonlocal revenue, replayed, purchases, recorded_used, warm_up
            replayed += 1
            if progress is not None and replayed % PROGRESS_EVERY == 0:
                progress(replayed, time.monotonic() - started)
            if isinstance(data, PointsEntryPosted):
                ledger.add(data)
                return
            if event.time >= end:
                return
            clock(event.time)
            in_period = start <= event.time
            warm_up += not in_period
            if isinstance(data, PurchaseCompleted):
                purchases += in_period
                recorded_used += in_period and event.event_id in ledger.credited
                if in_period and data.order_id not in orders:
                    revenue += data.total
                orders.add(data.order_id)
            elif isinstance(data, PurchaseRefunded):
                if in_period and data.refund_id not in refunds:
                    revenue -= data.total
                refunds.add(data.refund_id)
            current[0] = event.event_id
            if isinstance(data, TierChanged):
                announced[0] = True
            for side in sides if forked[0] else (live,):
                await side.feed(event, data)
            if referrals_draft is None:
                awards(referrals_live.feed(event, data))
            else:
                awards(referrals_live.feed(event, data), live)
                awards(referrals_draft.feed(event, data), replay_draft)
            mirror()
            for side in sides:
                side.simulate(event, data)

        waiting: deque[tuple[CloudEvent, Contract]] = deque()
        undecodable: Counter[str] = Counter()
        async for event in _events(events):
            contract = CONTRACTS.get(event.type)
            if contract is None:
                undecodable[f"unknown type {event.type}"] += 1
                continue
            try:
                data = contract.model_validate(event.data)
            except ValidationError:
                undecodable[f"invalid {event.type}"] += 1
                continue
            if getattr(data, "program_id", None) != program_id:
                continue
            if isinstance(data, PointsEntryPosted):
                ledger.index(data)
            waiting.append((event, data))
            while waiting and waiting[0][0].time + lookahead < event.time:
                await judge(*waiting.popleft())
        while waiting:
            await judge(*waiting.popleft())
        clock(end - timedelta(microseconds=1))

        for side in sides:
            side.side.revenue = revenue
            side.side.redeemed, side.side.expired = ledger.redeemed, ledger.expired
            side.side.redemption_rate = ledger.rate()
            side.side.referrals_rewarded = len(side.rewarded)
        live.side.members_by_tier = sims_live.tiers_at(program_id, end)
        replay_draft.side.members_by_tier = (sims_draft if tiers_changed else sims_live).tiers_at(program_id, end)
        if borrowed:
            for side in (live, replay_draft):
                side.side.liability = max(0, side.net_total - ledger.redeemed - ledger.expired)
            notes.append("the history is another programme's: the liability at the end is each side's own net points "
                         "issued less the points redeemed and expired in that history (none below zero)")
        elif ledger.seen:
            live.side.liability = ledger.liability
            replay_draft.side.liability = ledger.liability + replay_draft.side.net_issued - live.side.net_issued
        else:
            live.side.liability, replay_draft.side.liability = live.net_total, replay_draft.net_total
            notes.append("the history has no ledger entries: nothing redeemed or expired, and the liability at the "
                         "end is what each side issued")
        notes.append(f"replayed from the programme's first event: {warm_up} event(s) before the period built the "
                     "state it starts with (caps, budgets, streaks, tiers, enrolments, orders refunded later)")
        if not tiers_changed and not announced[0]:
            notes.append("the history holds no tier announcements: both sides earn with the tiers the tiers "
                         "service's rules give in memory")
        elif not tiers_changed:
            notes.append(f"tiers as earn applied them: {recorded_used} of {purchases} purchase(s) of the period by "
                         "what their ledger entries say earn applied (a tier, or none), the rest by earn's history "
                         "of the tiers service's announcements at the purchase's time")
        if ledger.rate() is not None:
            notes.append(f"expected cost at the redemption rate observed in the period ({ledger.rate()}: points "
                         "redeemed ÷ net points issued, from the ledger), the same for both sides")
        for side in sides:
            if side.memory.refused:
                notes.append(f"{side.side.label}: events earn would refuse: " + ", ".join(
                    f"{n} {reason}" for reason, n in sorted(side.memory.refused.items())))
        notes += [f"referrals: {note}" for note in referrals_live.notes]
        if undecodable:
            notes.append("events left out: " + ", ".join(f"{n} {why}" for why, n in sorted(undecodable.items())))
        return Comparison(program_id, start, end, source, replayed, live.side, replay_draft.side, notes=notes)


class _Quiet:
    """A metric family that counts nothing: a replay's points are not the service's."""

    def labels(self, *_: str) -> _Quiet:
        return self

    def inc(self, amount: float = 1) -> None:
        return None


def _earn(catalogue: Catalogue[Programme]) -> EarnFromEvents:
    metrics = EarnMetrics(CollectorRegistry())
    metrics.points = metrics.skipped = cast(Any, _Quiet())  # Prometheus' labels() costs a tenth of a replay
    return EarnFromEvents(catalogue, metrics)


def _announced(sims: TierSim, program_id: str, member_id: str, at: datetime) -> MemberTier | None:
    move = sims.announced_at(program_id, member_id, at)
    return MemberTier(move.tier, move.multiplier) if move is not None else None
