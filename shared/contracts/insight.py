"""jifen.insight: what the insight service finds for people to look at. A member on the abuse watch is announced
for the risk desk; blocking stays a person's decision (`jifen.member.blocked.v1`)."""

from __future__ import annotations

from datetime import date
from typing import ClassVar, Literal

from shared.contracts.base import Channel, Contract, Id, ProgramId, Text

WatchReason = Literal["earning_outlier", "redemption_outlier", "redeemed_soon_after_earning", "shared_fingerprint",
                      "points_received"]


class MemberFlagged(Contract):
    TYPE: ClassVar[str] = "jifen.insight.member.flagged.v1"

    program_id: ProgramId
    member_id: Id
    reason: WatchReason
    detail: Text
    window_start: date
    window_end: date


CHANNEL = Channel("jifen.insight", "out", "Findings of the insight service for people to act on: members on the "
                  "abuse watch, for the risk desk.", (MemberFlagged,))
