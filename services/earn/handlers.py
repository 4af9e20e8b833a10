"""Earn use cases: inbound events in, ledger commands out (through the outbox)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter

from services.earn.domain import credits_for_purchase
from services.earn.programmes import Catalogue
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
    catalogue: Catalogue
    commands_topic: str
    metrics: EarnMetrics

    async def __call__(self, items: list[Inbound], uow: UnitOfWork, rejections: Rejections) -> None:
        for item in items:
            purchase = item.data
            assert isinstance(purchase, PurchaseCompleted)
            # Judged by the programme version in effect when the purchase happened, so a replay earns the same.
            programme = self.catalogue.at(purchase.program_id, item.event.time)
            if programme is None:
                known = purchase.program_id in self.catalogue.versions
                rejections.reject(item, "unknown_program",
                                  f"programme {purchase.program_id!r} was not in effect at {item.event.time}" if known
                                  else f"no programme {purchase.program_id!r}")
                continue
            if programme.currency is not None and purchase.currency != programme.currency:
                rejections.reject(item, "currency_not_accepted",
                                  f"programme {programme.program_id!r} earns on {programme.currency}, "
                                  f"not {purchase.currency}")
                continue
            for credit in credits_for_purchase(programme, item.event.event_id, item.event.time, purchase):
                uow.publish(OutboxMessage(
                    topic=self.commands_topic, key=credit.member_id.encode(),
                    value=envelope.encode(credit.idempotency_key, SOURCE, COMMAND_TYPE_OF[type(credit)],
                                          item.event.time, credit.model_dump(mode="json"), subject=credit.member_id),
                    headers=envelope.STRUCTURED_HEADERS))
                self.metrics.points.labels(credit.program_id, credit.cause.rule_id).inc(credit.amount)
