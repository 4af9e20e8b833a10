"""What every contract is made of: the `Contract` base, the value types events share, and `Channel`, a topic with
the message types that travel on it.

A message type (a CloudEvents `type`) is written once, as the `TYPE` of its contract class; everything else (the
consumer's dispatch, the outbox's envelope, AsyncAPI, the simulator, explain) reads it from there.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints


def _money_input(value: Any) -> Any:
    # Money is a decimal string; a JSON float would already have lost precision.
    if isinstance(value, float):
        raise ValueError("money must be a decimal string such as \"12.50\", not a float")
    return value


def _finite(value: Decimal) -> Decimal:
    if not value.is_finite():
        raise ValueError("money must be a finite decimal")
    return value


# No control characters in an id, from an event or from a URL: PostgreSQL cannot store NUL, and an id that prints
# differently from what it is cannot be read back by a person. The same pattern checks path parameters over HTTP.
ID_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]+$"
ID_MAX_LENGTH = 200
# Free text (a reason, a detail): line breaks and tabs are fine, other control characters are not.
TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"

Money = Annotated[Decimal, BeforeValidator(_money_input), AfterValidator(_finite), Field(ge=0)]
Id = Annotated[str, StringConstraints(min_length=1, max_length=ID_MAX_LENGTH, strip_whitespace=True,
                                      pattern=ID_PATTERN)]
Text = Annotated[str, StringConstraints(max_length=2000, pattern=TEXT_PATTERN)]
NonBlank = Annotated[str, StringConstraints(min_length=1, max_length=500, strip_whitespace=True, pattern=TEXT_PATTERN)]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
ProgramId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]


class Contract(BaseModel):
    """A message's data, or a part of one. A message's class names its CloudEvents type in `TYPE`."""

    model_config = ConfigDict(extra="allow", frozen=True)
    TYPE: ClassVar[str] = ""


Direction = Literal["in", "out"]


@dataclass(frozen=True)
class Channel:
    """A topic and the message types on it. `in`: sent to Jifen (by systems outside it, or, when `internal`, by
    Jifen's own services to another); `out`: sent by Jifen. Every channel has a dead-letter twin, `<topic>.dlq`."""

    topic: str
    direction: Direction
    description: str
    types: tuple[type[Contract], ...]
    internal: bool = False

    @property
    def dlq(self) -> str:
        return dlq(self.topic)

    @property
    def external(self) -> bool:
        """Written by systems outside Jifen, whose clocks and ids Jifen does not control."""
        return self.direction == "in" and not self.internal

    def contract(self, message_type: str) -> type[Contract] | None:
        return next((t for t in self.types if message_type == t.TYPE), None)


def dlq(topic: str) -> str:
    return f"{topic}.dlq"
