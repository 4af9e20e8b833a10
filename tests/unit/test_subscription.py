"""The kit routes by type once: a handler's methods are found by their annotation."""

from __future__ import annotations

import pytest

from shared.contracts.ledger_entries import CommandRejected, HoldPlaced, HoldResolved
from shared.contracts.purchases import PurchaseCompleted, PurchaseRefunded
from shared.subscription import Batch, Handler, Inbound, Subscription


class Outcomes(Handler[Batch]):
    async def hold(self, item: Inbound[HoldPlaced | HoldResolved], batch: Batch) -> None: ...

    async def refused(self, item: Inbound[CommandRejected], batch: Batch) -> None: ...

    async def _helper(self, item: Inbound[PurchaseCompleted], batch: Batch) -> None: ...


def test_each_type_is_routed_to_the_method_its_annotation_names() -> None:
    assert Outcomes.contracts() == {HoldPlaced: "hold", HoldResolved: "hold", CommandRejected: "refused"}
    sub = Subscription(Outcomes(), others="skip")
    found = sub.handler_of(HoldResolved.TYPE)
    assert found is not None and found[0] is HoldResolved and found[2] is not None
    assert found[2].__name__ == "hold"
    assert sub.handler_of(PurchaseCompleted.TYPE) is None  # private methods are not routes


def test_a_subscription_may_take_some_of_a_handlers_types_but_not_others() -> None:
    sub = Subscription(Outcomes(), types=[CommandRejected], others="skip")
    assert sub.handler_of(HoldPlaced.TYPE) is None and sub.handler_of(CommandRejected.TYPE) is not None
    with pytest.raises(ValueError, match="no method for PurchaseRefunded"):
        Subscription(Outcomes(), types=[PurchaseRefunded])


def test_two_methods_for_one_type_or_none_at_all_is_refused_when_the_service_is_built() -> None:
    class Twice(Handler[Batch]):
        async def a(self, item: Inbound[PurchaseCompleted], batch: Batch) -> None: ...

        async def b(self, item: Inbound[PurchaseCompleted], batch: Batch) -> None: ...

    class Nothing(Handler[Batch]):
        async def a(self, item: int, batch: Batch) -> None: ...

    with pytest.raises(TypeError, match="handled by a and b"):
        Twice.contracts()
    with pytest.raises(TypeError, match="has no method"):
        Nothing.contracts()
