"""jifen.checkins: daily check-ins."""

from __future__ import annotations

from datetime import date
from typing import ClassVar

from shared.contracts.base import Channel, Contract, Id, ProgramId, Text


class CheckinRecorded(Contract):
    TYPE: ClassVar[str] = "jifen.checkin.recorded.v1"

    program_id: ProgramId = "default"
    member_id: Id
    day: date
    channel: Text | None = None


CHANNEL = Channel("jifen.checkins", "in", "Daily check-ins.", (CheckinRecorded,))
