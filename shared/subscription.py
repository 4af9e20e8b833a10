"""What a service consumes: a handler with one method per message type, per subscription, and what to do with the
other types on the same topics.

A handler is a `Handler`: `load(batch)` reads what a run of the batch's events needs, all at once, into the
service's per-batch change object (`Changes`); the kit then calls the method of each event's type, in order, with
the event and the changes; then `store(changes)` writes them, one statement per table. The methods are found by
their annotation (`async def purchase(self, item: Inbound[PurchaseCompleted], changes: Changes) -> None`), once,
so the kit routes by type and no handler dispatches again by hand. Consecutive events for one handler reach it as
one run, so a handler that loads a batch's state in a few queries (the ledger) sees as much of the batch at once as
it can.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar

from aiokafka import ConsumerRecord

from shared.contracts import topics
from shared.contracts.base import Channel, Contract
from shared.envelope import BadMessage, CloudEvent

if TYPE_CHECKING:
    from shared.uow import UnitOfWork

T = TypeVar("T", bound=Contract, covariant=True)
K = TypeVar("K", bound=Contract)
C = TypeVar("C")  # a service's per-batch change object: `Changes`


@dataclass(frozen=True, slots=True)
class Inbound(Generic[T]):
    """A record that parsed and validated: its CloudEvent and its typed data."""

    record: ConsumerRecord[Any, Any]
    event: CloudEvent
    data: T


class Rejections:
    """What a handler answers for events that break a business rule: each goes to the DLQ with its reason."""

    def __init__(self) -> None:
        self.items: list[tuple[ConsumerRecord[Any, Any], BadMessage]] = []
        self.event_ids: list[str] = []

    def reject(self, item: Inbound[Contract], reason: str, detail: str) -> None:
        self.items.append((item.record, BadMessage(reason, detail)))
        self.event_ids.append(item.event.event_id)


@dataclass(slots=True)
class Batch:
    """One run of a batch's events for one handler, in order, inside the batch's unit of work."""

    items: list[Inbound[Contract]]
    uow: UnitOfWork
    rejections: Rejections

    def of(self, contract: type[K]) -> list[Inbound[K]]:
        """The run's events of one type, or of every type under a base contract (`LedgerCommand`), typed, in
        order."""
        return [item for item in self.items if isinstance(item.data, contract)]  # type: ignore[misc]

    def reject(self, item: Inbound[Contract], reason: str, detail: str) -> None:
        """The event breaks a business rule: it goes to the DLQ with the reason, in this batch's transaction."""
        self.rejections.reject(item, reason, detail)


Method = Callable[[Inbound[Any], Any], Awaitable[None]]


class Handler(Generic[C]):
    """A service's handler of some message types: one method per type, typed by its first parameter
    (`item: Inbound[X]`, or `Inbound[X | Y]` for types handled alike), plus `load` and `store` around a run.

    The default `load` hands the methods the `Batch` itself; a handler that reads state for the whole run at once
    returns its `Changes` instead, and writes it in `store`."""

    _method_names: ClassVar[dict[type, dict[type[Contract], str]]] = {}

    async def load(self, batch: Batch) -> C:
        return batch  # type: ignore[return-value]  # the default change object is the batch itself

    async def store(self, changes: C) -> None:
        return None

    @classmethod
    def contracts(cls) -> dict[type[Contract], str]:
        """Each handled message type and the name of its method, read from the annotations once per class."""
        found = Handler._method_names.get(cls)
        if found is None:
            found = Handler._method_names[cls] = _methods_of(cls)
        return found

    def methods(self) -> dict[type[Contract], Method]:
        return {contract: getattr(self, name) for contract, name in self.contracts().items()}

    async def apply(self, items: list[Inbound[Contract]], uow: UnitOfWork, rejections: Rejections,
                    methods: Sequence[Method] | None = None) -> None:
        """A run of events, as the consumer applies it: `load` once, each event's method in order, `store` once.
        `methods` are the events' methods when the caller already looked them up (the consumer, per record)."""
        if methods is None:
            by_type = self.methods()
            methods = [by_type[type(item.data)] for item in items]
        changes = await self.load(Batch(items, uow, rejections))
        for item, method in zip(items, methods, strict=True):
            await method(item, changes)
        await self.store(changes)


def _methods_of(cls: type) -> dict[type[Contract], str]:
    found: dict[type[Contract], str] = {}
    for name, fn in inspect.getmembers(cls, inspect.iscoroutinefunction):
        if name.startswith("_") or name in ("load", "store"):
            continue
        params = list(inspect.signature(fn).parameters.values())
        if len(params) != 3:
            continue
        hint = params[1].annotation
        if isinstance(hint, str):
            hint = eval(hint, fn.__globals__)  # `from __future__ import annotations`: resolve the one we need
        if typing.get_origin(hint) is not Inbound:
            continue
        (handled,) = typing.get_args(hint)
        union = typing.get_origin(handled) in (typing.Union, types.UnionType)
        for contract in typing.get_args(handled) if union else (handled,):
            if not (isinstance(contract, type) and issubclass(contract, Contract) and contract.TYPE):
                raise TypeError(f"{cls.__name__}.{name}: {contract!r} is not a message type")
            if contract in found:
                raise TypeError(f"{cls.__name__}: {contract.__name__} is handled by {found[contract]} and {name}")
            found[contract] = name
    if not found:
        raise TypeError(f"{cls.__name__} has no method taking `item: Inbound[<message type>]`")
    return found


Others = Literal["dlq", "skip"]


@dataclass(frozen=True)
class Subscription:
    """A handler and the message types it takes here (by default every type it has a method for); the topics are
    those the types travel on.

    `others` says what becomes of a type no handler here takes. `skip`: ignored and counted
    (`jifen_events_ignored_total`), for topics whose writers are Jifen's own services and whose readers each want
    some of the types. `dlq`: a type the topic does not carry at all is a producer's mistake and goes to the DLQ
    as `unknown_type`; a type the topic carries for another service is ignored and counted, as with `skip`.

    `group` names a consumer group of its own (`<service's group>-<group>`, with its own inbox claims): a reader that
    must see every record of topics another subscription reads too (insight's archive), apart from it; '' is the
    service's group.
    """

    handler: Handler[Any]
    types: Sequence[type[Contract]] | None = None
    others: Others = "dlq"
    group: str = ""
    _by_type: dict[str, tuple[type[Contract], Handler[Any], Method]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        methods = self.handler.methods()
        chosen = list(self.types) if self.types is not None else list(methods)
        missing = [c.__name__ for c in chosen if c not in methods]
        if missing:
            raise ValueError(f"{type(self.handler).__name__} has no method for {', '.join(missing)}")
        if not chosen:
            raise ValueError("a subscription handles at least one message type")
        object.__setattr__(self, "types", tuple(chosen))
        object.__setattr__(self, "_by_type", {c.TYPE: (c, self.handler, methods[c]) for c in chosen})

    @property
    def channels(self) -> list[Channel]:
        assert self.types is not None
        return list(dict.fromkeys(topics.channel_of(contract) for contract in self.types))

    def handler_of(self, message_type: str) -> tuple[type[Contract], Handler[Any], Method] | None:
        """The contract, handler and method of a type: looked up by the CloudEvents type string, once per record."""
        return self._by_type.get(message_type)


@dataclass(frozen=True, slots=True)
class Route:
    """Where a record of a topic goes: its channel and the subscription that reads it."""

    channel: Channel
    subscription: Subscription

    def contract_and_handler(self, message_type: str) -> tuple[type[Contract], Handler[Any], Method] | None:
        """The handler of a type; None for a type to ignore; BadMessage for a type to refuse."""
        found = self.subscription.handler_of(message_type)
        if found is not None:
            return found
        if self.subscription.others == "dlq" and self.channel.contract(message_type) is None:
            known = ", ".join(t.TYPE for t in self.channel.types)
            raise BadMessage("unknown_type", f"{message_type!r} is not a type of {self.channel.topic} ({known})")
        return None


def routes(subscriptions: Sequence[Subscription], group: str = "") -> dict[str, Route]:
    """Each topic the group consumes (named without prefix) with its route; a topic may belong to one subscription
    of a group only."""
    found: dict[str, Route] = {}
    for subscription in subscriptions:
        if subscription.group != group:
            continue
        for channel in subscription.channels:
            if channel.topic in found:
                raise ValueError(f"{channel.topic} is in two subscriptions: give its types to one")
            found[channel.topic] = Route(channel, subscription)
    return found


def groups(subscriptions: Sequence[Subscription]) -> list[str]:
    """The consumer groups the subscriptions are read under, the service's own ('') first."""
    return sorted({s.group for s in subscriptions})
