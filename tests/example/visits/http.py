"""Visits' routes: thin. Parse, call the recipe (`runtime.read` / `runtime.transaction`), answer."""

from __future__ import annotations

from fastapi import FastAPI, Response

from shared.http import PathId, ProgramPath, error_responses
from shared.programmes import Catalogue, ProgrammeVersion
from shared.service import Runtime
from shared.uow import UnitOfWork
from tests.example.visits import repository
from tests.example.visits.api import VisitsOut

MEMBER = "/v1/programs/{program_id}/members/{member_id:path}/visits"


def routes(app: FastAPI, runtime: Runtime, catalogue: Catalogue[ProgrammeVersion]) -> None:
    @app.get(MEMBER, response_model=VisitsOut, dependencies=[runtime.requires("read")],
             responses=error_responses(401, 403, 404, 422, 503))
    async def get_visits(program_id: ProgramPath, member_id: PathId) -> VisitsOut:
        """How many days the member checked in. 404 `unknown_program`; 503 while the database is away."""
        catalogue.in_force(program_id, runtime.spec.clock())  # a refusal: 404 at the edge
        found = await runtime.read(lambda db: repository.of_member(db, program_id, member_id))
        return VisitsOut(member_id=member_id, days=found.days if found else 0,
                         last_day=found.last_day if found else None)

    @app.delete(MEMBER, status_code=204, dependencies=[runtime.requires("admin")],
                responses=error_responses(401, 403, 404, 422, 503))
    async def forget_visits(program_id: ProgramPath, member_id: PathId) -> Response:
        """Forget the member's visits (a service desk's request). Retried on a concurrent writer; 503 while the
        database is away."""

        async def forget(uow: UnitOfWork) -> None:
            await repository.forget(uow.db, program_id, member_id)

        await runtime.transaction(forget)
        return Response(status_code=204)
