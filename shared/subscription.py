"""What a service consumes: a map from message type to the handler of its events, per subscription, and what to do
with the other types on the same topics.

A handler gets a batch's events of its types, in order, inside the batch's unit of work. Where several types map
to one handler, consecutive events of those types reach it as one list, so a handler that loads a batch's state
in a few queries (the ledger) sees as much of the batch at once as it can.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from aiokafka import ConsumerRecord

from shared.contracts import topics
from shared.contracts.base import Channel, Contract
from shared.envelope import BadMessage, CloudEvent

if TYPE_CHECKING:
    from shared.uow import UnitOfWork

T = TypeVar("T", bound=Contract, covariant=True)


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


Handler = Callable[[list[Inbound[Any]], "UnitOfWork", Rejections], Awaitable[None]]
Others = Literal["dlq", "skip"]


@dataclass(frozen=True)
class Subscription:
    """`handlers` maps each handled message type to its handler; the topics are those the types travel on.

    `others` says what becomes of a type no handler here takes. `skip`: ignored and counted
    (`jifen_events_ignored_total`), for topics whose writers are Jifen's own services and whose readers each want
    some of the types. `dlq`: a type the topic does not carry at all is a producer's mistake and goes to the DLQ
    as `unknown_type`; a type the topic carries for another service is ignored and counted, as with `skip`.
    """

    handlers: Mapping[type[Contract], Handler]
    others: Others = "dlq"
    _by_type: dict[str, tuple[type[Contract], Handler]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.handlers:
            raise ValueError("a subscription handles at least one message type")
        for contract in self.handlers:
            if not contract.TYPE:
                raise ValueError(f"{contract.__name__} is a part of a message, not a message type")
        # Looked up once per record: by the CloudEvents type string, not by walking the map.
        object.__setattr__(self, "_by_type", {c.TYPE: (c, h) for c, h in self.handlers.items()})

    @property
    def channels(self) -> list[Channel]:
        return list(dict.fromkeys(topics.channel_of(contract) for contract in self.handlers))

    def handler_of(self, message_type: str) -> tuple[type[Contract], Handler] | None:
        for contract, handler in self.handlers.items():
            if message_type == contract.TYPE:
                return contract, handler
        return None


@dataclass(frozen=True, slots=True)
class Route:
    """Where a record of a topic goes: its channel and the subscription that reads it."""

    channel: Channel
    subscription: Subscription

    def contract_and_handler(self, message_type: str) -> tuple[type[Contract], Handler] | None:
        """The handler of a type; None for a type to ignore; BadMessage for a type to refuse."""
        found = self.subscription.handler_of(message_type)
        if found is not None:
            return found
        if self.subscription.others == "dlq" and self.channel.contract(message_type) is None:
            known = ", ".join(t.TYPE for t in self.channel.types)
            raise BadMessage("unknown_type", f"{message_type!r} is not a type of {self.channel.topic} ({known})")
        return None


def routes(subscriptions: Sequence[Subscription]) -> dict[str, Route]:
    """Each consumed topic (named without prefix) with its route; a topic may belong to one subscription only."""
    found: dict[str, Route] = {}
    for subscription in subscriptions:
        for channel in subscription.channels:
            if channel.topic in found:
                raise ValueError(f"{channel.topic} is in two subscriptions: give its types to one")
            found[channel.topic] = Route(channel, subscription)
    return found
