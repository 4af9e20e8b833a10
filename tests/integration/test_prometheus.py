"""Jifen's Prometheus rules and metrics, checked with Prometheus's own promtool (installed from Debian's packages
when missing, as the stack does): the rules load, their unit tests pass, and every service's /metrics is clean
Prometheus text with only known metric names."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from deploy.local.infra import REPO, install_prometheus
from services.earn.app import spec as earn_spec
from services.insight.app import spec as insight_spec
from services.ledger.app import spec as ledger_spec
from services.redemption.app import spec as redemption_spec
from services.referral.app import spec as referral_spec
from services.tiers.app import spec as tiers_spec
from shared.service import ServiceSpec
from shared.testing import ServiceHarness
from tests.support import Infra

RULES = REPO / "deploy" / "prometheus"
SERVICES: dict[str, Callable[[], ServiceSpec]] = {"earn": earn_spec, "ledger": ledger_spec, "tiers": tiers_spec,
                                                     "referral": referral_spec, "redemption": redemption_spec,
                                                     "insight": insight_spec}


@pytest.fixture(scope="module")
def promtool() -> Path:
    return install_prometheus() / "promtool"


def run(*args: str, stdin: bytes | None = None, cwd: Path = RULES) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(list(args), input=stdin, capture_output=True, cwd=cwd, timeout=120)


def test_the_rules_load(promtool: Path) -> None:
    done = run(str(promtool), "check", "rules", *(str(p) for p in sorted((RULES / "rules").glob("*.yml"))))
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    assert b"SUCCESS" in done.stdout


def test_every_alert_fires_on_what_should_fire_it_and_not_on_what_should_not(promtool: Path) -> None:
    tests = sorted((RULES / "tests").glob("*.yml"))
    assert tests
    done = run(str(promtool), "test", "rules", *(str(p.relative_to(RULES)) for p in tests))
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    alerts = {line.split("alert:", 1)[1].strip() for p in (RULES / "rules").glob("*.yml")
              for line in p.read_text().splitlines() if line.strip().startswith("- alert:")}
    tested = {line.split("alertname:", 1)[1].strip() for p in tests for line in p.read_text().splitlines()
              if "alertname:" in line}
    assert alerts <= tested, f"alerts without a unit test: {sorted(alerts - tested)}"


@pytest.mark.parametrize("name", list(SERVICES))
async def test_each_services_metrics_are_clean_prometheus_text(infra: Infra, promtool: Path, name: str) -> None:
    async with ServiceHarness(SERVICES[name](), await infra.new_database("prom_")) as service:
        response = await service.request("GET", "/metrics", token="")
        families = {f.name for f in service.runtime.metrics.registry.collect()}
    assert response.status_code == 200
    done = run(str(promtool), "check", "metrics", stdin=response.content)
    # promtool names lint problems on stdout/stderr and exits 3 for them; only the collectors' own ones may stay.
    problems = [line for line in (done.stdout + done.stderr).decode().splitlines() if line.strip()]
    assert problems == [], problems
    assert {"process_cpu_seconds", "process_resident_memory_bytes", "python_info"} <= families
    # Every family names its unit: counters count events, messages, points, ...; the rest say what they measure.
    ours = {f for f in families if f.startswith("jifen_")}
    units = {"seconds", "records", "messages", "points", "members", "events", "entries", "commands", "items", "runs",
             "changes", "warnings", "skipped", "repeats", "failures", "replays", "rejected", "ok", "problems", "ready",
             "referrals", "redemptions", "coupons", "refusals", "verdicts", "leader", "bytes",
             # insight's indicators, each in its own unit (a ratio, a share, members: docs/insight.md), and verdicts
             "kpi"}
    assert sorted(f for f in ours if not units & set(f.split("_"))) == [], "a metric without its unit in its name"
