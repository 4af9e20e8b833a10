"""jifen.members: members enrolled, tiers set by hand, members blocked and unblocked."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar

from pydantic import StringConstraints

from shared.contracts.base import Channel, Contract, Id, NonBlank, ProgramId

Birthday = Annotated[str, StringConstraints(pattern=r"^(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$")]


class Fingerprints(Contract):
    """Opaque hashes (the sender hashes; Jifen only compares them) of what identifies a person or a household.
    The referral service refuses a referral whose two members share any of them."""

    device: Id | None = None
    payment: Id | None = None
    email: Id | None = None
    phone: Id | None = None
    address: Id | None = None


class MemberEnrolled(Contract):
    TYPE: ClassVar[str] = "jifen.member.enrolled.v1"

    program_id: ProgramId = "default"
    member_id: Id
    birthday: Birthday | None = None
    enrolled_at: datetime | None = None
    referral_code: Id | None = None  # the code of the member who referred this one, if any
    fingerprints: Fingerprints | None = None


class TierAssigned(Contract):
    """A tier set by hand (an invitation-only tier, a status match) until a date; honoured only from a CloudEvents
    `source` the programme's tiers section trusts."""

    TYPE: ClassVar[str] = "jifen.tier.assigned.v1"

    program_id: ProgramId = "default"
    member_id: Id
    tier: Id
    until: datetime | None = None
    reason: NonBlank
    assigned_by: Id


class MemberBlocked(Contract):
    """Stop a member redeeming (an abnormal account); honoured only from a source the programme trusts."""

    TYPE: ClassVar[str] = "jifen.member.blocked.v1"

    program_id: ProgramId = "default"
    member_id: Id
    reason: NonBlank
    blocked_by: Id


class MemberUnblocked(Contract):
    TYPE: ClassVar[str] = "jifen.member.unblocked.v1"

    program_id: ProgramId = "default"
    member_id: Id
    reason: NonBlank
    unblocked_by: Id


CHANNEL = Channel("jifen.members", "in", "Members enrolled (birthday, referral code, fingerprints), tiers set by hand, "
                  "members blocked and unblocked.", (MemberEnrolled, TierAssigned, MemberBlocked, MemberUnblocked))
