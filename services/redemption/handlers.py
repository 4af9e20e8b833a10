"""Redemption's consumers: the ledger's answers to its holds settle redemptions and payments; tier changes and
blocks keep its projection of members; refunds of orders paid with points give points back.

Each handler loads what its run of events needs in a few queries into the batch's `Changes`, the kit calls one
method per event by its type, and `store` writes the changes with one statement per table."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from services.redemption import codes, domain, events, paying, repository
from services.redemption.domain import Command, Coupon, Outcome, Redemption
from services.redemption.metrics import RedemptionMetrics
from services.redemption.paying import Payment
from services.redemption.programme import RedemptionProgramme
from services.redemption.repository.members import MemberKey
from shared import keys
from shared.contracts.ledger_entries import CommandRejected, HoldPlaced, HoldResolved
from shared.contracts.members import MemberBlocked, MemberUnblocked
from shared.contracts.purchases import PurchaseRefunded
from shared.contracts.tiers import TierChanged
from shared.programmes import Catalogue
from shared.subscription import Batch, Handler, Inbound
from shared.uow import UnitOfWork
from shared.waiting import announce

WHY_RELEASED = {"expired": ("hold_expired", "the hold timed out before it was captured"),
                "released": ("hold_released", "the hold was released before it was captured")}


@dataclass(frozen=True, slots=True)
class Answer:
    """A ledger outcome about one of our holds: whose (a redemption or a payment), to which command, and what.
    Each constructor returns None for another service's holds and commands."""

    owner: keys.Owner
    owner_id: str
    command: Command
    outcome: Outcome
    reason: str = ""
    detail: str = ""
    captured: int = 0
    expires_at: datetime | None = None

    @classmethod
    def placed(cls, hold: HoldPlaced) -> Answer | None:
        held = keys.parse_hold(hold.hold_id)
        return cls(held.owner, held.owner_id, "hold", "placed", expires_at=hold.expires_at) if held else None

    @classmethod
    def resolved(cls, hold: HoldResolved) -> Answer | None:
        held = keys.parse_hold(hold.hold_id)
        if held is None:
            return None
        return cls(held.owner, held.owner_id, "capture" if hold.outcome == "captured" else "hold", hold.outcome,
                   captured=hold.captured)

    @classmethod
    def refused(cls, rejection: CommandRejected) -> Answer | None:
        held = keys.parse_redemption_command(rejection.idempotency_key)
        if held is None or held.command is None:
            return None
        return cls(held.owner, held.owner_id, held.command, "refused", rejection.reason, rejection.detail)


@dataclass
class Changes:
    """What one batch changes, to be stored with one statement per table (`store`)."""

    batch: Batch
    now: datetime
    redemptions: dict[str, Redemption] = field(default_factory=dict)
    payments: dict[str, Payment] = field(default_factory=dict)
    coupons: dict[str, Coupon] = field(default_factory=dict)  # by redemption
    issued: list[tuple[Coupon, bytes, bytes]] = field(default_factory=list)
    voided: list[str] = field(default_factory=list)
    stock_back: list[tuple[str, str, int]] = field(default_factory=list)
    captured_payments: list[Payment] = field(default_factory=list)
    cancel_errors: list[tuple[str, str]] = field(default_factory=list)
    changed: set[str] = field(default_factory=set)
    woken: set[str] = field(default_factory=set)  # settled, or moved in a way a waiting request answers
    paid_orders: dict[MemberKey, Payment] = field(default_factory=dict)  # live payments of refunded orders
    refunds: list[tuple[str, str, Decimal, datetime]] = field(default_factory=list)
    tiers: dict[MemberKey, tuple[str, datetime]] = field(default_factory=dict)
    blocks: dict[MemberKey, tuple[bool, str, datetime]] = field(default_factory=dict)
    counted: list[Callable[[], None]] = field(default_factory=list)

    @property
    def uow(self) -> UnitOfWork:
        return self.batch.uow


class Stores(Handler[Changes]):
    """What redemption's handlers share: one change object, written the same way."""

    async def store(self, changes: Changes) -> None:
        uow, now = changes.uow, changes.now
        await repository.members.store_tiers(uow.db, [(p, m, tier, at) for (p, m), (tier, at)
                                                      in changes.tiers.items()])
        await repository.members.store_blocks(uow.db, [(p, m, b, why, at) for (p, m), (b, why, at)
                                                       in changes.blocks.items()])
        await repository.coupons.insert_coupons(uow.db, changes.issued)
        await repository.redemptions.update_redemptions(uow.db, [r for r in changes.redemptions.values()
                                                                 if r.redemption_id in changes.changed])
        await repository.payments.update_payments(uow.db, [p for p in changes.payments.values()
                                                           if p.payment_id in changes.changed])
        await repository.coupons.void_coupons(uow.db, changes.voided, now)
        await repository.stock.give_back_stock(uow.db, changes.stock_back)
        await repository.redemptions.note_cancel_errors(uow.db, changes.cancel_errors)
        fresh = {payment_id for payment_id, _ in await repository.payments.add_refunds(uow.db, changes.refunds)}
        refunded = [p for p in changes.paid_orders.values() if p.payment_id in fresh and p.status == "captured"]
        await return_refunded(uow, [*changes.captured_payments, *refunded], now)
        await announce(uow, sorted(changes.woken))
        uow.after_commit.extend(changes.counted)


@dataclass
class SettleHolds(Stores):
    """The ledger's answers to redemption and payment holds. A hold placed for a redemption issues its coupon (or
    marks its goods for fulfilment) and captures the hold; the capture completes it; a refused or timed-out hold
    rejects it and gives its stock back. Payments are authorised, captured, voided or expired the same way."""

    metrics: RedemptionMetrics
    clock: Callable[[], datetime]
    coupon_key: bytes

    async def load(self, batch: Batch) -> Changes:
        answers = [a for a in (*(Answer.placed(i.data) for i in batch.of(HoldPlaced)),
                               *(Answer.resolved(i.data) for i in batch.of(HoldResolved)),
                               *(Answer.refused(i.data) for i in batch.of(CommandRejected))) if a is not None]
        if len(answers) < len(batch.items):
            self.metrics.ignored.labels("other_hold").inc(len(batch.items) - len(answers))
        changes = Changes(batch, self.clock())
        db = batch.uow.db
        redeem_ids = [a.owner_id for a in answers if a.owner == "redeem"]
        changes.redemptions = await repository.redemptions.redemptions_for_update(db, redeem_ids)
        changes.coupons = {rid: c for rid, (c, _) in (await repository.coupons.coupons_of(db, redeem_ids)).items()}
        changes.payments = await repository.payments.payments_for_update(db, [a.owner_id for a in answers
                                                                              if a.owner == "pay"])
        return changes

    async def placed(self, item: Inbound[HoldPlaced], changes: Changes) -> None:
        self._settle(item, Answer.placed(item.data), changes)

    async def resolved(self, item: Inbound[HoldResolved], changes: Changes) -> None:
        self._settle(item, Answer.resolved(item.data), changes)

    async def refused(self, item: Inbound[CommandRejected], changes: Changes) -> None:
        self._settle(item, Answer.refused(item.data), changes)

    def _settle(self, item: Inbound[HoldPlaced | HoldResolved | CommandRejected], answer: Answer | None,
                changes: Changes) -> None:
        if answer is None:  # another service's hold or command: counted in `load`
            return
        if answer.owner == "redeem":
            self._redemption(changes, item.event.time, answer)
        else:
            self._payment(changes, answer)

    def _redemption(self, changes: Changes, at: datetime, answer: Answer) -> None:
        r = changes.redemptions.get(answer.owner_id)
        if r is None:
            changes.counted.append(self.metrics.ignored.labels("unknown_redemption").inc)
            return
        if answer.outcome == "refused" and answer.command == "cancel":
            changes.cancel_errors.append((r.redemption_id, f"{answer.reason}: {answer.detail}"))
            changes.counted.append(self.metrics.ledger_refusals.labels(r.program_id, answer.reason).inc)
            return
        step = domain.step_of(r, answer.outcome, answer.command)
        if step is None:
            return
        uow, now = changes.uow, changes.now
        changes.changed.add(r.redemption_id)
        if step == "capture":
            r.held_at, r.hold_expires_at = at, answer.expires_at
            if r.reward is not None and r.reward.coupon is not None and r.redemption_id not in changes.coupons:
                changes.coupons[r.redemption_id] = self._issue(changes, r)
            events.capture(uow, r, now)
            return
        r.settled_at = now
        changes.woken.add(r.redemption_id)
        coupon = changes.coupons.get(r.redemption_id)
        if step == "complete":
            r.status = "completed"
            events.completed(uow, r, coupon, now)
            held = (at - r.held_at).total_seconds() if r.held_at is not None else None
            asked = (now - r.created_at).total_seconds()
            changes.counted += [self.metrics.redemptions.labels(r.program_id, r.reward_id, "completed").inc,
                                lambda: self.metrics.points.labels(r.program_id, "redeemed").inc(r.points),
                                lambda: self.metrics.asked_to_settled.labels().observe(asked)]
            if held is not None:
                changes.counted.append(lambda: self.metrics.hold_to_capture.labels().observe(max(0.0, held)))
            return
        r.status = "rejected"
        r.reason, r.detail = (answer.reason, answer.detail) if answer.outcome == "refused" else WHY_RELEASED.get(
            answer.outcome, ("hold_released", answer.outcome))
        changes.stock_back.append((r.program_id, r.reward_id, r.stock_taken))
        if coupon is not None:
            coupon.state = "void"
            changes.voided.append(coupon.coupon_id)
            changes.counted.append(self.metrics.coupons.labels(r.program_id, "voided").inc)
        events.rejected(uow, r, now)
        reason = r.reason
        changes.counted += [self.metrics.redemptions.labels(r.program_id, r.reward_id, "rejected").inc,
                            self.metrics.refusals.labels(r.program_id, "redeem", reason).inc]

    def _issue(self, changes: Changes, r: Redemption) -> Coupon:
        assert r.reward is not None and r.reward.coupon is not None
        terms = r.reward.coupon
        code = codes.new_code()
        coupon = Coupon(coupon_id=f"cp_{secrets.token_hex(10)}", redemption_id=r.redemption_id,
                        program_id=r.program_id, member_id=r.member_id, value=terms.value * r.quantity,
                        currency=terms.currency, issued_at=changes.now,
                        expires_at=domain.coupon_expiry(changes.now, terms.valid_days, ZoneInfo(r.timezone)))
        changes.issued.append((coupon, codes.code_hash(code), codes.seal(code, coupon.coupon_id, self.coupon_key)))
        changes.counted.append(self.metrics.coupons.labels(r.program_id, "issued").inc)
        return coupon

    def _payment(self, changes: Changes, answer: Answer) -> None:
        p = changes.payments.get(answer.owner_id)
        if p is None:
            changes.counted.append(self.metrics.ignored.labels("unknown_payment").inc)
            return
        if answer.outcome == "refused" and answer.command == "refund":
            changes.counted.append(self.metrics.ledger_refusals.labels(p.program_id, answer.reason).inc)
            return
        if answer.outcome == "placed":
            p.expires_at = answer.expires_at
            changes.changed.add(p.payment_id)
        status = paying.payment_after(p, answer.outcome, answer.command)
        if status is None:
            return
        uow, now = changes.uow, changes.now
        p.status = status
        changes.changed.add(p.payment_id)
        changes.woken.add(p.payment_id)
        if status == "authorised":
            changes.counted.append(self.metrics.payments.labels(p.program_id, status).inc)
            return
        p.settled_at = now
        if status == "captured":
            p.captured_points = answer.captured
            events.payment_captured(uow, p, now)
            changes.captured_payments.append(p)
            changes.counted.append(lambda: self.metrics.payment_points.labels(p.program_id, "captured").inc(
                p.captured_points))
        else:
            if status == "rejected":
                p.reason, p.detail = answer.reason, answer.detail
                changes.counted.append(self.metrics.refusals.labels(p.program_id, "pay", answer.reason).inc)
            events.payment_voided(uow, p, "voided" if status == "voided" else status, now)
        changes.counted.append(self.metrics.payments.labels(p.program_id, status).inc)


async def return_refunded(uow: UnitOfWork, captured: list[Payment], now: datetime) -> None:
    """For captured payments, give back what their refunds not yet answered are owed: the captured points in
    proportion to the share of the basket refunded, each refund its own reversal."""
    if not captured:
        return
    refunds = await repository.payments.refunds_of(uow.db, [p.payment_id for p in captured])
    answered: list[tuple[str, str, int]] = []
    for p in captured:
        refunded, returned = Decimal(0), 0
        for row in refunds[p.payment_id]:
            points = row["points"]
            if points is None:
                points = paying.points_to_return(p.captured_points, p.basket_total, refunded, row["total"], returned)
                answered.append((p.payment_id, row["refund_id"], points))
                if points:
                    events.refund_points(uow, p, row["refund_id"], points, now)
            refunded += row["total"]
            returned += points
    await repository.payments.set_refund_points(uow.db, answered)


@dataclass
class ReturnPaidPoints(Stores):
    """A refund of an order paid partly with points gives back the captured points in proportion; a refund that
    arrives before the capture is kept and answered when the capture is."""

    metrics: RedemptionMetrics
    clock: Callable[[], datetime]

    async def load(self, batch: Batch) -> Changes:
        changes = Changes(batch, self.clock())
        orders = [(i.data.program_id, i.data.order_id) for i in batch.of(PurchaseRefunded)]
        changes.paid_orders = await repository.payments.live_payments_of_orders(batch.uow.db, orders)
        return changes

    async def refund(self, item: Inbound[PurchaseRefunded], changes: Changes) -> None:
        refund = item.data
        paid = changes.paid_orders.get((refund.program_id, refund.order_id))
        if paid is None:
            self.metrics.ignored.labels("order_not_paid_with_points").inc()
            return
        if refund.currency != paid.currency:
            changes.batch.reject(item, "currency_not_accepted", f"order {refund.order_id} was paid in "
                                                                f"{paid.currency}; the refund is in {refund.currency}")
            return
        changes.refunds.append((paid.payment_id, refund.refund_id, refund.total, item.event.time))


@dataclass
class ProjectMembers(Stores):
    """Members' tiers (jifen.tiers) and blocks (jifen.members, from the sources the programme trusts), each kept as
    of the newest event that set it."""

    catalogue: Catalogue[RedemptionProgramme]
    clock: Callable[[], datetime]

    async def load(self, batch: Batch) -> Changes:
        return Changes(batch, self.clock())

    async def tier(self, item: Inbound[TierChanged], changes: Changes) -> None:
        key, at = (item.data.program_id, item.data.member_id), item.event.time
        if key not in changes.tiers or changes.tiers[key][1] <= at:
            changes.tiers[key] = (item.data.tier, at)

    async def blocked(self, item: Inbound[MemberBlocked], changes: Changes) -> None:
        self._block(item, True, changes)

    async def unblocked(self, item: Inbound[MemberUnblocked], changes: Changes) -> None:
        self._block(item, False, changes)

    def _block(self, item: Inbound[MemberBlocked | MemberUnblocked], blocked: bool, changes: Changes) -> None:
        data, at = item.data, item.event.time
        refused = self._block_refusal(item)
        if refused is not None:
            changes.batch.reject(item, *refused)
            return
        key = (data.program_id, data.member_id)
        if key not in changes.blocks or changes.blocks[key][2] <= at:
            changes.blocks[key] = (blocked, data.reason, at)

    def _block_refusal(self, item: Inbound[MemberBlocked | MemberUnblocked]) -> tuple[str, str] | None:
        data = item.data
        programme = self.catalogue.at(data.program_id, item.event.time)
        if programme is None:
            return "no_rule", f"no programme {data.program_id!r} is in effect at {item.event.time.isoformat()}"
        if item.event.source not in programme.rules.block_sources:
            return "untrusted_source", (f"source {item.event.source!r} may not block or unblock members (the "
                                        "programme's redemption.block_sources)")
        return None
