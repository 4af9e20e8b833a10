"""The README's metrics table is what the services register: every `jifen_*` family of every service is in it with
its type, its labels and the services exporting it, and nothing is in it that no service exports."""

from __future__ import annotations

import re
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from services.earn.app import spec as earn_spec
from services.insight.app import spec as insight_spec
from services.ledger.app import spec as ledger_spec
from services.redemption.app import spec as redemption_spec
from services.referral.app import spec as referral_spec
from services.tiers.app import spec as tiers_spec
from shared.service import Runtime, ServiceSpec
from tests.support import REPO

SERVICES: dict[str, Callable[[], ServiceSpec]] = {"earn": earn_spec, "ledger": ledger_spec,
                                                  "redemption": redemption_spec, "referral": referral_spec,
                                                  "tiers": tiers_spec, "insight": insight_spec}
ROW = re.compile(r"^\| `(jifen_[a-z_]+)` \| (\w+) \| ([a-z_, ]+) \| ([a-z, ]+) \| .+ \|$")
Row = tuple[str, tuple[str, ...], frozenset[str]]


def _labels(registry: CollectorRegistry, name: str) -> tuple[str, ...]:
    collector = registry._names_to_collectors.get(name)  # a labelled family with no child yet has no samples
    declared = getattr(collector, "_labelnames", None)
    if declared is not None:
        return tuple(declared)
    family = next(f for f in registry.collect() if f.name == name)
    return tuple(dict.fromkeys(k for s in family.samples for k in s.labels)) or ("service", "logger")


def registered() -> dict[str, Row]:
    found: dict[str, tuple[str, tuple[str, ...], set[str]]] = {}
    for service, build in SERVICES.items():
        registry = Runtime.of(build()).metrics.registry
        for family in registry.collect():
            if family.name.startswith("jifen_"):
                name = family.name + ("_total" if family.type == "counter" else "")
                row = found.setdefault(name, (family.type, _labels(registry, family.name), set()))
                row[2].add(service)
    return {name: (kind, labels, frozenset(services)) for name, (kind, labels, services) in found.items()}


def documented() -> dict[str, Row]:
    rows = {}
    for line in (REPO / "README.md").read_text().splitlines():
        match = ROW.match(line)
        if match:
            name, kind, labels, services = match.groups()
            named = frozenset(SERVICES) if services == "all" else frozenset(s.strip() for s in services.split(","))
            rows[name] = (kind, tuple(label.strip() for label in labels.split(",")), named)
    return rows


def test_every_registered_metric_is_in_the_readme_table_as_it_is_registered() -> None:
    have, told = registered(), documented()
    assert len(have) > 40  # the services' own families, not a registry that came back empty
    assert sorted(set(have) - set(told)) == [], "registered but not in the README's table"
    assert sorted(set(told) - set(have)) == [], "in the README's table but registered by no service"
    differ = {name: (told[name], have[name]) for name in have if told[name] != have[name]}
    assert differ == {}, "README row (type, labels, services) differs from the registry"


def test_every_family_names_its_service_and_programme_the_same_way() -> None:
    for name, (_, labels, _) in registered().items():
        assert labels[0] == "service", name
        assert "program" not in labels and "programme" not in labels, name  # `program_id` everywhere
