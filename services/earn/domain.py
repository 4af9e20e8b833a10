"""Earn rules: how an event becomes points. Pure: no I/O, no clock."""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_FLOOR, Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts import Cause, PostCredit, PurchaseCompleted


class PurchaseRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rule_id: str = "base"
    points_per_unit: Decimal = Field(gt=0)
    rounding: Literal["floor"] = "floor"


class Programme(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    program_id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    name: str
    version: int = Field(ge=1)
    effective_from: datetime
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")  # None: any currency, 1:1
    purchase: PurchaseRule


def purchase_points(rule: PurchaseRule, total: Decimal) -> int:
    """floor(total × rate): points are whole, and a fraction of a point is never credited."""
    return int((total * rule.points_per_unit).to_integral_value(rounding=ROUND_FLOOR))


def earn_key(event_id: str, rule_id: str) -> str:
    """Derived from the cause, so a re-derived command is recognised by the ledger as the same one."""
    return f"earn:{event_id}:{rule_id}"


def credit_for_purchase(programme: Programme, event_id: str, occurred_at: datetime,
                        purchase: PurchaseCompleted) -> PostCredit | None:
    points = purchase_points(programme.purchase, purchase.total)
    if points <= 0:
        return None
    rule = programme.purchase
    return PostCredit(
        idempotency_key=earn_key(event_id, rule.rule_id), program_id=programme.program_id,
        member_id=purchase.member_id, amount=points, occurred_at=occurred_at, available_at=occurred_at,
        cause=Cause(source_event_id=event_id, rule_id=rule.rule_id, rule_version=programme.version,
                    reason="purchase"),
        details={"order_id": purchase.order_id, "total": str(purchase.total), "currency": purchase.currency,
                 "rules": [{"rule_id": rule.rule_id, "points": points,
                            "rate": str(rule.points_per_unit), "rounding": rule.rounding}]},
    )
