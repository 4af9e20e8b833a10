"""The referral service's routes: members' codes and referrals, the programme's referrals by status (the review
queue), its statistics, and reviewers' decisions. Every route's database work goes through the kit's recipe
(`runtime.read` / `runtime.transaction`), so an outage is a 503 with `Retry-After`; refusals are the domain's,
mapped to a status at the edge (`REFUSAL_STATUS`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import asyncpg
from fastapi import FastAPI, Query

from services.referral.api import (
    NO_REFERRAL_PROGRAMME,
    QUALITY_DAYS,
    UNKNOWN_REFERRAL,
    CodeOut,
    ReferralOut,
    ReferralsOut,
    ReferrerOut,
    StatsOut,
    referral_out,
    tally_out,
)
from services.referral.domain import Decision, Status
from services.referral.judging import Judging
from services.referral.repository import codes, referrals, stats
from services.referral.review import decide, unknown_referral
from shared.auth import ApiKey
from shared.http import PathId, ProgramPath, error_responses, unavailable
from shared.service import Runtime
from shared.uow import UnitOfWork

REFUSAL_STATUS = {"no_referrals": 404, "unknown_referral": 404}  # the rest: 404 unknown_program, 409 by a rule


def routes(judging: Judging, schema: str) -> Callable[[FastAPI, Runtime], None]:
    def install(app: FastAPI, runtime: Runtime) -> None:
        # `admin` is a parameter's default (not a route dependency): the decision records the reviewer's key name.
        read, admin = [runtime.requires("read")], runtime.requires("admin")
        errors = error_responses(401, 403, 404, 422, 503, reasons={404: NO_REFERRAL_PROGRAMME})
        one = error_responses(401, 403, 404, 422, 503, reasons={404: {**NO_REFERRAL_PROGRAMME, **UNKNOWN_REFERRAL}})

        def serving(program_id: str) -> None:
            judging.serving(program_id, runtime.spec.clock())

        @app.get("/v1/programs/{program_id}/members/{member_id:path}/referral-code", response_model=CodeOut,
                 tags=["referral"], dependencies=read, responses=errors,
                 summary="The member's referral code, issued on the first ask and the same ever after")
        async def get_code(program_id: ProgramPath, member_id: PathId) -> CodeOut:
            """The member's referral code in the programme: 8 characters drawn at random without look-alikes,
            issued on the first ask (whether or not the service has seen the member) and the same ever after. Give it
            to the member to share; it comes back in `jifen.referral.accepted.v1` or an enrolment's `referral_code`.
            404 `unknown_program`, or `no_referrals` for a programme without a referral section. Needs the `read`
            scope."""
            serving(program_id)

            async def issue(uow: UnitOfWork) -> asyncpg.Record | None:
                return await codes.issue(uow.db, program_id, member_id, runtime.spec.clock())

            found = await runtime.transaction(issue)
            if found is None:
                raise unavailable("no free referral code was drawn; try again")
            return CodeOut(program_id=program_id, member_id=member_id, code=found["code"],
                           created_at=found["created_at"])

        @app.get("/v1/programs/{program_id}/members/{member_id:path}/referrals", response_model=ReferralsOut,
                 tags=["referral"], dependencies=read, responses=errors,
                 summary="The member's referrals, as referrer and as referee, newest first, with status and reason")
        async def get_member_referrals(program_id: ProgramPath, member_id: PathId,
                                       limit: Annotated[int, Query(ge=1, le=500)] = 100) -> ReferralsOut:
            """The member's referrals on either side (`role`), newest first, at most `limit`: each with its status
            (pending, review, rewarded, rejected, revoked), the reason and detail, how it was made (`via`), the
            qualifying order, when the rewards stop being pending and the points in force per side. 404
            `unknown_program` or `no_referrals`. Needs the `read` scope."""
            serving(program_id)
            rows = await runtime.read(lambda db: referrals.member_referrals(db, program_id, member_id, limit))
            return ReferralsOut(program_id=program_id, referrals=[referral_out(r, member_id) for r in rows])

        @app.get("/v1/programs/{program_id}/referrals/stats", response_model=StatsOut, tags=["referral"],
                 dependencies=read, responses=errors, summary="Referrals of the programme and of its top referrers: "
                 "accepted, qualified, rewarded, rejected by reason, conversion, and the referees' later spend")
        async def get_stats(program_id: ProgramPath, top: Annotated[int, Query(ge=1, le=100)] = 10) -> StatsOut:
            """Referral figures of the programme and of its `top` referrers (by referrals rewarded, then qualified):
            referrals judged, qualified, pending, in review, rewarded, revoked and rejected by reason, the conversion
            rate (qualified / accepted), and the referees' spend in the 90 days after their qualifying purchase, less
            refunds, by currency. 404 `unknown_program` or `no_referrals`. Needs the `read` scope."""
            serving(program_id)
            programme, referrers = await runtime.read(lambda db: stats.stats(db, program_id, QUALITY_DAYS, top))
            return StatsOut(program_id=program_id, quality_days=QUALITY_DAYS, programme=tally_out(programme),
                            top_referrers=[ReferrerOut(member_id=m, **tally_out(t).model_dump()) for m, t in referrers])

        @app.get("/v1/programs/{program_id}/referrals", response_model=ReferralsOut, tags=["referral"],
                 dependencies=read, responses=errors, summary="The programme's referrals of one status, oldest first "
                 "(`status=review`: the review queue)")
        async def get_referrals(program_id: ProgramPath, status: Status = "review",
                                limit: Annotated[int, Query(ge=1, le=500)] = 100) -> ReferralsOut:
            """The programme's referrals of one `status`, oldest first, at most `limit`. The default, `review`, is
            the queue of referrals held by a velocity limit (the detail says which) for a person to approve or reject;
            `pending` includes the referrals not judged yet. 404 `unknown_program` or `no_referrals`. Needs the
            `read` scope."""
            serving(program_id)
            rows = await runtime.read(lambda db: referrals.with_status(db, program_id, status, limit))
            return ReferralsOut(program_id=program_id, referrals=[referral_out(r, r["referrer_id"]) for r in rows])

        async def one_referral(program_id: str, referral_id: str) -> ReferralOut:
            found = await runtime.read(lambda db: referrals.referral(db, program_id, referral_id))
            if found is None:
                raise unknown_referral(program_id, referral_id)
            return referral_out(found, None)

        @app.get("/v1/programs/{program_id}/referrals/{referral_id}", response_model=ReferralOut, tags=["referral"],
                 dependencies=read, responses=one, summary="One referral")
        async def get_referral(program_id: ProgramPath, referral_id: PathId) -> ReferralOut:
            """One referral by its id (derived from the programme and both members): its status with the reason and
            detail, how and when it was accepted, the qualifying order, when the rewards stop being pending, the
            points in force per side and a reviewer's decision. 404 `unknown_referral`, `unknown_program` or
            `no_referrals`. Needs the `read` scope."""
            serving(program_id)
            return await one_referral(program_id, referral_id)

        async def decided(program_id: str, referral_id: str, decision: Decision, key: ApiKey) -> ReferralOut:
            serving(program_id)

            async def work(uow: UnitOfWork) -> None:
                await decide(judging, schema, uow, program_id, referral_id, decision, key.name, runtime.spec.clock())

            await runtime.transaction(work)
            return await one_referral(program_id, referral_id)

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

    return install
