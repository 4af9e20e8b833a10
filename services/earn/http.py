"""Earn's routes: the programme versions it has loaded."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI

from services.earn.api import ProgrammeOut
from services.earn.programme import Programme
from shared.http import error_responses
from shared.programmes import Catalogue
from shared.service import Runtime


def routes(catalogue: Catalogue[Programme]) -> Callable[[FastAPI, Runtime], None]:
    def add(app: FastAPI, runtime: Runtime) -> None:
        @app.get("/v1/programs", tags=["earn"], response_model=list[ProgrammeOut], summary="Every loaded programme "
                 "version", dependencies=[runtime.requires("read")], responses=error_responses(401, 403, 503))
        async def list_programmes() -> list[ProgrammeOut]:
            """Every version of every programme that earn has loaded from the programme folder, with its name and
            when it takes effect (`effective_from`, ISO 8601). Earn first looks for changed files (at most every two
            seconds); a broken folder leaves the versions in force. Needs the `read` scope."""
            catalogue.refresh()
            return [ProgrammeOut(program_id=p.program_id, name=p.name, version=p.version,
                                 effective_from=p.effective_from.isoformat()) for p in catalogue]

    return add
