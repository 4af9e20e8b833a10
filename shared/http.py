"""What every service's HTTP side shares: errors as `{error, detail}`, the id rule for path parameters, and the
OpenAPI description of both.

Every refusal is an `ApiError` with a reason code (the same code as the DLQ header, outcome event and metric label
of the same refusal, see shared/refusal.py) and a sentence. FastAPI's own errors (an unknown path, a bad body or
parameter) are answered in the same shape, so a client reads one kind of error from every endpoint.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.contracts.base import ID_MAX_LENGTH, ID_PATTERN
from shared.refusal import Refusal

# A member, order or reward id in a URL obeys the same rule as in an event, so an id means the same on every path
# in. A `/` inside an id is served: the route takes the rest of the path up to its last fixed segment.
PathId = Annotated[str, Path(min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN)]
ProgramPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
BIGINT_MAX = 2**63 - 1  # the largest value a PostgreSQL bigint (a sequence number, an id) holds


class ErrorBody(BaseModel):
    error: str = Field(description="a stable reason code, e.g. insufficient_points", examples=["invalid_request"])
    detail: str = Field(description="what was wrong, in a sentence")


class ApiError(Refusal):
    """An HTTP refusal: status, reason code and detail."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(reason, detail)
        self.status = status


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI descriptions of the error answers a route gives, all `ErrorBody`."""
    said = {400: "bad request", 401: "no valid API key", 403: "the key lacks the scope", 404: "not found",
            409: "refused by a business rule", 422: "invalid request", 503: "the service is not ready"}
    return {status: {"model": ErrorBody, "description": said.get(status, "error")} for status in statuses}


_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
          406: "not_acceptable", 409: "conflict", 413: "too_large", 415: "unsupported_media_type",
          422: "invalid_request", 429: "too_many_requests", 503: "unavailable"}


def install(app: FastAPI) -> None:
    """Answer every error as `{error, detail}` JSON."""

    @app.exception_handler(ApiError)
    async def refused(_: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"error": exc.reason, "detail": exc.detail}, status_code=exc.status, headers=headers)

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
