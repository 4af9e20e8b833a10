"""Earn use cases: inbound events in, ledger commands out (through the outbox)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter

from services.earn.domain import Programme, credit_for_purchase
from shared import envelope
from shared.consumer import Inbound, Rejections
from shared.contracts import COMMAND_TYPE_OF, PurchaseCompleted
from shared.outbox import OutboxMessage
from shared.uow import UnitOfWork

SOURCE = "jifen.earn"
HANDLED = {"jifen.purchase.completed.v1"}


class EarnMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.points = Counter("jifen_earn_points", "Points requested from the ledger", ["program", "rule"],
                              registry=registry)


@dataclass
class EarnFromEvents:
    programmes: dict[str, Programme]
    commands_topic: str
    metrics: EarnMetrics

    async def __call__(self, items: list[Inbound], uow: UnitOfWork, rejections: Rejections) -> None:
        for item in items:
            purchase = item.data
            assert isinstance(purchase, PurchaseCompleted)
            programme = self.programmes.get(purchase.program_id)
            if programme is None:
                rejections.reject(item, "unknown_program", f"no programme {purchase.program_id!r}")
                continue
            if programme.currency is not None and purchase.currency != programme.currency:
                rejections.reject(item, "currency_not_accepted",
                                  f"programme {programme.program_id!r} earns on {programme.currency}, "
                                  f"not {purchase.currency}")
                continue
            credit = credit_for_purchase(programme, item.event.event_id, item.event.time, purchase)
            if credit is None:
                continue
            uow.publish(OutboxMessage(
                topic=self.commands_topic, key=credit.member_id.encode(),
                value=envelope.encode(credit.idempotency_key, SOURCE, COMMAND_TYPE_OF[type(credit)],
                                      item.event.time, credit.model_dump(mode="json"), subject=credit.member_id),
                headers=envelope.STRUCTURED_HEADERS))
            self.metrics.points.labels(credit.program_id, programme.purchase.rule_id).inc(credit.amount)
