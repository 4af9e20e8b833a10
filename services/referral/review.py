"""A reviewer's decision on a referral held for review (velocity): approved, it is judged again without the hold;
rejected, it is refused and its place under the referrer's cap freed."""

from __future__ import annotations

from datetime import datetime

from services.referral.domain import Decision
from services.referral.judging import Changes, Judging
from services.referral.repository import lock, referrals
from shared.refusal import Refusal
from shared.uow import UnitOfWork


async def decide(judging: Judging, schema: str, uow: UnitOfWork, program_id: str, referral_id: str,
                 decision: Decision, by: str, now: datetime) -> None:
    """The same decision again changes nothing; `unknown_referral`, or `not_in_review` for a referral not held."""
    await lock(uow.db, schema, [program_id])
    found = await referrals.referral(uow.db, program_id, referral_id)
    if found is None:
        raise unknown_referral(program_id, referral_id)
    if found["decision"] == decision:
        return
    if found["status"] != "review":
        raise Refusal("not_in_review", f"referral {referral_id!r} is {found['status']}, not held for review")
    await referrals.decide(uow.db, referral_id, decision, now, by)
    await judging.rejudge(Changes(uow), [(program_id, found["referrer_id"])], now)


def unknown_referral(program_id: str, referral_id: str) -> Refusal:
    return Refusal("unknown_referral", f"programme {program_id!r} has no referral {referral_id!r}")
