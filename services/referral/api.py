"""The referral service's HTTP answers: response models with their OpenAPI examples, the refusals the routes
document, and the answers built from the stored rows and figures."""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Literal

import asyncpg
from pydantic import BaseModel, ConfigDict, Field

from services.referral.domain import Status
from services.referral.repository.stats import Tally

QUALITY_DAYS = 90  # referees' spend this long after qualifying measures a referral's quality
RATE = Decimal("0.0001")  # conversion rates: 4 places, half to even
MONEY = Decimal("0.01")  # spend per referee: 2 places, half to even
# Examples for the OpenAPI description: a referral of m-00001's rewarded after review, one still pending, and the
# refusals the routes answer with (reason → detail, as the code words them).
REWARDED: dict[str, Any] = {
    "referral_id": "ref-5deb0177e2ec317a1d00", "role": "referrer", "referrer_member_id": "m-00001",
    "referee_member_id": "m-00042", "status": "rewarded", "reason": None, "detail": "",
    "accepted_at": "2026-10-03T09:00:00Z", "via": "accepted", "expires_at": None,
    "qualifying_order_id": "o-20261011-0007", "qualified_at": "2026-10-11T14:32:00Z",
    "available_at": "2026-10-25T14:32:00Z", "referrer_points": 50, "referee_points": 20, "bonus_points": 0,
    "decision": "approved", "decided_at": "2026-10-12T08:05:00Z"}
PENDING: dict[str, Any] = {
    "referral_id": "ref-9da34abb90acc36f8a4b", "role": "referrer", "referrer_member_id": "m-00001",
    "referee_member_id": "m-00057", "status": "pending", "reason": None, "detail": "",
    "accepted_at": "2026-11-20T08:00:00Z", "via": "enrolled", "expires_at": "2026-12-20T08:00:00Z",
    "qualifying_order_id": None, "qualified_at": None, "available_at": None, "referrer_points": 0,
    "referee_points": 0, "bonus_points": 0, "decision": None, "decided_at": None}
NO_REFERRAL_PROGRAMME = {"unknown_program": "no programme 'defualt' (the programmes are default, retail, staff, "
                                            "starbucks)",
                         "no_referrals": "programme 'staff' has no referral section"}
UNKNOWN_REFERRAL = {"unknown_referral": "programme 'default' has no referral 'ref-5deb0177e2ec317a1d01'"}


class CodeOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"program_id": "default", "member_id": "m-00001", "code": "K7QM2XHD", "created_at": "2026-09-28T10:15:00Z"}]})

    program_id: str
    member_id: str
    code: str = Field(description="8 characters without look-alikes (no 0/O, 1/I/L); case and dashes are ignored "
                                  "when it comes back in an event")
    created_at: datetime


class ReferralOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [REWARDED]})

    referral_id: str
    role: Literal["referrer", "referee"] = Field(description="the member's side of this referral")
    referrer_member_id: str
    referee_member_id: str
    status: Status
    reason: str | None = Field(description="of a rejection: self_referral, already_referred, existing_customer, "
                                           "referrer_cap, velocity, expired; `velocity` while in review; `refund` "
                                           "when revoked")
    detail: str
    accepted_at: datetime
    via: Literal["accepted", "enrolled"]
    expires_at: datetime | None = Field(description="a pending referral expires without a qualifying purchase by then")
    qualifying_order_id: str | None
    qualified_at: datetime | None
    available_at: datetime | None = Field(description="when the rewards stop being pending")
    referrer_points: int = Field(description="points credited to the referrer and in force (the bonus apart)")
    referee_points: int
    bonus_points: int
    decision: Literal["approved", "rejected"] | None
    decided_at: datetime | None


class ReferralsOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"program_id": "default",
                                                               "referrals": [PENDING, REWARDED]}]})

    program_id: str
    referrals: list[ReferralOut]


class SpendOut(BaseModel):
    currency: str
    total: Decimal = Field(description="what the referees bought in the window, less what was refunded of it")
    per_referee: Decimal = Field(description="total / referees counted, to 2 places, half to even")


class TallyOut(BaseModel):
    accepted: int
    qualified: int = Field(description="made a qualifying purchase (whatever came of the referral after)")
    pending: int
    review: int
    rewarded: int
    revoked: int
    rejected: dict[str, int] = Field(description="by reason")
    conversion_rate: Decimal = Field(description="qualified / accepted, to 4 places, half to even")
    referees_counted: int = Field(description="referees of qualified referrals (rewarded, revoked or in review) "
                                              "whose later spend is counted")
    spend_after: list[SpendOut] = Field(description=f"referees' spend in the {QUALITY_DAYS} days after the qualifying "
                                                    "purchase (that purchase apart), by currency")


class ReferrerOut(TallyOut):
    member_id: str


class StatsOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "program_id": "default", "quality_days": QUALITY_DAYS,
        "programme": {"accepted": 12, "qualified": 7, "pending": 3, "review": 1, "rewarded": 5, "revoked": 1,
                      "rejected": {"expired": 1, "self_referral": 1}, "conversion_rate": "0.5833",
                      "referees_counted": 7,
                      "spend_after": [{"currency": "CNY", "total": "2315.50", "per_referee": "330.79"}]},
        "top_referrers": [{"member_id": "m-00001", "accepted": 5, "qualified": 4, "pending": 1, "review": 0,
                           "rewarded": 3, "revoked": 1, "rejected": {}, "conversion_rate": "0.8000",
                           "referees_counted": 4,
                           "spend_after": [{"currency": "CNY", "total": "980.00", "per_referee": "245.00"}]}]}]})

    program_id: str
    quality_days: int
    programme: TallyOut
    top_referrers: list[ReferrerOut]



def referral_out(r: asyncpg.Record, member_id: str | None) -> ReferralOut:
    return ReferralOut(
        referral_id=r["referral_id"],
        role="referee" if member_id == r["referee_id"] != r["referrer_id"] else "referrer",
        referrer_member_id=r["referrer_id"], referee_member_id=r["referee_id"],
        status="pending" if r["status"] == "new" else r["status"], reason=r["reason"], detail=r["detail"],
        accepted_at=r["accepted_at"], via=r["via"], expires_at=r["due_at"], qualifying_order_id=r["order_id"],
        qualified_at=r["qualified_at"], available_at=r["available_at"], referrer_points=r["live_referrer"],
        referee_points=r["live_referee"], bonus_points=r["live_bonus"], decision=r["decision"],
        decided_at=r["decided_at"])


def tally_out(t: Tally) -> TallyOut:
    rate = (Decimal(t.qualified) / Decimal(t.accepted)).quantize(RATE, ROUND_HALF_EVEN) if t.accepted else Decimal(0)
    spend = [SpendOut(currency=currency, total=total,
                      per_referee=(total / t.spenders).quantize(MONEY, ROUND_HALF_EVEN) if t.spenders else Decimal(0))
             for currency, total in sorted(t.spend.items())]
    return TallyOut(accepted=t.accepted, qualified=t.qualified, pending=t.by_status.get("pending", 0),
                    review=t.by_status.get("review", 0), rewarded=t.by_status.get("rewarded", 0),
                    revoked=t.by_status.get("revoked", 0), rejected=dict(sorted(t.rejected.items())),
                    conversion_rate=rate, referees_counted=t.spenders, spend_after=spend)

