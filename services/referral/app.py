"""Referral service wiring: reads referrals, members and purchases, and the ledger's answers to its commands;
credits both sides through the ledger and announces outcomes on jifen.referral.outcomes; serves codes, members'
referrals, the review queue and its decisions, and the programme's referral statistics."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import FastAPI, Query
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, ConfigDict, Field

from services.referral import reads
from services.referral.codes import new_code
from services.referral.domain import Decision, ReferralProgramme, Status
from services.referral.handlers import TakeEvents, TakeLedgerAnswers, Undecidable, decide, expiry, purchase_prune
from services.referral.judging import Judging, ReferralMetrics
from services.referral.reads import Tally
from services.referral.settings import ReferralSettings
from shared.auth import ApiKey
from shared.contracts.ledger_entries import CommandRejected, PointsEntryPosted
from shared.contracts.members import MemberEnrolled
from shared.contracts.purchases import PurchaseCompleted, PurchaseRefunded
from shared.contracts.referrals import ReferralAccepted
from shared.http import ApiError, PathId, ProgramPath, error_responses
from shared.programmes import Catalogue
from shared.service import Runtime, ServiceSpec, build_app, utc_now
from shared.subscription import Subscription

QUALITY_DAYS = 90  # referees' spend this long after qualifying measures a referral's quality
CODE_ATTEMPTS = 5  # a new code that collides with an issued one is drawn again
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
NO_REFERRAL_PROGRAMME = {"unknown_program": "no programme 'defualt'",
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


def spec(settings: ReferralSettings | None = None, clock: Callable[[], datetime] = utc_now) -> ServiceSpec:
    settings = settings or ReferralSettings()
    schema = settings.schema_name
    registry = CollectorRegistry()
    judging = Judging(Catalogue.load(settings.programmes_dir, ReferralProgramme), ReferralMetrics(registry))
    events = TakeEvents(judging, schema, clock)
    answers = TakeLedgerAnswers(judging, schema)

    def known(program_id: str) -> None:
        if program_id not in judging.catalogue.versions:
            raise ApiError(404, "unknown_program", f"no programme {program_id!r}")
        if program_id not in judging.programmes():
            raise ApiError(404, "no_referrals", f"programme {program_id!r} has no referral section")

    def routes(app: FastAPI, runtime: Runtime) -> None:
        # `admin` is a parameter's default (not a route dependency): the decision records the reviewer's key name.
        read, admin = [runtime.requires("read")], runtime.requires("admin")
        errors = error_responses(401, 403, 404, 422, 503, reasons={404: NO_REFERRAL_PROGRAMME})
        one = error_responses(401, 403, 404, 422, 503, reasons={404: {**NO_REFERRAL_PROGRAMME, **UNKNOWN_REFERRAL}})

        @app.get("/v1/programs/{program_id}/members/{member_id:path}/referral-code", response_model=CodeOut,
                 tags=["referral"], dependencies=read, responses=errors,
                 summary="The member's referral code, issued on the first ask and the same ever after")
        async def get_code(program_id: ProgramPath, member_id: PathId) -> CodeOut:
            """The member's referral code in the programme: 8 characters drawn at random without look-alikes,
            issued on the first ask (whether or not the service has seen the member) and the same ever after. Give it
            to the member to share; it comes back in `jifen.referral.accepted.v1` or an enrolment's `referral_code`.
            404 `unknown_program`, or `no_referrals` for a programme without a referral section. Needs the `read`
            scope."""
            known(program_id)
            async with runtime.connection() as db:
                for _ in range(CODE_ATTEMPTS):
                    found = await reads.issue_code(db, program_id, member_id, new_code(), runtime.spec.clock())
                    if found is not None:
                        return CodeOut(program_id=program_id, member_id=member_id, code=found["code"],
                                       created_at=found["created_at"])
            raise ApiError(503, "unavailable", "no free referral code was drawn; try again")

        @app.get("/v1/programs/{program_id}/members/{member_id:path}/referrals", response_model=ReferralsOut,
                 tags=["referral"], dependencies=read, responses=errors,
                 summary="The member's referrals, as referrer and as referee, newest first, with status and reason")
        async def get_member_referrals(program_id: ProgramPath, member_id: PathId,
                                       limit: Annotated[int, Query(ge=1, le=500)] = 100) -> ReferralsOut:
            """The member's referrals on either side (`role`), newest first, at most `limit`: each with its status
            (pending, review, rewarded, rejected, revoked), the reason and detail, how it was made (`via`), the
            qualifying order, when the rewards stop being pending and the points in force per side. 404
            `unknown_program` or `no_referrals`. Needs the `read` scope."""
            known(program_id)
            async with runtime.connection() as db:
                rows = await reads.member_referrals(db, program_id, member_id, limit)
            return ReferralsOut(program_id=program_id, referrals=[_referral(r, member_id) for r in rows])

        @app.get("/v1/programs/{program_id}/referrals/stats", response_model=StatsOut, tags=["referral"],
                 dependencies=read, responses=errors, summary="Referrals of the programme and of its top referrers: "
                 "accepted, qualified, rewarded, rejected by reason, conversion, and the referees' later spend")
        async def get_stats(program_id: ProgramPath, top: Annotated[int, Query(ge=1, le=100)] = 10) -> StatsOut:
            """Referral figures of the programme and of its `top` referrers (by referrals rewarded, then qualified):
            referrals judged, qualified, pending, in review, rewarded, revoked and rejected by reason, the conversion
            rate (qualified / accepted), and the referees' spend in the 90 days after their qualifying purchase, less
            refunds, by currency. 404 `unknown_program` or `no_referrals`. Needs the `read` scope."""
            known(program_id)
            async with runtime.connection() as db:
                programme, referrers = await reads.stats(db, program_id, QUALITY_DAYS, top)
            return StatsOut(program_id=program_id, quality_days=QUALITY_DAYS, programme=_tally(programme),
                            top_referrers=[ReferrerOut(member_id=m, **_tally(t).model_dump()) for m, t in referrers])

        @app.get("/v1/programs/{program_id}/referrals", response_model=ReferralsOut, tags=["referral"],
                 dependencies=read, responses=errors, summary="The programme's referrals of one status, oldest first "
                 "(`status=review`: the review queue)")
        async def get_referrals(program_id: ProgramPath, status: Status = "review",
                                limit: Annotated[int, Query(ge=1, le=500)] = 100) -> ReferralsOut:
            """The programme's referrals of one `status`, oldest first, at most `limit`. The default, `review`, is
            the queue of referrals held by a velocity limit (the detail says which) for a person to approve or reject.
            404 `unknown_program` or `no_referrals`. Needs the `read` scope."""
            known(program_id)
            async with runtime.connection() as db:
                rows = await reads.with_status(db, program_id, status, limit)
            return ReferralsOut(program_id=program_id, referrals=[_referral(r, r["referrer_id"]) for r in rows])

        @app.get("/v1/programs/{program_id}/referrals/{referral_id}", response_model=ReferralOut, tags=["referral"],
                 dependencies=read, responses=one, summary="One referral")
        async def get_referral(program_id: ProgramPath, referral_id: PathId) -> ReferralOut:
            """One referral by its id (derived from the programme and both members): its status with the reason and
            detail, how and when it was accepted, the qualifying order, when the rewards stop being pending, the
            points in force per side and a reviewer's decision. 404 `unknown_referral`, `unknown_program` or
            `no_referrals`. Needs the `read` scope."""
            known(program_id)
            async with runtime.connection() as db:
                return _referral(await _found(db, program_id, referral_id), None)

        async def decided(program_id: str, referral_id: str, decision: Decision, key: ApiKey) -> ReferralOut:
            known(program_id)
            async with runtime.unit_of_work() as uow:
                try:
                    await decide(judging, schema, uow, program_id, referral_id, decision, key.name,
                                 runtime.spec.clock())
                except Undecidable as refused:
                    raise ApiError(404 if refused.reason == "unknown_referral" else 409, refused.reason,
                                   refused.detail) from refused
                await uow.commit()
            async with runtime.connection() as db:
                return _referral(await _found(db, program_id, referral_id), None)

        decisions = error_responses(401, 403, 404, 409, 422, 503, reasons={
            404: {**NO_REFERRAL_PROGRAMME, **UNKNOWN_REFERRAL},
            409: {"not_in_review": "referral 'ref-5deb0177e2ec317a1d00' is rewarded, not held for review"}})

        @app.post("/v1/programs/{program_id}/referrals/{referral_id}/approve", response_model=ReferralOut,
                  tags=["referral"], responses=decisions, summary="Approve a referral held for review: it is judged "
                  "again without the velocity hold (the same decision again changes nothing)")
        async def approve(program_id: ProgramPath, referral_id: PathId, key: ApiKey = admin) -> ReferralOut:
            """Approve a referral held for review: it is judged again without the velocity hold, so it is rewarded
            at once (both sides credited through the ledger) unless something else stands in the way, such as the
            referrer's cap. The decision records your key's name. The same decision again changes nothing (200);
            otherwise a referral not in review is 409 `not_in_review`. Needs the `admin` scope."""
            return await decided(program_id, referral_id, "approved", key)

        @app.post("/v1/programs/{program_id}/referrals/{referral_id}/reject", response_model=ReferralOut,
                  tags=["referral"], responses=decisions, summary="Reject a referral held for review (reason "
                  "`velocity`); the place it held under the referrer's cap is freed")
        async def reject(program_id: ProgramPath, referral_id: PathId, key: ApiKey = admin) -> ReferralOut:
            """Reject a referral held for review: it becomes `rejected` with reason `velocity`, announced on
            jifen.referral.outcomes, and the place it held under the referrer's cap is freed. The decision records
            your key's name. The same decision again changes nothing (200); otherwise a referral not in review is 409
            `not_in_review`. Needs the `admin` scope."""
            return await decided(program_id, referral_id, "rejected", key)

    return ServiceSpec(
        name="referral", settings=settings, migrations=Path(__file__).parent / "migrations", registry=registry,
        catalogue=judging.catalogue,
        subscriptions=[
            # Members and purchases belong to several services: referral keeps its part of each.
            Subscription({ReferralAccepted: events, MemberEnrolled: events, PurchaseCompleted: events,
                          PurchaseRefunded: events}),
            # Of the ledger's entries, the answers to referral's own commands: the rest is skipped and counted.
            Subscription({PointsEntryPosted: answers, CommandRejected: answers}, others="skip"),
        ],
        jobs=[expiry(judging, schema, settings.expiry_interval_s),
              purchase_prune(judging, schema, settings.purchase_retention_days, settings.purchase_prune_interval_s)],
        routes=routes, clock=clock)


def create_app(settings: ReferralSettings | None = None) -> FastAPI:
    return build_app(spec(settings))


async def _found(db: asyncpg.Connection, program_id: str, referral_id: str) -> asyncpg.Record:
    found = await reads.referral(db, program_id, referral_id)
    if found is None:
        raise ApiError(404, "unknown_referral", f"programme {program_id!r} has no referral {referral_id!r}")
    return found


def _referral(r: asyncpg.Record, member_id: str | None) -> ReferralOut:
    return ReferralOut(
        referral_id=r["referral_id"],
        role="referee" if member_id == r["referee_id"] != r["referrer_id"] else "referrer",
        referrer_member_id=r["referrer_id"], referee_member_id=r["referee_id"],
        status="pending" if r["status"] == "new" else r["status"], reason=r["reason"], detail=r["detail"],
        accepted_at=r["accepted_at"], via=r["via"], expires_at=r["due_at"], qualifying_order_id=r["order_id"],
        qualified_at=r["qualified_at"], available_at=r["available_at"], referrer_points=r["live_referrer"],
        referee_points=r["live_referee"], bonus_points=r["live_bonus"], decision=r["decision"],
        decided_at=r["decided_at"])


def _tally(t: Tally) -> TallyOut:
    rate = (Decimal(t.qualified) / Decimal(t.accepted)).quantize(RATE, ROUND_HALF_EVEN) if t.accepted else Decimal(0)
    spend = [SpendOut(currency=currency, total=total,
                      per_referee=(total / t.spenders).quantize(MONEY, ROUND_HALF_EVEN) if t.spenders else Decimal(0))
             for currency, total in sorted(t.spend.items())]
    return TallyOut(accepted=t.accepted, qualified=t.qualified, pending=t.by_status.get("pending", 0),
                    review=t.by_status.get("review", 0), rewarded=t.by_status.get("rewarded", 0),
                    revoked=t.by_status.get("revoked", 0), rejected=dict(sorted(t.rejected.items())),
                    conversion_rate=rate, referees_counted=t.spenders, spend_after=spend)
