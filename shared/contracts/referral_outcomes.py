"""jifen.referral.outcomes: referrals rewarded, refused with the reason, and rewards taken back. Keyed by the
referrer's member id. `arms` is the referrer's arm of every experiment running when the referee accepted (the
referrer is shown the offer and shares it, so both rewards follow that arm); empty when none was running."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from shared.contracts.base import Channel, Contract, Id, ProgramId, Text


class ReferralRewarded(Contract):
    TYPE: ClassVar[str] = "jifen.referral.rewarded.v1"

    program_id: ProgramId
    referral_id: Id
    referrer_member_id: Id
    referee_member_id: Id
    qualifying_order_id: Id
    referrer_points: int = Field(ge=0)
    referee_points: int = Field(ge=0)
    bonus_points: int = Field(default=0, ge=0)  # the referrer's bonus for every Kth qualified referral
    arms: dict[str, str] = Field(default_factory=dict)  # the referrer's arms at acceptance: experiment id -> arm


class ReferralRejected(Contract):
    TYPE: ClassVar[str] = "jifen.referral.rejected.v1"

    program_id: ProgramId
    referral_id: Id
    referrer_member_id: Id
    referee_member_id: Id
    reason: Id  # self_referral, already_referred, existing_customer, referrer_cap, velocity, expired
    detail: Text
    arms: dict[str, str] = Field(default_factory=dict)  # the referrer's arms at acceptance: experiment id -> arm


class ReferralRevoked(Contract):
    """The qualifying order was refunded inside the return window: both rewards are reversed."""

    TYPE: ClassVar[str] = "jifen.referral.revoked.v1"

    program_id: ProgramId
    referral_id: Id
    referrer_member_id: Id
    referee_member_id: Id
    order_id: Id
    refund_id: Id
    referrer_points: int = Field(ge=0)
    referee_points: int = Field(ge=0)
    arms: dict[str, str] = Field(default_factory=dict)  # the referrer's arms at acceptance: experiment id -> arm


CHANNEL = Channel("jifen.referral.outcomes", "out", "Referrals rewarded, refused with the reason, and rewards taken "
                  "back after a refund. Kafka key: the referrer's member id.",
                  (ReferralRewarded, ReferralRejected, ReferralRevoked))
