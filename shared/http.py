"""What every service's HTTP side shares: errors as `{error, detail}`, the id rule for path parameters, and the
OpenAPI description of both.

Every refusal is an `ApiError` with a reason code (the same code as the DLQ header, outcome event and metric label
of the same refusal, see shared/refusal.py) and a sentence. FastAPI's own errors (an unknown path, a bad body or
parameter) are answered in the same shape, so a client reads one kind of error from every endpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from fastapi import FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.contracts.base import ID_MAX_LENGTH, ID_PATTERN
from shared.refusal import Refusal

log = logging.getLogger(__name__)

# A member, order or reward id in a URL obeys the same rule as in an event, so an id means the same on every path
# in. A `/` inside an id is served: the route takes the rest of the path up to its last fixed segment.
PathId = Annotated[str, Path(min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN)]
ProgramPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
BIGINT_MAX = 2**63 - 1  # the largest value a PostgreSQL bigint (a sequence number, an id) holds


class ErrorBody(BaseModel):
    error: str = Field(description="a stable reason code, e.g. insufficient_points", examples=["invalid_request"])
    detail: str = Field(description="what was wrong, in a sentence")


class ApiError(Refusal):
    """An HTTP refusal: status, reason code and detail (and headers to send with it)."""

    def __init__(self, status: int, reason: str, detail: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(reason, detail)
        self.status = status
        self.headers = dict(headers or {})


RETRY_AFTER_S = 1


def unavailable(exc: BaseException | str) -> ApiError:
    """503 `unavailable` with `Retry-After`: the database (or the service) cannot answer now; the same request
    later can. Never a 500 for an outage."""
    detail = exc if isinstance(exc, str) else f"the database did not answer: {type(exc).__name__}"
    return ApiError(503, "unavailable", detail, headers={"Retry-After": str(RETRY_AFTER_S)})


# The status of a domain refusal (a `Refusal` a use case raises) at the HTTP edge, by reason code; a service adds
# its own (`ServiceSpec.refusal_status`), and a reason named nowhere is 409, refused by a business rule.
REFUSAL_STATUS: dict[str, int] = {"unknown_program": 404}


# What any route may answer with these statuses, reason code → detail, as the service writes them: the key check
# (shared/auth.py), FastAPI's parsing and validation (`install` below) and a service still starting. A 403 names
# the route's scope, so the kit adds it (`missing_scope`).
SHARED_REASONS: dict[int, dict[str, str]] = {
    400: {"bad_request": "There was an error parsing the body"},
    401: {"missing_api_key": "send `Authorization: Bearer <api key>`; create a key with `jifen keys create`",
          "invalid_api_key": "the API key is unknown, malformed or revoked"},
    422: {"invalid_request": "path.program_id: String should match pattern '^[A-Za-z0-9_.-]+$'"},
    503: {"unavailable": "the service is starting; try again in a moment"},
}
ERROR_SCHEMA = {"$ref": "#/components/schemas/ErrorBody"}


def error_responses(*statuses: int, reasons: Mapping[int, Mapping[str, str]] | None = None,
                    ) -> dict[int | str, dict[str, Any]]:
    """OpenAPI descriptions of the error answers a route gives, all `ErrorBody`, with an example of each reason code:
    the shared ones and the route's own (`reasons`: status → reason → an example detail; a route's own detail of a
    shared reason replaces the shared one)."""
    said = {400: "bad request", 401: "no valid API key", 403: "the key lacks the scope", 404: "not found",
            409: "refused by a business rule", 422: "invalid request", 503: "the service is not ready"}
    own = reasons or {}
    answers: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        given = {**SHARED_REASONS.get(status, {}), **own.get(status, {})}
        answers[status] = {"model": ErrorBody, "description": said.get(status, "error"), "content": {
            "application/json": examples({reason: {"error": reason, "detail": d} for reason, d in given.items()})}}
    return answers


def missing_scope(scope: str) -> dict[str, Any]:
    """The 403 of a route that asks for `scope`: the key check's one refusal (`till-01` is an example key name)."""
    refused = {"error": "missing_scope", "detail": f"key 'till-01' does not have the {scope!r} scope"}
    return {"description": "the key lacks the scope",
            "content": {"application/json": {"schema": ERROR_SCHEMA, **examples({"missing_scope": refused})}}}


def examples(named: Mapping[str, Any]) -> dict[str, Any]:
    """An OpenAPI media type's named examples (Swagger UI offers them in a list)."""
    return {"examples": {name: {"value": value} for name, value in named.items()}}


_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
          406: "not_acceptable", 409: "conflict", 413: "too_large", 415: "unsupported_media_type",
          422: "invalid_request", 429: "too_many_requests", 503: "unavailable"}


def install(app: FastAPI, refusal_status: Mapping[str, int] | None = None,
            is_transient: Callable[[BaseException], bool] = lambda _: False) -> None:
    """Answer every error as `{error, detail}` JSON: refusals with their status, a database outage as 503 with
    `Retry-After` wherever it surfaces, and a bug as a 500 that says so (and is logged)."""
    statuses = {**REFUSAL_STATUS, **(refusal_status or {})}

    @app.exception_handler(ApiError)
    async def refused(_: Request, exc: ApiError) -> JSONResponse:
        headers = {**exc.headers, **({"WWW-Authenticate": "Bearer"} if exc.status == 401 else {})}
        return JSONResponse({"error": exc.reason, "detail": exc.detail}, status_code=exc.status,
                            headers=headers or None)

    @app.exception_handler(Refusal)
    async def domain_refusal(request: Request, exc: Refusal) -> JSONResponse:
        if isinstance(exc, ApiError):
            return await refused(request, exc)
        return JSONResponse({"error": exc.reason, "detail": exc.detail}, status_code=statuses.get(exc.reason, 409))

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception) -> JSONResponse:
        if is_transient(exc):
            return await refused(request, unavailable(exc))
        log.error("request failed", exc_info=exc, extra={"path": request.url.path})
        return JSONResponse({"error": "internal_error", "detail": f"the request failed: {type(exc).__name__}; "
                             "the service logged it"}, status_code=500)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": "invalid_request", "detail": _summary(exc.errors())}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return JSONResponse({"error": _CODES.get(exc.status_code, "error"), "detail": detail},
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))


def _summary(errors: Any) -> str:
    parts = []
    for err in list(errors)[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "request"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"
