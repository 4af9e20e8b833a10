"""Every service's HTTP side, probed by schemathesis from its own OpenAPI document: valid and invalid requests, with
and without a key, never a 5xx and never an answer outside the document (status, content type, body schema).

In-process over real PostgreSQL (the fast harness), on an event loop of its own because Hypothesis drives the test
synchronously. `JIFEN_FUZZ_EXAMPLES` sets the examples per operation and mode (default 25).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, assume, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from services.earn.app import spec as earn_spec
from services.insight.app import spec as insight_spec
from services.ledger.app import spec as ledger_spec
from services.redemption.app import spec as redemption_spec
from services.referral.app import spec as referral_spec
from services.tiers.app import spec as tiers_spec
from shared.contracts import topics
from shared.contracts.ledger_commands import Cause, PostCredit
from shared.service import ServiceSpec
from shared.testing import ServiceHarness, cloud_event
from tests.support import Infra

EXAMPLES = int(os.environ.get("JIFEN_FUZZ_EXAMPLES", "25"))
SERVICES: dict[str, Callable[[], ServiceSpec]] = {"earn": earn_spec, "ledger": ledger_spec, "tiers": tiers_spec,
                                                     "referral": referral_spec, "redemption": redemption_spec,
                                                     "insight": insight_spec}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


async def _seed(harness: ServiceHarness) -> None:
    """Something to read: a member with entries, so answers have bodies to check against their schemas."""
    if harness.spec.name != "ledger":
        return
    now = datetime.now(UTC)
    for n in range(3):
        cmd = PostCredit(idempotency_key=f"seed:{n}", program_id="default", member_id="ann", amount=10 + n,
                         occurred_at=now, cause=Cause(source_event_id=f"seed|{n}"))
        await harness.send(topics.LEDGER_COMMANDS, cloud_event(PostCredit, f"seed-{n}", now,
                                                               cmd.model_dump(mode="json")), key="ann")


@pytest.fixture(params=list(SERVICES))
def service(request: pytest.FixtureRequest, infra: Infra) -> Iterator[tuple[asyncio.AbstractEventLoop,
                                                                           ServiceHarness]]:
    loop = asyncio.new_event_loop()
    harness = ServiceHarness(SERVICES[request.param](), loop.run_until_complete(infra.new_database("fuzz_")))
    loop.run_until_complete(harness.__aenter__())
    loop.run_until_complete(_seed(harness))
    try:
        yield loop, harness
    finally:
        loop.run_until_complete(harness.__aexit__())
        loop.close()


async def _send(harness: ServiceHarness, kwargs: dict[str, Any]) -> httpx.Response:
    transport = httpx.ASGITransport(app=harness.app)
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.request(kwargs.pop("method"), kwargs.pop("url"), **kwargs)
        await response.aread()
        return response


def test_no_request_gets_a_5xx_or_an_answer_outside_the_openapi_document(
        service: tuple[asyncio.AbstractEventLoop, ServiceHarness]) -> None:
    loop, harness = service
    schema = schemathesis.openapi.from_dict(harness.app.openapi())
    # Readiness answers 503 here by design (the harness has no broker) and takes no input to fuzz.
    operations = [op for op in (result.ok() for result in schema.get_all_operations())  # type: ignore[union-attr]
                  if op.path != "/health/ready"]
    assert operations
    tried: dict[str, int] = {}
    def probe(operation: Any, mode: GenerationMode, token: str) -> None:
        @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case: Any) -> None:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            kwargs = case.as_transport_kwargs(base_url="http://harness", headers=headers)
            kwargs.pop("cookies", None)
            # A header is bytes on the wire (latin-1 at most): httpx sends str values as ASCII only, so invalid
            # values (e.g. an Idempotency-Key with \x80) go as bytes; one beyond latin-1 no client can send.
            try:
                kwargs["headers"] = {k: v.encode("latin-1") if isinstance(v, str) else v
                                     for k, v in (kwargs.get("headers") or {}).items()}
            except UnicodeEncodeError:
                assume(False)
            response = loop.run_until_complete(_send(harness, kwargs))
            case.validate_response(response, checks=CHECKS)
            label = f"{operation.method.upper()} {operation.path}"
            tried[label] = tried.get(label, 0) + 1

        run()

    for operation in operations:
        takes_input = bool(operation.definition.raw.get("parameters") or operation.definition.raw.get("requestBody"))
        # An operation without parameters or body has no invalid input to make.
        modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if takes_input else (GenerationMode.POSITIVE,)
        for mode in modes:
            for token in (harness.token, ""):
                probe(operation, mode, token)
    print(f"{harness.spec.name}: {sum(tried.values())} requests over {len(tried)} operations")
    assert len(tried) == len(operations)


@pytest.fixture
def redemption(infra: Infra) -> Iterator[tuple[asyncio.AbstractEventLoop, ServiceHarness]]:
    loop = asyncio.new_event_loop()
    harness = ServiceHarness(redemption_spec(), loop.run_until_complete(infra.new_database("fuzz_")))
    loop.run_until_complete(harness.__aenter__())
    try:
        yield loop, harness
    finally:
        loop.run_until_complete(harness.__aexit__())
        loop.close()


def test_every_payment_body_the_schema_allows_is_taken_or_refused_by_a_rule_never_as_invalid(
        redemption: tuple[asyncio.AbstractEventLoop, ServiceHarness]) -> None:
    """What the document says a payment body may be (a `basket_total` of the type it gives), the service takes: it
    answers 202, or 409 with a rule's reason, never 422 for a body the document allows (schemathesis ST202)."""
    loop, harness = redemption
    schema = schemathesis.openapi.from_dict(harness.app.openapi())
    [operation] = [op for op in (result.ok() for result in schema.get_all_operations())  # type: ignore[union-attr]
                   if op.path == "/v1/programs/{program_id}/payments" and op.method.upper() == "POST"]
    keys = iter(range(10**9))

    @settings(max_examples=EXAMPLES * 2, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE))
    def run(case: Any) -> None:
        # A programme in force, a key of its own (the same key with another body is a conflict the document cannot
        # express) and no wait: what is left is the body as generated.
        case.path_parameters = {"program_id": "default"}
        case.query = {}
        case.headers = {"Idempotency-Key": f"fuzz-{next(keys)}"}
        kwargs = case.as_transport_kwargs(base_url="http://harness",
                                          headers={"Authorization": f"Bearer {harness.token}"})
        kwargs.pop("cookies", None)
        response = loop.run_until_complete(_send(harness, kwargs))
        assert response.status_code in (202, 409), (case.body, response.json())

    run()
