"""jifen.referrals: referrals accepted by the referred member."""

from __future__ import annotations

from typing import ClassVar

from shared.contracts.base import Channel, Contract, Id, ProgramId, Text


class ReferralAccepted(Contract):
    TYPE: ClassVar[str] = "jifen.referral.accepted.v1"

    program_id: ProgramId = "default"
    referrer_member_id: Id
    referee_member_id: Id
    referral_code: Text | None = None


CHANNEL = Channel("jifen.referrals", "in", "Accepted referrals: the referee accepted the referrer's invitation. "
                  "Kafka key: the referee's member id.", (ReferralAccepted,))
