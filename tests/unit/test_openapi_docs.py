"""Every service's OpenAPI document, as Swagger UI shows it: each operation has a summary and a description, an
example of each JSON body it takes and of each JSON answer it gives (as the route's own models would send it), and
its error answers, each with an example per reason code. The examples of the key check's and FastAPI's own errors
are held against what the apps answer, built without a database or Kafka (a well-formed key then meets a service
still starting: 503).

An example is declared on its model (`json_schema_extra`) or on the route (`responses`); FastAPI drops the nulls of
every example when it writes the document, so an example is validated as declared and then found in the document
less its nulls."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel, TypeAdapter

from services.earn.app import spec as earn_spec
from services.insight.app import spec as insight_spec
from services.ledger.app import spec as ledger_spec
from services.redemption.app import spec as redemption_spec
from services.referral.app import spec as referral_spec
from services.tiers.app import spec as tiers_spec
from shared.auth import ApiKey
from shared.http import ErrorBody
from shared.service import ServiceSpec, build_app

SERVICES: dict[str, Callable[[], ServiceSpec]] = {"earn": earn_spec, "insight": insight_spec, "ledger": ledger_spec,
                                                   "tiers": tiers_spec, "redemption": redemption_spec,
                                                   "referral": referral_spec}
OPEN = {"/health/live", "/health/ready", "/metrics"}
# A real value for each path parameter, so a request reaches the route's own checks; `defualt` is no programme.
PATH_VALUES = {"program_id": "defualt", "member_id": "m-00001", "entry_id": "48213", "reward_id": "coupon-5",
               "idempotency_key": "admin:3f9c2a7b1e04:adj-2026-0001", "redemption_id": "rd_4be0c2a9d17f36e85a10",
               "payment_id": "pm_1f0e2d3c4b5a69788796", "code": "7M3QK-2ZC9D-XW4HB-R8TNE",
               "referral_id": "ref-5deb0177e2ec317a1d00", "band": "2-3x", "experiment_id": "referral-50"}
WELL_FORMED_KEY = "jifen_3f9c2a7b1e04_" + "s" * 43


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    doc: dict[str, Any]  # the operation's OpenAPI description
    route: APIRoute
    document: dict[str, Any]  # the whole OpenAPI document, for its components

    def __str__(self) -> str:
        return f"{self.method.upper()} {self.path}"

    @property
    def guarded(self) -> bool:
        return self.path not in OPEN

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            schema = self.document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
        return schema

    def shown(self, media: dict[str, Any] | None) -> list[Any]:
        """The examples the document gives a media type: its own, else its schema's (an array: of its items)."""
        media = media or {}
        if "example" in media or "examples" in media:
            return own_examples(media)
        schema = media.get("schema", {})
        for option in schema.get("anyOf", [schema]):  # an optional body: the schema or null
            if option.get("type") == "array":
                return [[item] for item in self.resolve(option["items"]).get("examples", [])]
            if found := self.resolve(option).get("examples"):
                return list(found)
        return []

    def model_of(self, status: int) -> Any:
        declared = self.route.responses.get(status, {}).get("model")
        return declared or (self.route.response_model if status < 400 else ErrorBody)

    def given(self, status: int) -> list[Any]:
        """The examples the code declares for an answer: on the route, else on the answer's model."""
        declared = own_examples(self.route.responses.get(status, {}).get("content", {}).get("application/json", {}))
        return declared or model_examples(self.model_of(status))

    def url(self) -> str:
        path = self.path
        for name, value in PATH_VALUES.items():
            path = path.replace(f"{{{name}}}", value)
        assert "{" not in path, f"{self}: no value for a path parameter"
        return path


def own_examples(media: dict[str, Any]) -> list[Any]:
    if "example" in media:
        return [media["example"]]
    return [named["value"] for named in media.get("examples", {}).values()]


def model_examples(annotation: Any) -> list[Any]:
    """A model's examples; of `list[Model]`, lists of one of its examples; of `Model | None`, the model's."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_json_schema().get("examples", []))
    args: tuple[Any, ...] = getattr(annotation, "__args__", ())
    if getattr(annotation, "__origin__", None) is list:
        return [[example] for example in model_examples(args[0])]
    return [example for arg in args for example in model_examples(arg)]


def without_nulls(value: Any) -> Any:
    """An example as FastAPI writes it into the document."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def operations(app: FastAPI) -> Iterator[Operation]:
    document = app.openapi()
    routes = {(m.lower(), r.path): r for r in app.routes if isinstance(r, APIRoute) for m in r.methods or ()}
    for path, methods in document["paths"].items():
        for method, doc in methods.items():
            route = routes[(method, path.replace("{member_id}", "{member_id:path}"))]
            yield Operation(method, path, doc, route, document)


@pytest.fixture(params=list(SERVICES))
def app(request: pytest.FixtureRequest) -> FastAPI:
    return build_app(SERVICES[request.param]())


def json_content(response: dict[str, Any]) -> dict[str, Any] | None:
    return response.get("content", {}).get("application/json")


def test_every_operation_has_a_summary_and_a_description(app: FastAPI) -> None:
    missing = [f"{op}: {part}" for op in operations(app) for part in ("summary", "description")
               if len(op.doc.get(part, "")) < (40 if part == "description" else 5)]
    assert not missing


def test_every_json_answer_has_an_example_as_the_route_would_send_it(app: FastAPI) -> None:
    wrong = []
    for op in operations(app):
        answers = {int(s): json_content(r) for s, r in op.doc["responses"].items() if s.startswith("2")}
        streamed = any("application/x-ndjson" in r.get("content", {}) for s, r in op.doc["responses"].items()
                       if s.startswith("2"))  # NDJSON, a line at a time (insight's archive): its example is a line
        if not any(answers.values()) and op.path != "/metrics" and not streamed:
            wrong.append(f"{op}: no JSON answer")
        for status in (status for status, media in answers.items() if media is not None):
            given = op.given(status)
            if not given:
                wrong.append(f"{op} {status}: no example")
            adapter = TypeAdapter(op.model_of(status))
            for example in given:
                # Validated by the route's model and sent back: the same JSON, field for field.
                if adapter.dump_python(adapter.validate_python(example), mode="json") != example:
                    wrong.append(f"{op} {status}: the example is not what the model sends")
            if op.shown(answers[status]) != [without_nulls(example) for example in given]:
                wrong.append(f"{op} {status}: the document does not show the examples")
    assert not wrong


def test_every_json_body_has_an_example_its_model_takes(app: FastAPI) -> None:
    wrong = []
    for op in operations(app):
        body = op.doc.get("requestBody")
        if body is None:
            continue
        assert op.route.body_field is not None
        model: Any = op.route.body_field.field_info.annotation
        given = model_examples(model)
        if not given:
            wrong.append(f"{op}: no example of its body")
        for example in given:
            TypeAdapter(model).validate_python(example)
            fields = {name for t in getattr(model, "__args__", (model,)) if isinstance(t, type)
                      and issubclass(t, BaseModel) for name in t.model_fields}
            if not set(example) <= fields:
                wrong.append(f"{op}: the example names {sorted(set(example) - fields)}, which the body has not")
        if op.shown(body["content"]["application/json"]) != [without_nulls(example) for example in given]:
            wrong.append(f"{op}: the document does not show the body's examples")
    assert not wrong


def test_every_guarded_operation_documents_its_errors_with_an_example_of_each_reason(app: FastAPI) -> None:
    wrong = []
    for op in operations(app):
        responses = op.doc["responses"]
        if not op.guarded:
            if op.path == "/health/ready" and not op.given(503):
                wrong.append(f"{op}: no example of its 503")
            continue
        takes_input = bool(op.doc.get("parameters") or op.doc.get("requestBody"))
        required = {401, 403, 503} | ({422} if takes_input else set()) | ({404} if "{" in op.path else set())
        required |= {400} if "requestBody" in op.doc else set()
        documented = {int(s) for s in responses if not s.startswith("2")}
        if not required <= documented:
            wrong.append(f"{op}: {sorted(required - documented)} not documented")
        if 400 in documented and "requestBody" not in op.doc:
            wrong.append(f"{op}: 400 documented, but it reads no body")
        for status in documented:
            media = json_content(responses[str(status)]) or {}
            schema = op.resolve(media.get("schema", {}))
            if not {"error", "detail"} <= set(schema.get("properties", {})):
                wrong.append(f"{op} {status}: not an {{error, detail}} answer")
            given = op.given(status)
            if not given:
                wrong.append(f"{op} {status}: no example")
            for example in given:
                TypeAdapter(op.model_of(status)).validate_python(example)
            if op.shown(media) != [without_nulls(example) for example in given]:
                wrong.append(f"{op} {status}: the document does not show the examples")
    assert not wrong


async def test_the_shared_error_examples_are_what_the_apps_answer(app: FastAPI,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    async def verify(token: str) -> ApiKey | None:
        # A key without a scope: a real key has at least `read`, so a read route's 403 needs this one.
        return ApiKey("3f9c2a7b1e04", "till-01", frozenset()) if token == "no-scope" else await known(token)

    known = app.state.runtime.keys.verify
    monkeypatch.setattr(app.state.runtime.keys, "verify", verify)
    mismatched = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client:
        for op in (op for op in operations(app) if op.guarded):
            shown = {int(s): op.shown(json_content(r)) for s, r in op.doc["responses"].items()}
            asked: dict[int, list[str | None]] = {401: [None, "nope"], 403: ["no-scope"], 503: [WELL_FORMED_KEY]}
            for status, tokens in asked.items():
                for token in tokens:
                    headers = {"Authorization": f"Bearer {token}"} if token else {}
                    answer = await client.request(op.method, op.url(), headers=headers)
                    if (answer.status_code, answer.json()) not in [(status, e) for e in shown.get(status, [])]:
                        mismatched.append(f"{op}: {answer.status_code} {answer.text}")
            if "requestBody" in op.doc:  # not even text: refused before the key is looked at
                answer = await client.request(op.method, op.url(), content=b"\xff",
                                              headers={"Content-Type": "application/json"})
                if (answer.status_code, answer.json()) not in [(400, e) for e in shown.get(400, [])]:
                    mismatched.append(f"{op}: {answer.status_code} {answer.text}")
    assert not mismatched


async def test_a_request_made_of_the_examples_passes_validation_and_its_refusal_is_documented(
        app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    async def admin(token: str) -> ApiKey:
        return ApiKey("3f9c2a7b1e04", "till-01", frozenset({"admin"}))

    monkeypatch.setattr(app.state.runtime.keys, "verify", admin)
    undocumented = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client:
        for op in (op for op in operations(app) if op.guarded and "{program_id}" in op.path):
            body = op.doc.get("requestBody")
            answer = await client.request(
                op.method, op.url(), json=op.shown(body["content"]["application/json"])[0] if body else None,
                headers={"Authorization": "Bearer any", "Idempotency-Key": "till-01:1764000000"})
            # `defualt` is no programme: refused as such, or 503 where the route reads the database first.
            reasons = [e["error"] for e in op.shown(json_content(op.doc["responses"].get(str(answer.status_code), {})))]
            if answer.status_code not in (404, 503) or answer.json()["error"] not in reasons:
                undocumented.append(f"{op}: {answer.status_code} {answer.text}")
    assert not undocumented
