"""docs/insight.md keeps up with the code: every indicator the service answers, every healthy range and advice of
`HEALTH` word for word, the breakage method, every abuse-watch reason, every route, Prometheus family and setting of
its own."""

from __future__ import annotations

import re
import typing
from decimal import Decimal

from fastapi.routing import APIRoute
from prometheus_client import CollectorRegistry

from services.insight import domain
from services.insight.api import KpisOut
from services.insight.app import create_app
from services.insight.metrics import InsightMetrics
from services.insight.settings import InsightSettings
from shared.contracts.insight import WatchReason
from shared.settings import Settings
from tests.support import REPO

DOC = " ".join((REPO / "docs" / "insight.md").read_text().split())  # one space for every run of white space
PARAMETERS = {"program_id": "p", "member_id": "m"}


def _period() -> domain.Period:
    return domain.Period({}, 0, 0, 0, 0, 0, None, None, Decimal(0), Decimal(0), 0)


def test_every_indicator_is_defined() -> None:
    missing = [k.kpi for k in domain.kpis(_period()) if f"| `{k.kpi}` |" not in DOC]
    assert missing == [], f"indicators docs/insight.md does not define: {missing}"


def test_every_part_of_the_kpis_answer_is_described() -> None:
    fields = list(KpisOut.model_fields)
    parts = fields[fields.index("series"):]
    assert parts and [f for f in parts if f"`{f}`" not in DOC] == []


def test_every_healthy_range_and_advice_is_quoted_as_the_service_gives_it() -> None:
    missing = [(kpi, text) for kpi, health in domain.HEALTH.items()
               for text in (health.text, health.too_high, health.too_low) if text and text not in DOC]
    assert missing == []
    assert domain.BREAKAGE_METHOD in DOC


def test_every_watch_reason_route_family_and_setting_is_named() -> None:
    reasons = [r for r in typing.get_args(WatchReason) if f"`{r}`" not in DOC]
    assert reasons == []
    paths = {re.sub(r"\{(\w+)(:\w+)?\}", lambda m: "{" + PARAMETERS.get(m[1], m[1]) + "}", route.path)
             for route in create_app().routes if isinstance(route, APIRoute) and route.path.startswith("/v1/")}
    assert paths and [p for p in sorted(paths) if p not in DOC] == []
    registry = CollectorRegistry()
    InsightMetrics(registry)
    families = [f.name for f in registry.collect() if f.name not in DOC]
    assert families == []
    own = sorted(set(InsightSettings.model_fields) - set(Settings.model_fields))
    assert own and [f for f in own if f"JIFEN_{f.upper()}" not in DOC] == []
