"""Redemption's consumers: the ledger's answers to its holds settle redemptions and payments; tier changes and
blocks keep its projection of members; refunds of orders paid with points give points back."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, cast
from zoneinfo import ZoneInfo

from services.redemption import codes, domain, events, repository
from services.redemption.domain import Command, Coupon, Outcome, Payment, Redemption
from services.redemption.metrics import RedemptionMetrics
from services.redemption.programme import RedemptionProgramme
from shared.waiting import announce
from shared.contracts.base import Contract
from shared.contracts.ledger_entries import CommandRejected, HoldPlaced, HoldResolved
from shared.contracts.members import MemberBlocked, MemberUnblocked
from shared.contracts.purchases import PurchaseRefunded
from shared.contracts.tiers import TierChanged
from shared.programmes import Catalogue
from shared.subscription import Inbound, Rejections
from shared.uow import UnitOfWork

COMMANDS: frozenset[str] = frozenset({"hold", "capture", "void", "cancel", "refund"})
WHY_RELEASED = {"expired": ("hold_expired", "the hold timed out before it was captured"),
                "released": ("hold_released", "the hold was released before it was captured")}


@dataclass(frozen=True, slots=True)
class Answer:
    """A ledger outcome about one of our holds: whose (a redemption or a payment), to which command, and what."""

    owner: str  # redeem | pay
    owner_id: str
    command: Command
    outcome: Outcome
    reason: str = ""
    detail: str = ""
    captured: int = 0
    expires_at: datetime | None = None


def answer_of(data: Contract) -> Answer | None:
    """Our part of a ledger outcome; None for another service's holds and commands."""
    if isinstance(data, CommandRejected):
        parts = data.idempotency_key.split(":", 3)
        if len(parts) < 3 or parts[0] not in ("redeem", "pay") or parts[2] not in COMMANDS:
            return None
        return Answer(parts[0], parts[1], cast(Command, parts[2]), "refused", data.reason, data.detail)
    hold = cast(HoldPlaced | HoldResolved, data)
    owner, _, owner_id = hold.hold_id.partition(":")
    if owner not in ("redeem", "pay") or not owner_id:
        return None
    if isinstance(hold, HoldPlaced):
        return Answer(owner, owner_id, "hold", "placed", expires_at=hold.expires_at)
    command = cast(Command, "capture" if hold.outcome == "captured" else "hold")
    return Answer(owner, owner_id, command, hold.outcome, captured=hold.captured)


@dataclass
class Settling:
    """What one batch of outcomes changes, to be stored with one statement per table."""

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
    counted: list[Callable[[], None]] = field(default_factory=list)


@dataclass
class SettleHolds:
    """The ledger's answers to redemption and payment holds. A hold placed for a redemption issues its coupon (or
    marks its goods for fulfilment) and captures the hold; the capture completes it; a refused or timed-out hold
    rejects it and gives its stock back. Payments are authorised, captured, voided or expired the same way."""

    metrics: RedemptionMetrics
    clock: Callable[[], datetime]
    coupon_key: bytes

    async def __call__(self, items: list[Inbound[Contract]], uow: UnitOfWork, rejections: Rejections) -> None:
        answers = [(item, answer) for item in items if (answer := answer_of(item.data)) is not None]
        if len(answers) < len(items):
            self.metrics.ignored.labels("other_hold").inc(len(items) - len(answers))
        if not answers:
            return
        batch = Settling(self.clock())
        redeem_ids = [a.owner_id for _, a in answers if a.owner == "redeem"]
        batch.redemptions = await repository.redemptions_for_update(uow.db, redeem_ids)
        batch.coupons = {rid: c for rid, (c, _) in (await repository.coupons_of(uow.db, redeem_ids)).items()}
        batch.payments = await repository.payments_for_update(uow.db, [a.owner_id for _, a in answers
                                                                       if a.owner == "pay"])
        for item, answer in answers:
            if answer.owner == "redeem":
                self._redemption(uow, batch, item, answer)
            else:
                self._payment(uow, batch, answer)
        await repository.insert_coupons(uow.db, batch.issued)
        await repository.update_redemptions(uow.db, [r for r in batch.redemptions.values()
                                                     if r.redemption_id in batch.changed])
        await repository.update_payments(uow.db, [p for p in batch.payments.values() if p.payment_id in batch.changed])
        await repository.void_coupons(uow.db, batch.voided, batch.now)
        await repository.give_back_stock(uow.db, batch.stock_back)
        await repository.note_cancel_errors(uow.db, batch.cancel_errors)
        await return_refunded(uow, batch.captured_payments, batch.now)
        await announce(uow, sorted(batch.woken))
        uow.after_commit.extend(batch.counted)

    def _redemption(self, uow: UnitOfWork, batch: Settling, item: Inbound[Contract], answer: Answer) -> None:
        r = batch.redemptions.get(answer.owner_id)
        if r is None:
            batch.counted.append(self.metrics.ignored.labels("unknown_redemption").inc)
            return
        if answer.outcome == "refused" and answer.command == "cancel":
            batch.cancel_errors.append((r.redemption_id, f"{answer.reason}: {answer.detail}"))
            batch.counted.append(self.metrics.ledger_refusals.labels(r.program_id, answer.reason).inc)
            return
        step = domain.step_of(r, answer.outcome, answer.command)
        if step is None:
            return
        now = batch.now
        batch.changed.add(r.redemption_id)
        if step == "capture":
            r.held_at, r.hold_expires_at = item.event.time, answer.expires_at
            if r.reward is not None and r.reward.coupon is not None and r.redemption_id not in batch.coupons:
                batch.coupons[r.redemption_id] = self._issue(batch, r)
            events.capture(uow, r, now)
            return
        r.settled_at = now
        batch.woken.add(r.redemption_id)
        coupon = batch.coupons.get(r.redemption_id)
        if step == "complete":
            r.status = "completed"
            events.completed(uow, r, coupon, now)
            held = (item.event.time - r.held_at).total_seconds() if r.held_at is not None else None
            asked = (now - r.created_at).total_seconds()
            batch.counted += [self.metrics.redemptions.labels(r.program_id, r.reward_id, "completed").inc,
                              lambda: self.metrics.points.labels(r.program_id, "redeemed").inc(r.points),
                              lambda: self.metrics.asked_to_settled.labels().observe(asked)]
            if held is not None:
                batch.counted.append(lambda: self.metrics.hold_to_capture.labels().observe(max(0.0, held)))
            return
        r.status = "rejected"
        r.reason, r.detail = (answer.reason, answer.detail) if answer.outcome == "refused" else WHY_RELEASED.get(
            answer.outcome, ("hold_released", answer.outcome))
        batch.stock_back.append((r.program_id, r.reward_id, r.stock_taken))
        if coupon is not None:
            coupon.state = "void"
            batch.voided.append(coupon.coupon_id)
            batch.counted.append(self.metrics.coupons.labels(r.program_id, "voided").inc)
        events.rejected(uow, r, now)
        reason = r.reason
        batch.counted += [self.metrics.redemptions.labels(r.program_id, r.reward_id, "rejected").inc,
                          self.metrics.refusals.labels(r.program_id, "redeem", reason).inc]

    def _issue(self, batch: Settling, r: Redemption) -> Coupon:
        assert r.reward is not None and r.reward.coupon is not None
        terms = r.reward.coupon
        code = codes.new_code()
        coupon = Coupon(coupon_id=f"cp_{secrets.token_hex(10)}", redemption_id=r.redemption_id,
                        program_id=r.program_id, member_id=r.member_id, value=terms.value * r.quantity,
                        currency=terms.currency, issued_at=batch.now,
                        expires_at=domain.coupon_expiry(batch.now, terms.valid_days, ZoneInfo(r.timezone)))
        batch.issued.append((coupon, codes.code_hash(code), codes.seal(code, coupon.coupon_id, self.coupon_key)))
        batch.counted.append(self.metrics.coupons.labels(r.program_id, "issued").inc)
        return coupon

    def _payment(self, uow: UnitOfWork, batch: Settling, answer: Answer) -> None:
        p = batch.payments.get(answer.owner_id)
        if p is None:
            batch.counted.append(self.metrics.ignored.labels("unknown_payment").inc)
            return
        if answer.outcome == "refused" and answer.command == "refund":
            batch.counted.append(self.metrics.ledger_refusals.labels(p.program_id, answer.reason).inc)
            return
        if answer.outcome == "placed":
            p.expires_at = answer.expires_at
            batch.changed.add(p.payment_id)
        status = domain.payment_after(p, answer.outcome, answer.command)
        if status is None:
            return
        now = batch.now
        p.status = status
        batch.changed.add(p.payment_id)
        batch.woken.add(p.payment_id)
        if status == "authorised":
            batch.counted.append(self.metrics.payments.labels(p.program_id, status).inc)
            return
        p.settled_at = now
        if status == "captured":
            p.captured_points = answer.captured
            events.payment_captured(uow, p, now)
            batch.captured_payments.append(p)
            batch.counted.append(lambda: self.metrics.payment_points.labels(p.program_id, "captured").inc(
                p.captured_points))
        else:
            if status == "rejected":
                p.reason, p.detail = answer.reason, answer.detail
                batch.counted.append(self.metrics.refusals.labels(p.program_id, "pay", answer.reason).inc)
            events.payment_voided(uow, p, "voided" if status == "voided" else status, now)
        batch.counted.append(self.metrics.payments.labels(p.program_id, status).inc)


async def return_refunded(uow: UnitOfWork, captured: list[Payment], now: datetime) -> None:
    """For captured payments, give back what their refunds not yet answered are owed: the captured points in
    proportion to the share of the basket refunded, each refund its own reversal."""
    if not captured:
        return
    refunds = await repository.refunds_of(uow.db, [p.payment_id for p in captured])
    answered: list[tuple[str, str, int]] = []
    for p in captured:
        refunded, returned = Decimal(0), 0
        for row in refunds[p.payment_id]:
            points = row["points"]
            if points is None:
                points = domain.points_to_return(p.captured_points, p.basket_total, refunded, row["total"], returned)
                answered.append((p.payment_id, row["refund_id"], points))
                if points:
                    events.refund_points(uow, p, row["refund_id"], points, now)
            refunded += row["total"]
            returned += points
    await repository.set_refund_points(uow.db, answered)


@dataclass
class ReturnPaidPoints:
    """A refund of an order paid partly with points gives back the captured points in proportion; a refund that
    arrives before the capture is kept and answered when the capture is."""

    metrics: RedemptionMetrics
    clock: Callable[[], datetime]

    async def __call__(self, items: list[Inbound[Contract]], uow: UnitOfWork, rejections: Rejections) -> None:
        refunds = [(item, cast(PurchaseRefunded, item.data)) for item in items]
        live = await repository.live_payments_of_orders(uow.db, [(r.program_id, r.order_id) for _, r in refunds])
        rows: list[tuple[str, str, Decimal, datetime]] = []
        for item, refund in refunds:
            paid = live.get((refund.program_id, refund.order_id))
            if paid is None:
                self.metrics.ignored.labels("order_not_paid_with_points").inc()
                continue
            if refund.currency != paid.currency:
                rejections.reject(item, "currency_not_accepted", f"order {refund.order_id} was paid in "
                                                                 f"{paid.currency}; the refund is in {refund.currency}")
                continue
            rows.append((paid.payment_id, refund.refund_id, refund.total, item.event.time))
        fresh = {payment_id for payment_id, _ in await repository.add_refunds(uow.db, rows)}
        await return_refunded(uow, [p for p in live.values() if p.payment_id in fresh and p.status == "captured"],
                              self.clock())


@dataclass
class ProjectMembers:
    """Members' tiers (jifen.tiers) and blocks (jifen.members, from the sources the programme trusts), each kept as
    of the newest event that set it."""

    catalogue: Catalogue[RedemptionProgramme]

    async def __call__(self, items: list[Inbound[Contract]], uow: UnitOfWork, rejections: Rejections) -> None:
        tiers: dict[repository.MemberKey, tuple[str, datetime]] = {}
        blocks: dict[repository.MemberKey, tuple[bool, str, datetime]] = {}
        for item in items:
            data: Any = item.data
            key, at = (data.program_id, data.member_id), item.event.time
            if isinstance(data, TierChanged):
                if key not in tiers or tiers[key][1] <= at:
                    tiers[key] = (data.tier, at)
                continue
            refused = self._block_refusal(item)
            if refused is not None:
                rejections.reject(item, *refused)
            elif key not in blocks or blocks[key][2] <= at:
                blocks[key] = (isinstance(data, MemberBlocked), data.reason, at)
        await repository.store_tiers(uow.db, [(p, m, tier, at) for (p, m), (tier, at) in tiers.items()])
        await repository.store_blocks(uow.db, [(p, m, b, why, at) for (p, m), (b, why, at) in blocks.items()])

    def _block_refusal(self, item: Inbound[Contract]) -> tuple[str, str] | None:
        data = cast(MemberBlocked | MemberUnblocked, item.data)
        programme = self.catalogue.at(data.program_id, item.event.time)
        if programme is None:
            return "no_rule", f"no programme {data.program_id!r} is in effect at {item.event.time.isoformat()}"
        if item.event.source not in programme.rules.block_sources:
            return "untrusted_source", (f"source {item.event.source!r} may not block or unblock members (the "
                                        "programme's redemption.block_sources)")
        return None
