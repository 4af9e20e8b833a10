"""Earn rules: how a purchase becomes points under a programme version. Pure: no I/O, no clock.

A purchase is judged line by line. Each rule that fires (base rate, the member's tier, product or category
multiplier, fixed bonus, campaign, rebate) gives points per line as exact decimals; a rule's credit is the floor
of its sum, so a fraction of a point is never credited and each rule's points are explainable on their own. Each rule
that yields points becomes one ledger credit with key `earn:{event_id}:{rule_id}`, and keeps the points
per line, so a refund can take back exactly what the refunded lines earned. The rules themselves, as the programme
file gives them, are in programme.py.
"""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import ROUND_FLOOR, Decimal

from services.earn.programme import BaseRate, Multiplier, Programme
from shared import keys
from shared.contracts.ledger_commands import Cause, PostCredit
from shared.contracts.purchases import PurchaseCompleted, PurchaseLine


@dataclass(frozen=True)
class MemberTier:
    """The tier a member held when a purchase happened, as the tiers service announced it."""

    tier: str
    multiplier: Decimal = Decimal(1)


def tier_at(history: Sequence[tuple[datetime, MemberTier]], at: datetime) -> MemberTier | None:
    """The tier in effect at `at` (the last to take effect at or before it), given a history oldest first."""
    held = None
    for since, tier in history:
        if since > at:
            break
        held = tier
    return held


@dataclass(frozen=True)
class RulePoints:
    """What one rule gave: its points (the floor of the exact sum) and the exact share of each line."""

    rule_id: str
    kind: str
    points: int
    lines: dict[int, Decimal]  # line index -> exact points before rounding
    note: str


def purchase_refusal(programme: Programme, purchase: PurchaseCompleted) -> tuple[str, str] | None:
    """Why a purchase earns nothing and goes to the DLQ (reason, detail), or None; `jifen earn explain` asks too."""
    if programme.purchase is None:
        return "no_rule", f"programme {programme.program_id!r} does not reward purchases"
    if programme.currency is not None and purchase.currency != programme.currency:
        return "currency_not_accepted", (f"programme {programme.program_id!r} earns on {programme.currency}, not "
                                         f"{purchase.currency}")
    return None


def purchase_points(rule: BaseRate, total: Decimal) -> int:
    """floor(total × rate): points are whole, and a fraction of a point is never credited."""
    return _floor(total * rule.points_per_unit)


def _floor(value: Decimal) -> int:
    return int(value.to_integral_value(rounding=ROUND_FLOOR))


def lines_of(purchase: PurchaseCompleted) -> list[PurchaseLine]:
    """The purchase's lines; a purchase sent without lines is one line of its total, with no category."""
    if purchase.lines:
        return list(purchase.lines)
    return [PurchaseLine(sku="*", quantity=Decimal(1), unit_price=purchase.total, total=purchase.total)]


def paid_share(purchase: PurchaseCompleted) -> Decimal:
    """The share of the basket paid with money, which earns points; the rest (`points_value`) was paid with points.
    It scales what each line earns by the base rate, multipliers, campaigns and rebates; fixed bonuses per unit or
    line are for the goods and stay whole."""
    if not purchase.points_value or not purchase.total:
        return Decimal(1)
    return (purchase.total - purchase.points_value) / purchase.total


def rule_points(programme: Programme, occurred_at: datetime, purchase: PurchaseCompleted,
                tier: MemberTier | None = None) -> list[RulePoints]:
    """Every rule's points for this purchase, in a stable order: base, tier, multipliers, bonuses, campaigns,
    rebates. `tier` is the member's tier when the purchase happened (None: no tier known)."""
    rules = programme.purchase
    if rules is None:
        return []
    lines = lines_of(purchase)
    eligible = {i: line for i, line in enumerate(lines) if not (rules.exclude and rules.exclude.matches(line))}
    paid = paid_share(purchase)  # what was paid with money: points paid with points earn nothing
    base = {i: line.total * paid * rules.base.points_per_unit for i, line in eligible.items()}
    result = [RulePoints(rules.base.rule_id, "base", _floor(sum(base.values(), Decimal(0))), base,
                         f"{rules.base.points_per_unit} per unit of currency, {rules.base.rounding}")]
    if rules.tier is not None and tier is not None and tier.multiplier > 1:
        extra = {i: points * (tier.multiplier - 1) for i, points in base.items()}
        result.append(RulePoints(rules.tier.rule_id, "tier", _floor(sum(extra.values(), Decimal(0))), extra,
                                 f"×{tier.multiplier} for tier {tier.tier}"))
    # The highest matching product or category multiplier per line.
    best: dict[int, Multiplier] = {}
    for i, line in eligible.items():
        for m in rules.multipliers:
            if m.matches(line) and (i not in best or m.multiplier > best[i].multiplier):
                best[i] = m
    for m in rules.multipliers:
        extra = {i: base[i] * (m.multiplier - 1) for i, chosen in best.items() if chosen is m}
        result.append(RulePoints(m.rule_id, "multiplier", _floor(sum(extra.values(), Decimal(0))), extra,
                                 f"×{m.multiplier} on matching lines"))
    for b in rules.bonuses:
        given = {i: Decimal(b.points) * (line.quantity if b.per == "unit" else 1)
                 for i, line in eligible.items() if b.matches(line)}
        result.append(RulePoints(b.rule_id, "bonus", _floor(sum(given.values(), Decimal(0))), given,
                                 f"{b.points} per {b.per}"))
    for c in rules.campaigns:
        running = c.runs(occurred_at, programme.zone, purchase, tier.tier if tier else None)
        extra = {i: base[i] * (c.multiplier - 1) for i, line in eligible.items() if running and c.applies_to(line)}
        result.append(RulePoints(c.rule_id, "campaign", _floor(sum(extra.values(), Decimal(0))), extra,
                                 f"×{c.multiplier} from {c.starts.isoformat()} to {c.ends.isoformat()}"))
    spent = sum((line.total * paid for line in eligible.values()), Decimal(0))
    for r in rules.rebates:
        back: dict[int, Decimal] = {}
        if spent >= r.min_total and spent > 0:
            for i, line in eligible.items():
                percent = max([h.percent for h in r.higher if h.matches(line)], default=r.percent)
                back[i] = line.total * paid * percent / 100
        result.append(RulePoints(r.rule_id, "rebate", _floor(sum(back.values(), Decimal(0))), back,
                                 f"{r.percent}% back from {r.min_total} spent"))
    return result


def available_at(programme: Programme, occurred_at: datetime, channel: str) -> datetime:
    days = programme.pending.by_channel.get(channel, programme.pending.days)  # type: ignore[call-overload]
    return occurred_at + timedelta(days=days)


def expires_at(programme: Programme, occurred_at: datetime) -> datetime | None:
    policy = programme.expiry
    if policy.policy == "none":
        return None
    local = occurred_at.astimezone(programme.zone)
    if policy.policy == "rolling":
        month = local.month - 1 + policy.months
        year, month = local.year + month // 12, month % 12 + 1
        day = min(local.day, calendar.monthrange(year, month)[1])
        return local.replace(year=year, month=month, day=day).astimezone(UTC)
    year = local.year + policy.years_after
    day = min(policy.day, calendar.monthrange(year, policy.month)[1])
    end_of_day = datetime.combine(datetime(year, policy.month, day).date(), time.max, tzinfo=programme.zone)
    return end_of_day.astimezone(UTC)


def credits_for_purchase(programme: Programme, event_id: str, occurred_at: datetime, purchase: PurchaseCompleted,
                         tier: MemberTier | None = None) -> list[PostCredit]:
    """One ledger credit per rule that yields points, each explaining itself in `details`."""
    return credits_from(programme, event_id, occurred_at, purchase,
                        fired_rules(programme, occurred_at, purchase, tier), tier)


def fired_rules(programme: Programme, occurred_at: datetime, purchase: PurchaseCompleted,
                tier: MemberTier | None = None) -> list[RulePoints]:
    return [r for r in rule_points(programme, occurred_at, purchase, tier) if r.points > 0]


def credits_from(programme: Programme, event_id: str, occurred_at: datetime, purchase: PurchaseCompleted,
                 fired: list[RulePoints], tier: MemberTier | None = None,
                 arms: dict[str, str] | None = None) -> list[PostCredit]:
    """The credits of rules that fired, in their order; each cause names the member's experiment arms (`arms`, by
    experiment id) and the tier applied, so the ledger records what judged the purchase."""
    when_available = available_at(programme, occurred_at, purchase.channel)
    when_expires = expires_at(programme, occurred_at)
    lines = lines_of(purchase)
    return [PostCredit(
        idempotency_key=keys.earn_credit(event_id, r.rule_id), program_id=programme.program_id,
        member_id=purchase.member_id, amount=r.points, occurred_at=occurred_at, available_at=when_available,
        expires_at=when_expires,
        cause=Cause(source_event_id=event_id, rule_id=r.rule_id, rule_version=programme.version, reason="purchase",
                    arms=arms or None, tier=tier.tier if tier is not None else None),
        details={"order_id": purchase.order_id, "total": str(purchase.total), "currency": purchase.currency,
                 **({"points_value": str(purchase.points_value)} if purchase.points_value else {}),
                 "rule": {"rule_id": r.rule_id, "kind": r.kind, "points": r.points, "why": r.note},
                 "lines": [{"sku": lines[i].sku, "points": str(p)} for i, p in sorted(r.lines.items()) if p],
                 **({"tier": tier.tier} if tier is not None else {})},
    ) for r in fired]
