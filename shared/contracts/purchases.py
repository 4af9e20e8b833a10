"""jifen.purchases: purchases and refunds from tills and web shops."""

from __future__ import annotations

from decimal import Decimal
from typing import ClassVar, Literal

from pydantic import Field

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
