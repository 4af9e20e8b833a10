"""Redemption requests over HTTP: redeem (limits, stock and the hold in one transaction), cancel, show a redemption
(and its coupon's code: once, and again to the same request within the reveal window), list what a member may
redeem, add stock. Each is a function of a unit of work (a connection, for reads), the programme in force and the
time; what a rule refuses is raised as a `Refused`, which the HTTP edge answers with its status."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import asyncpg
import orjson

from services.redemption import codes, domain, events, repository
from services.redemption.domain import Coupon, MemberView, Redemption, Refused
from services.redemption.metrics import RedemptionMetrics
from services.redemption.programme import RedemptionProgramme, Reward
from shared import keys
from shared.uow import UnitOfWork


@dataclass(frozen=True, slots=True)
class Ask:
    program_id: str
    member_id: str
    reward_id: str
    quantity: int
    idempotency_key: str

    @property
    def digest(self) -> bytes:
        """What makes two requests with one key the same request: the body, with its defaults filled in."""
        body = {"member_id": self.member_id, "reward_id": self.reward_id, "quantity": self.quantity}
        return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).digest()


@dataclass(frozen=True, slots=True)
class Shown:
    """A redemption as answered: with its coupon, the coupon's code when this answer is the one that shows it, and
    whether the code has been shown (by this answer or an earlier one)."""

    redemption: Redemption
    coupon: Coupon | None = None
    code: str | None = None
    code_shown: bool = False
    fulfilment: str | None = None


def new_id() -> str:
    return f"rd_{secrets.token_hex(10)}"


async def redeem(uow: UnitOfWork, programme: RedemptionProgramme, ask: Ask, redemption_id: str,
                 metrics: RedemptionMetrics, now: datetime, arms: dict[str, str] | None = None) -> Redemption:
    """Record the redemption, pending with its stock reserved and its hold asked for, or rejected with the reason;
    the same key with the same body answers the redemption it made, with another body `idempotency_conflict`.
    `programme` is the member's (their arms' overrides applied: `Catalogue.for_member`) and `arms` those arms."""
    member = await repository.members.lock_member(uow.db, ask.program_id, ask.member_id)
    known = await repository.redemptions.redemption_by_key(uow.db, ask.program_id, ask.idempotency_key)
    if known is not None:
        return _replay(*known, ask)
    rules, zone = programme.rules, programme.zone
    reward = programme.reward(ask.reward_id)
    past = await repository.redemptions.history(uow.db, ask.program_id, ask.member_id,
                                    domain.history_since(reward, rules, now, zone))
    refused = domain.refusal(reward, ask.reward_id, ask.quantity, member, domain.usage(past, reward, rules, now, zone),
                             rules, now)
    taken = 0
    if refused is None and reward is not None and reward.stock is not None:
        if await repository.stock.take_stock(uow.db, ask.program_id, reward, ask.quantity):
            taken = ask.quantity
        else:
            refused = Refused("out_of_stock", f"{reward.reward_id!r} has fewer than {ask.quantity} left")
    r = _new(redemption_id, ask, reward, member, programme, taken, refused, now, arms or {})
    if not await repository.redemptions.insert_redemption(uow.db, r, member.tier, ask.idempotency_key, ask.digest):
        raise _conflict(ask)
    if refused is None:
        events.place_hold(uow, r, rules.hold_ttl_seconds, programme.version, now)
    else:
        events.rejected(uow, r, now)
        uow.after_commit.append(metrics.refusals.labels(ask.program_id, "redeem", refused.reason).inc)
    uow.after_commit.append(metrics.redemptions.labels(r.program_id, r.reward_id, r.status).inc)
    return r


def _new(redemption_id: str, ask: Ask, reward: Reward | None, member: MemberView, programme: RedemptionProgramme,
         taken: int, refused: Refused | None, now: datetime, arms: dict[str, str]) -> Redemption:
    return Redemption(
        redemption_id=redemption_id, program_id=ask.program_id, member_id=ask.member_id,
        reward_id=ask.reward_id, kind=reward.kind if reward is not None else "unknown", quantity=ask.quantity,
        points=reward.price(member.tier) * ask.quantity if reward is not None else 0,
        status="rejected" if refused else "pending", reward=reward, timezone=programme.timezone, created_at=now,
        reason=refused.reason if refused else None, detail=refused.detail if refused else None, stock_taken=taken,
        settled_at=now if refused else None, arms=arms)


def _replay(known: Redemption, digest: bytes, ask: Ask) -> Redemption:
    if digest != ask.digest:
        raise _conflict(ask)
    return known


def _conflict(ask: Ask) -> Refused:
    return Refused("idempotency_conflict", f"Idempotency-Key {ask.idempotency_key!r} was used for another redemption")


def _unknown(program_id: str, redemption_id: str) -> Refused:
    return Refused("unknown_redemption", f"programme {program_id!r} has no redemption {redemption_id!r}")


async def look(db: asyncpg.Connection, program_id: str, redemption_id: str) -> Shown:
    """A redemption with its coupon, as stored (no code: see `reveal`)."""
    found = await repository.redemptions.redemption_view(db, program_id, redemption_id)
    if found is None:
        raise _unknown(program_id, redemption_id)
    r, coupon, fulfilment = found
    return Shown(r, coupon[0] if coupon else None, None, coupon[1] if coupon else False, fulfilment)


def reveal_due(shown: Shown, may_see_code: bool) -> bool:
    """The code is shown once, to the first answer with the `redeem` scope that finds the redemption completed."""
    return shown.coupon is not None and shown.redemption.status == "completed" and may_see_code and not shown.code_shown


def reshow_due(shown: Shown) -> bool:
    """A code already shown may be shown again, to the same request (its key and body) only: see `reshow`."""
    return shown.coupon is not None and shown.redemption.status == "completed" and shown.code_shown


async def reveal(uow: UnitOfWork, shown: Shown, key: bytes, window_s: float, now: datetime) -> Shown:
    """Mark the coupon's code shown and show it. Its sealed copy is kept for `window_s` (for `reshow`), then
    dropped; only its hash stays. Another answer that showed it first leaves this one without it."""
    sealed = await repository.coupons.reveal_code(uow.db, shown.redemption.redemption_id, now, keep=window_s > 0)
    if sealed is None:
        return replace(shown, code_shown=True)
    return replace(shown, code=_unsealed(sealed, key), code_shown=True)


async def reshow(db: asyncpg.Connection, shown: Shown, key: bytes, window_s: float, now: datetime) -> Shown:
    """The code again, for the same request repeated (the same `Idempotency-Key` and body, from a till that lost
    the answer that showed it) within `window_s` of its first showing; after that, never."""
    sealed = await repository.coupons.shown_code(db, shown.redemption.redemption_id, now - timedelta(
        seconds=window_s))
    return shown if sealed is None else replace(shown, code=_unsealed(sealed, key))


def _unsealed(sealed: tuple[str, bytes, bytes], key: bytes) -> str:
    code = codes.unseal(sealed[1], sealed[0], key, sealed[2])
    if code is None:  # raised inside the transaction: the sealed code stays for a process with the right key
        raise Refused("coupon_key_mismatch", "this process's coupon key (JIFEN_COUPON_KEY) is not the one that "
                                             "sealed the code; every process needs the same")
    return code


async def cancel(uow: UnitOfWork, program_id: str, redemption_id: str, metrics: RedemptionMetrics,
                 now: datetime) -> None:
    """Cancel a completed redemption within its reward's window: the capture is reversed (the points come back with
    the expiry of the lots they left), an unused coupon voided, the stock given back. Cancelling a cancelled
    redemption changes nothing."""
    r = await repository.redemptions.redemption(uow.db, program_id, redemption_id, lock=True)
    if r is None:
        raise _unknown(program_id, redemption_id)
    if r.status == "cancelled":
        return
    found = (await repository.coupons.coupons_of(uow.db, [redemption_id], lock=True)).get(redemption_id)
    coupon = found[0] if found is not None else None
    refused = domain.cancel_refusal(r, coupon, now)
    if refused is not None:
        metrics.refusals.labels(program_id, "cancel", refused.reason).inc()
        raise refused
    r.status, r.cancelled_at = "cancelled", now
    await repository.redemptions.update_redemptions(uow.db, [r])
    if coupon is not None:
        await repository.coupons.void_coupons(uow.db, [coupon.coupon_id], now)
    await repository.stock.give_back_stock(uow.db, [(r.program_id, r.reward_id, r.stock_taken)])
    events.give_back(uow, r, now)
    events.cancelled(uow, r, now)
    uow.after_commit += [metrics.redemptions.labels(r.program_id, r.reward_id, "cancelled").inc,
                         lambda: metrics.points.labels(r.program_id, "returned").inc(r.points)]


@dataclass(frozen=True, slots=True)
class Offer:
    reward: Reward
    points: int  # the member's price
    stock_left: int | None


async def offers(db: asyncpg.Connection, programme: RedemptionProgramme, member_id: str | None,
                 now: datetime) -> tuple[MemberView, list[Offer]]:
    """What can be redeemed now, at the member's price: available, in stock, and, for a member, neither refused by
    tier, block or limits (points are the ledger's to judge, when the hold is asked for)."""
    program_id, rules, zone = programme.program_id, programme.rules, programme.zone
    left = await repository.stock.stock_left(db, program_id)
    member = MemberView()
    past: list[domain.Past] = []
    if member_id is not None:
        member = await repository.members.member_view(db, program_id, member_id)
        since = [domain.history_since(reward, rules, now, zone) for reward in programme.rewards or ()]
        oldest = None if any(s is None for s in since) else min((s for s in since if s is not None), default=now)
        past = await repository.redemptions.history(db, program_id, member_id, oldest)
    found = []
    for reward in programme.rewards or ():
        stock = left.get(reward.reward_id, reward.stock) if reward.stock is not None else None
        if stock is not None and stock < 1:
            continue
        if member_id is not None:
            used = domain.usage(past, reward, rules, now, zone)
            if domain.refusal(reward, reward.reward_id, 1, member, used, rules, now) is not None:
                continue
        elif reward.available is not None and not reward.available.holds(now):
            continue
        found.append(Offer(reward, reward.price(member.tier), stock))
    return member, found


async def add_stock(uow: UnitOfWork, programme: RedemptionProgramme, reward_id: str, quantity: int, key: str | None,
                    added_by: str, metrics: RedemptionMetrics, now: datetime) -> tuple[bool, int]:
    reward = programme.reward(reward_id)
    if reward is None:
        raise Refused("unknown_reward", f"the catalogue has no reward {reward_id!r}")
    if reward.stock is None:
        raise Refused("no_stock_kept", f"{reward_id!r} has no stock in the catalogue: it never runs out")
    added, left = await repository.stock.add_stock(uow.db, programme.program_id, reward, quantity,
                                                   keys.stock_addition(key), added_by, now)
    uow.after_commit.append(lambda: metrics.stock_left.labels(programme.program_id, reward_id).set(left))
    return added, left
