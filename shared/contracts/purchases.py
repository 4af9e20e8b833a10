"""jifen.purchases: purchases and refunds from tills and web shops."""

from __future__ import annotations

from decimal import Decimal
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from shared.contracts.base import Channel, Contract, Currency, Id, Money, ProgramId


class PurchaseLine(Contract):
    sku: Id
    category: Id | None = None
    quantity: Decimal = Field(gt=0)
    unit_price: Money
    total: Money


class PurchaseCompleted(Contract):
    TYPE: ClassVar[str] = "jifen.purchase.completed.v1"

    program_id: ProgramId = "default"
    member_id: Id
    order_id: Id
    store_id: Id | None = None
    channel: Literal["pos", "online", "app"]
    currency: Currency
    total: Money
    lines: list[PurchaseLine] = Field(default_factory=list)
    # The part of `total` paid with points (抵扣, a captured payment of the redemption service), in the purchase's
    # currency: earn awards no points on it.
    points_value: Money | None = None

    @model_validator(mode="after")
    def _points_within_total(self) -> PurchaseCompleted:
        if self.points_value is not None and self.points_value > self.total:
            raise ValueError(f"points_value {self.points_value} is more than the total {self.total}")
        return self


class PurchaseRefunded(Contract):
    TYPE: ClassVar[str] = "jifen.purchase.refunded.v1"

    program_id: ProgramId = "default"
    member_id: Id
    order_id: Id
    refund_id: Id
    currency: Currency
    total: Money
    lines: list[PurchaseLine] | None = None


CHANNEL = Channel("jifen.purchases", "in", "Purchases and refunds from tills and web shops.",
                  (PurchaseCompleted, PurchaseRefunded))
