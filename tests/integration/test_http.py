"""Every service's HTTP side, in-process over real PostgreSQL (the fast harness): API keys and scopes, errors as
`{error, detail}`, and the inputs found to give a 500 or a wrong answer when tried by hand."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from services.earn.app import spec as earn_spec
from services.insight.app import spec as insight_spec
from services.ledger.app import spec as ledger_spec
from services.redemption.app import spec as redemption_spec
from services.referral.app import spec as referral_spec
from services.tiers.app import spec as tiers_spec
from shared import auth
from shared.auth import ApiKey
from shared.contracts import topics
from shared.contracts.ledger_commands import Cause, PostCredit
from shared.contracts.purchases import PurchaseCompleted
from shared.service import OPEN_PATHS, Runtime, ServiceSpec, build_app
from shared.settings import Settings
from shared.testing import ServiceHarness, cloud_event
from tests.support import Infra

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
async def ledger(infra: Infra) -> AsyncIterator[ServiceHarness]:
    async with ServiceHarness(ledger_spec(), await infra.new_database("http_")) as harness:
        yield harness


def credit(member: str, amount: int, key: str) -> bytes:
    cmd = PostCredit(idempotency_key=key, program_id="default", member_id=member, amount=amount, occurred_at=NOW,
                     cause=Cause(source_event_id=f"test|{key}"))
    return cloud_event(PostCredit, key, NOW, cmd.model_dump(mode="json"))


def guarded(app: FastAPI) -> list[tuple[str, str]]:
    """Every route a key must open, as (method, path) with its path parameters filled in."""
    routes = [(m, r.path) for r in app.routes if isinstance(r, APIRoute) and r.path not in OPEN_PATHS
              for m in sorted(r.methods or ())]
    return [(m, re.sub(r"\{[a-z_]+(:path)?\}", "x", p.replace("{program_id}", "default"))) for m, p in routes]


@pytest.mark.parametrize("make", [earn_spec, ledger_spec, tiers_spec, referral_spec, redemption_spec, insight_spec],
                         ids=["earn", "ledger", "tiers", "referral", "redemption", "insight"])
async def test_every_endpoint_but_health_and_metrics_answers_401_without_a_valid_key(infra: Infra,
                                                                                     make: object) -> None:
    async with ServiceHarness(make(), await infra.new_database("http_")) as service:  # type: ignore[operator]
        routes = guarded(service.app)
        assert routes, "the service has routes behind keys"
        for method, path in routes:
            response = await service.request(method, path, token="")
            assert (response.status_code, response.json()["error"]) == (401, "missing_api_key"), (method, path)
            assert response.headers["www-authenticate"] == "Bearer"
            response = await service.request(method, path, token="jifen_000000000000_" + "x" * 43)
            assert (response.status_code, response.json()["error"]) == (401, "invalid_api_key"), (method, path)
            response = await service.request(method, path, token="not a key at all")
            assert response.status_code == 401, (method, path)
        for open_path in ("/health/live", "/metrics", "/openapi.json"):
            assert (await service.request("GET", open_path, token="")).status_code == 200, open_path


async def test_a_read_key_reads_and_once_revoked_is_refused(ledger: ServiceHarness) -> None:
    await ledger.send(topics.LEDGER_COMMANDS, credit("ann", 70, "earn:1"), key="ann")
    conn = await asyncpg.connect(ledger.spec.settings.asyncpg_dsn)
    try:
        key, token = await auth.create_key(conn, "till-7", ["read"])
        status, body = await ledger.get("/v1/programs/default/members/ann/balance", token=token)
        assert (status, body["available"]) == (200, 70)
        assert await auth.revoke_key(conn, key.key_id)
        assert not await auth.revoke_key(conn, key.key_id)  # once
        listed = {r["key_id"]: r["revoked_at"] for r in await auth.list_keys(conn)}
        assert listed[key.key_id] is not None
        stored = await conn.fetchval("SELECT secret_hash FROM auth.api_keys WHERE key_id = $1", key.key_id)
        assert token.split("_", 2)[2].encode() not in bytes(stored)  # hashed, not the secret
    finally:
        await conn.close()
    status, body = await ledger.get("/v1/programs/default/members/ann/balance", token=token)
    assert (status, body["error"]) == (401, "invalid_api_key")


def test_scopes_nest_admin_over_redeem_over_read() -> None:
    read, redeem, admin = (ApiKey("k", "n", frozenset({s})) for s in ("read", "redeem", "admin"))
    assert [read.allows(s) for s in auth.SCOPES] == [True, False, False]
    assert [redeem.allows(s) for s in auth.SCOPES] == [True, True, False]
    assert [admin.allows(s) for s in auth.SCOPES] == [True, True, True]


def test_a_service_with_a_route_that_asks_for_no_key_is_not_built() -> None:
    def routes(app: FastAPI, runtime: Runtime) -> None:
        @app.get("/v1/open-by-mistake")
        async def oops() -> dict[str, str]:
            return {}

    with pytest.raises(RuntimeError, match="/v1/open-by-mistake has no API key scope"):
        build_app(ServiceSpec("oops", Settings(), ledger_spec().migrations, routes=routes))


@pytest.mark.parametrize(("path", "where"), [
    ("/v1/programs/default/members/a%00b/balance", "member_id"),  # PostgreSQL cannot store NUL: was a 500
    ("/v1/programs/default/members/a%00b/entries", "member_id"),
    ("/v1/programs/default/members/%1b%5b31m/balance", "member_id"),  # an escape sequence
    ("/v1/programs/de%00fault/members/ann/balance", "program_id"),
    ("/v1/programs/default/members/ann/entries?before_seq=9223372036854775808", "before_seq"),  # was a 500
    ("/v1/programs/default/members/ann/entries?limit=0", "limit"),
])
async def test_bad_path_and_query_values_are_422_with_the_parameter_named(ledger: ServiceHarness, path: str,
                                                                          where: str) -> None:
    status, body = await ledger.get(path)
    assert status == 422 and body["error"] == "invalid_request" and where in body["detail"], body


async def test_a_member_id_with_a_slash_is_served_raw_and_escaped(ledger: ServiceHarness) -> None:
    """The event contract allows `/` in a member id: such a member earned points but its balance was a 404."""
    await ledger.send(topics.LEDGER_COMMANDS, credit("shop/ann", 30, "earn:slash"), key="shop/ann")
    for member in ("shop/ann", "shop%2Fann", "shop%2fann"):
        status, body = await ledger.get(f"/v1/programs/default/members/{member}/balance")
        assert (status, body["member_id"], body["available"]) == (200, "shop/ann", 30), member
        status, body = await ledger.get(f"/v1/programs/default/members/{member}/entries")
        assert status == 200 and [e["amount"] for e in body["entries"]] == [30], member


async def test_an_unknown_path_and_a_wrong_method_answer_in_the_error_shape(ledger: ServiceHarness) -> None:
    status, body = await ledger.get("/v1/nothing-here")
    assert (status, body["error"]) == (404, "not_found")
    response = await ledger.request("DELETE", "/v1/programs/default/members/ann/balance")
    assert (response.status_code, response.json()["error"]) == (405, "method_not_allowed")


async def test_a_path_no_route_matches_is_a_documented_404_in_the_error_shape(ledger: ServiceHarness) -> None:
    """Found by the fuzzer: a member id with a line break matches no route's pattern; the 404 it gets must be in the
    OpenAPI document of every route with path parameters."""
    status, body = await ledger.get("/v1/programs/default/members/a%0Ab/balance")
    assert (status, body["error"]) == (404, "not_found")
    status, document = await ledger.get("/openapi.json")
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if "{" in path:
                assert "404" in operation["responses"], (method, path)


async def test_the_api_docs_work_offline_from_the_packages_own_files(ledger: ServiceHarness) -> None:
    for page in ("/docs", "/redoc"):
        response = await ledger.request("GET", page, token="")
        assert response.status_code == 200, page
        assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', response.text)
        assert assets and all(a.startswith("/static-offline-docs/") for a in assets), (page, assets)  # no CDN
        for asset in assets:
            assert (await ledger.request("GET", asset, token="")).status_code == 200, asset


async def test_metrics_is_described_as_prometheus_text_and_serves_it(ledger: ServiceHarness) -> None:
    status, spec = await ledger.get("/openapi.json")
    assert status == 200
    content = spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(content) == ["text/plain"]
    response = await ledger.request("GET", "/metrics", token="")
    assert response.headers["content-type"].startswith("text/plain") and "jifen_ready" in response.text
    security = spec["components"]["securitySchemes"]["ApiKey"]
    assert security["scheme"] == "bearer"


async def test_a_nul_in_an_events_member_id_is_invalid_data_not_a_database_error(infra: Infra) -> None:
    async with ServiceHarness(earn_spec(), await infra.new_database("http_")) as earn:
        out = await earn.send(topics.PURCHASES, cloud_event(PurchaseCompleted, "p1", NOW, {
            "member_id": "a\u0000b", "order_id": "o1", "channel": "pos", "currency": "CNY", "total": "10"}))
    assert [(d.reason, d.detail.split(":")[0]) for d in out.dead] == [("invalid_data", "member_id")]
