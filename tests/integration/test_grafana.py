"""Jifen's Grafana dashboards, checked without a Grafana (`deploy/grafana/`).

The provisioning files point at the dashboards' folder and at the datasource uid the panels name; every panel is
placed and queries that datasource. Every expression, with Grafana's variables put in as Grafana would, is PromQL that
promtool parses; every metric it names is exported by a service (read from the services' own registries, built here
without a database or a broker) or recorded by deploy/prometheus/rules; its label matchers, `by` labels and legend
labels exist. Last, on realistic series (each checked against the registries too), `promtool test rules` shows that
every panel's expression returns at least one number: names, labels and recording rules line up.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.local.infra import REPO, install_prometheus
from services.earn.app import spec as earn_spec
from services.insight.app import spec as insight_spec
from services.ledger.app import spec as ledger_spec
from services.redemption.app import spec as redemption_spec
from services.referral.app import spec as referral_spec
from services.tiers.app import spec as tiers_spec
from shared.service import Runtime, ServiceSpec, make_broker

GRAFANA = REPO / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
RULES = REPO / "deploy" / "prometheus" / "rules" / "jifen.yml"
SERVICES: dict[str, Callable[[], ServiceSpec]] = {"earn": earn_spec, "ledger": ledger_spec, "tiers": tiers_spec,
                                                     "referral": referral_spec, "redemption": redemption_spec,
                                                     "insight": insight_spec}
PORTS = {"earn": 8101, "ledger": 8102, "redemption": 8103, "tiers": 8104, "referral": 8105, "insight": 8106}
# What the stack's scrape config puts on every series (deploy/local/infra.py: job `jifen`, honor_labels).
SCRAPE_LABELS = frozenset({"job", "instance", "instance_name"})
# What Grafana writes in place of its variables: every service, one programme, and the rate window it would pick.
CHOSEN = {"service": "(earn|ledger|redemption|referral|tiers|insight)", "program_id": "default",
          "__rate_interval": "1m", "__range": "1h", "__interval": "15s"}
BUILT_IN = frozenset(v for v in CHOSEN if v.startswith("__"))
VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)\}")
STEP, STEPS, EVAL = "15s", 480, "1h"  # two hours of input at 15 s; expressions evaluated at the first hour


# --- the dashboards and what they ask ------------------------------------------------------------------------------

def load(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row keeps its panels inside it


@dataclass(frozen=True)
class Query:
    dashboard: str
    where: str  # the panel and refId, or the variable
    expr: str  # as Grafana holds it, variables and all
    legend: str = ""
    label: str = ""  # a label_values variable's label

    @property
    def promql(self) -> str:
        return VARIABLE.sub(lambda m: CHOSEN[m.group(1) or m.group(2)], self.expr)

    @property
    def record(self) -> str:
        return "grafana:" + re.sub(r"\W", "_", f"{self.dashboard}:{self.where}")


def queries(dashboard: dict[str, Any]) -> list[Query]:
    found = []
    for variable in dashboard["templating"]["list"]:
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        values = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query.strip())
        assert values, f"variable {variable['name']}: only label_values(metric, label) is checked: {query}"
        found.append(Query(dashboard["uid"], f"var {variable['name']}", values[1], label=values[2]))
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            found.append(Query(dashboard["uid"], f"p{panel['id']} {target['refId']} {panel['title']}", target["expr"],
                               target.get("legendFormat", "")))
    return found


ALL_QUERIES = [q for path in DASHBOARDS for q in queries(load(path))]


# --- what the services export ---------------------------------------------------------------------------------------

SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count"),
            "info": ("_info",)}


@functools.cache
def exported() -> dict[str, frozenset[str] | None]:
    """Every sample name the services expose, with its label names (None: a collector that names them only once it has
    a sample). Read from each service's registry as its spec and runtime build it, plus FastStream's middleware."""
    names: dict[str, frozenset[str] | None] = {"up": SCRAPE_LABELS}
    for build in SERVICES.values():
        spec = build()
        runtime = Runtime.of(spec)
        make_broker(spec.settings, runtime.metrics, spec.name)  # registers FastStream's metrics; connects to nothing
        registry = runtime.metrics.registry
        for family in registry.collect():
            # A labelled metric with no child yet has no sample to read its labels from: its collector knows them
            # (prometheus_client keeps them private).
            collector = registry._names_to_collectors.get(family.name)
            declared = getattr(collector, "_labelnames", getattr(family, "_labelnames", None))
            sampled = {k for s in family.samples for k in s.labels}
            labels = frozenset(declared) if declared is not None else frozenset(sampled) if family.samples else None
            for suffix in SUFFIXES.get(family.type, ("",)):
                with_le = labels | {"le"} if labels is not None and suffix == "_bucket" else labels
                names[family.name + suffix] = with_le | SCRAPE_LABELS if with_le is not None else None
    return names


def known() -> dict[str, frozenset[str] | None]:
    """What a dashboard may name: the exported samples, and the recording rules with the labels their expression's
    metrics carry (more than a rule keeps, but a label none of them has cannot come out of it)."""
    names = dict(exported())
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            if "record" in rule:
                inputs = [names.get(name) for name, _ in selectors(rule["expr"])]
                labels = [i for i in inputs if i is not None]
                names[rule["record"]] = frozenset().union(*labels) if inputs and len(labels) == len(inputs) else None
    return names


# --- reading PromQL just enough to name its metrics and labels ------------------------------------------------------

KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or",
                      "unless", "inf", "nan"})
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


def selectors(promql: str) -> list[tuple[str, list[str]]]:
    """Each vector selector's metric name and the labels its matchers name."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', promql)  # strings can hold anything
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries: durations look like names
    text = GROUPING.sub("", text)
    found = []
    for m in re.finditer(r"(?<![\w:.])([a-zA-Z_:][\w:]*)\s*(\{[^}]*\})?(\s*\()?", text):
        name, matchers, call = m.groups()
        if call or name.lower() in KEYWORDS:
            continue
        found.append((name, re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", matchers or "")))
    return found


def grouping_labels(promql: str) -> set[str]:
    return {label.strip() for labels in GROUPING.findall(promql) for label in labels.split(",") if label.strip()}


# --- realistic series, as Prometheus would hold them after scraping the stack ---------------------------------------

@dataclass
class Series:
    scraped: str  # the service whose /metrics it comes from
    name: str
    values: str
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def all_labels(self) -> dict[str, str]:
        # honor_labels: a periodic job's own `job` label (jifen_job_*) wins over the scrape's, as in the stack.
        return {"job": "jifen", **self.labels, "instance": f"127.0.0.1:{PORTS[self.scraped]}",
                "instance_name": self.scraped}

    def __str__(self) -> str:
        return self.name + "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(self.all_labels.items())) + "}"


def counter(scraped: str, name: str, per_step: float, /, **labels: str) -> Series:
    return Series(scraped, name, f"0+{per_step}x{STEPS}", labels)


def gauge(scraped: str, name: str, value: float, /, **labels: str) -> Series:
    return Series(scraped, name, f"{value}x{STEPS}", labels)


def histogram(scraped: str, name: str, /, **labels: str) -> list[Series]:
    buckets = [counter(scraped, f"{name}_bucket", n, **labels, le=le) for le, n in (("0.1", 6), ("1", 9), ("+Inf", 10))]
    return [*buckets, counter(scraped, f"{name}_sum", 2.5, **labels), counter(scraped, f"{name}_count", 10, **labels)]


def realistic() -> list[Series]:
    consumed = {"earn": ("jifen.purchases", "jifen.purchase.completed.v1"),
                "ledger": ("jifen.ledger.commands", "jifen.ledger.credit.v1"),
                "redemption": ("jifen.ledger.entries", "jifen.ledger.entry.posted.v1"),
                "tiers": ("jifen.ledger.entries", "jifen.ledger.entry.posted.v1"),
                "referral": ("jifen.referrals", "jifen.referral.accepted.v1"),
                "insight": ("jifen.ledger.entries", "jifen.ledger.entry.posted.v1")}
    jobs = {"earn": "birthdays", "ledger": "sweeper", "redemption": "redemption-watch", "tiers": "tier-review",
            "referral": "referral-expiry", "insight": "kpi-gauges"}
    out: list[Series] = []
    for s, (topic, kind) in consumed.items():
        job = jobs[s]
        out += [gauge(s, "up", 1), gauge(s, "jifen_ready", 1, service=s),
                counter(s, "jifen_events_processed_total", 120, service=s, topic=topic, type=kind),
                counter(s, "jifen_duplicates_skipped_total", 1, service=s, topic=topic),
                counter(s, "jifen_events_ignored_total", 3, service=s, topic=topic, type="jifen.tier.changed.v1"),
                counter(s, "jifen_dlq_messages_total", 1, service=s, topic=topic, reason="invalid_data"),
                *histogram(s, "jifen_batch_records", service=s),
                *histogram(s, "jifen_event_to_commit_seconds", service=s),
                gauge(s, "jifen_consumer_lag_records", 40, service=s, topic=topic, partition="0"),
                gauge(s, "jifen_consumer_group_lag_records", 55, service=s, group=f"jifen-{s}", topic=topic,
                      partition="0"),
                counter(s, "jifen_transient_failures_total", 0, service=s, error="OSError"),
                gauge(s, "jifen_outbox_backlog_messages", 3, service=s),
                gauge(s, "jifen_outbox_oldest_age_seconds", 0.2, service=s),
                counter(s, "jifen_outbox_published_messages_total", 100, service=s),
                counter(s, "jifen_job_runs_total", 0.5, service=s, job=job, outcome="ok"),
                counter(s, "jifen_job_items_total", 4, service=s, job=job),
                *histogram(s, "jifen_job_seconds", service=s, job=job),
                gauge(s, "jifen_job_interval_seconds", 30, service=s, job=job),
                gauge(s, "jifen_job_leader", 1, service=s, job=job),
                Series(s, "jifen_job_last_success_timestamp_seconds", f"-20+15x{STEPS}", {"service": s, "job": job}),
                counter(s, "jifen_log_repeats_suppressed_total", 2, service=s, logger="aiokafka.conn"),
                *histogram(s, "jifen_gc_pause_seconds", service=s, generation="2"),
                counter(s, "jifen_programme_reload_runs_total", 0, service=s, outcome="ok"),
                counter(s, "jifen_programme_reload_runs_total", 0, service=s, outcome="refused"),
                counter(s, "process_cpu_seconds_total", 1.5), gauge(s, "process_resident_memory_bytes", 120e6),
                gauge(s, "process_open_fds", 40), gauge(s, "process_max_fds", 1024),
                *histogram(s, "faststream_received_processed_messages_duration_seconds", app_name=s, broker="kafka",
                           handler=topic),
                counter(s, "faststream_received_processed_messages_exceptions_total", 0, app_name=s, broker="kafka",
                        handler=topic, exception_type="ValueError")]
    for p in ("default", "staff"):
        out += [Series("ledger", "jifen_programme_points", f"{start}+{step}x{STEPS}",
                       {"service": "ledger", "program_id": p, "measure": measure})
                for measure, start, step in (("issued", 400000, 100), ("redeemed", 100000, 30), ("expired", 5000, 2),
                                             ("adjusted", 1000, 1), ("outstanding", 296000, 67))]
        out.append(gauge("ledger", "jifen_programme_members", 1000, service="ledger", program_id=p))
    p = "default"
    out += [counter("ledger", f"jifen_ledger_{what}_total", n, service="ledger", program_id=p, kind=kind)
            for what, n in (("entries", 1), ("points", 100)) for kind in ("earn", "redeem", "expire", "adjust_credit")]
    out += [gauge("ledger", "jifen_ledger_verify_ok", 1, service="ledger"),
            gauge("ledger", "jifen_ledger_verify_problems", 0, service="ledger"),
            counter("ledger", "jifen_ledger_commands_rejected_total", 0.1, service="ledger",
                    reason="insufficient_points"),
            counter("ledger", "jifen_ledger_command_replays_total", 0.2, service="ledger"),
            counter("ledger", "jifen_ledger_sweep_commands_total", 3, service="ledger", kind="expire"),
            counter("earn", "jifen_earn_points_total", 90, service="earn", program_id=p, rule="base"),
            counter("earn", "jifen_earn_points_total", 10, service="earn", program_id=p, rule="birthday"),
            counter("earn", "jifen_earn_skipped_total", 1, service="earn", program_id=p, reason="capped"),
            gauge("redemption", "jifen_rewards_lowest_points", 100, service="redemption", program_id=p),
            gauge("redemption", "jifen_redemption_stock_left_items", 50, service="redemption", program_id=p,
                  reward_id="mug"),
            gauge("redemption", "jifen_redemptions_pending", 2, service="redemption"),
            gauge("redemption", "jifen_redemption_pending_oldest_seconds", 1.5, service="redemption"),
            *histogram("redemption", "jifen_redemption_settle_seconds", service="redemption"),
            *histogram("redemption", "jifen_redemption_hold_to_capture_seconds", service="redemption"),
            counter("redemption", "jifen_redemption_refusals_total", 0.5, service="redemption", program_id=p,
                    operation="redeem", reason="insufficient_points"),
            counter("redemption", "jifen_points_payments_total", 1, service="redemption", program_id=p,
                    status="captured"),
            counter("redemption", "jifen_redemption_ledger_refusals_total", 0, service="redemption", program_id=p,
                    reason="unknown_entry"),
            counter("tiers", "jifen_tier_warnings_total", 0.05, service="tiers", program_id=p),
            counter("tiers", "jifen_tier_changes_total", 0.3, service="tiers", program_id=p, reason="upgrade"),
            gauge("referral", "jifen_referrals_in_review", 2, service="referral", program_id=p),
            counter("referral", "jifen_referral_ledger_refusals_total", 0, service="referral", program_id=p,
                    reason="account_blocked")]
    out += [counter("redemption", "jifen_redemptions_total", n, service="redemption", program_id=p, reward_id="mug",
                    status=status) for status, n in (("pending", 3), ("completed", 2.5), ("rejected", 0.5))]
    out += [counter("redemption", name, n, service="redemption", program_id=p, direction=direction)
            for name, direction, n in (("jifen_redemption_points_total", "redeemed", 250),
                                       ("jifen_redemption_points_total", "returned", 10),
                                       ("jifen_points_payment_points_total", "captured", 80),
                                       ("jifen_points_payment_points_total", "refunded", 5))]
    out += [counter("redemption", "jifen_coupons_total", n, service="redemption", program_id=p, event=event)
            for event, n in (("issued", 1), ("used", 0.6), ("voided", 0.1))]
    out += [gauge("tiers", "jifen_tiers_members", n, service="tiers", program_id=p, tier=tier)
            for tier, n in (("normal", 800), ("silver", 150), ("gold", 50))]
    out += [gauge("referral", "jifen_referrals", n, service="referral", program_id=p, status=status, reason=reason)
            for status, reason, n in (("review", "velocity", 2), ("rejected", "self_referral", 5))]
    out += [counter("referral", "jifen_referral_verdicts_total", 0.1, service="referral", program_id=p,
                    status="rejected", reason="self_referral")]
    out += [counter("referral", f"jifen_referral_points{kind}_total", n, service="referral", program_id=p, role=role)
            for kind, n in (("", 50), ("_reversed", 5)) for role in ("referrer", "referee")]
    # Insight's gauges, set by its kpi-gauges and abuse-watch rounds (the recording rules read the latest round's).
    out += [Series("insight", "jifen_job_last_success_timestamp_seconds", f"-20+15x{STEPS}",
                   {"service": "insight", "job": "abuse-watch"})]
    kpis = {"issue_redeem_ratio": (3.4, 2), "holding_vs_cheapest_reward": (2.5, 0), "task_completion": (0.2, 1),
            "top3_reward_share": (0.45, 0), "points_cost_share": (0.02, 0), "points_gmv_share": (0.1, 0),
            "breakage": (0.12, None), "redemption_rate": (0.3, None), "active_members": (640, None),
            "referral_conversion": (0.6, None)}
    out += [gauge("insight", "jifen_insight_kpi", value, service="insight", program_id=p, kpi=kpi)
            for kpi, (value, _) in kpis.items()]
    out += [gauge("insight", "jifen_insight_kpi_verdict", verdict, service="insight", program_id=p, kpi=kpi)
            for kpi, (_, verdict) in kpis.items() if verdict is not None]
    out += [gauge("insight", "jifen_insight_abuse_members", n, service="insight", program_id=p, reason=reason)
            for reason, n in (("earning_outlier", 2), ("shared_fingerprint", 0))]
    out += [counter("insight", "jifen_insight_entries_total", 40, service="insight", program_id=p),
            counter("insight", "jifen_insight_events_ignored_total", 0.1, service="insight", program_id=p,
                    reason="unknown_program")]
    return out


# --- the checks ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def promtool() -> Path:
    return install_prometheus() / "promtool"


def provisioned_uid() -> str:
    datasources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "jifen.yaml").read_text())["datasources"]
    assert [d["type"] for d in datasources] == ["prometheus"]
    return str(datasources[0]["uid"])


def test_provisioning_points_at_the_dashboards_folder_and_the_datasource_they_name() -> None:
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "jifen.yaml").read_text())["providers"]
    assert [p["type"] for p in providers] == ["file"]
    # Grafana expands environment variables in provisioning files; JIFEN_REPO is the repository's path.
    path = providers[0]["options"]["path"]
    assert path.startswith("${JIFEN_REPO}/"), path
    assert (REPO / path.removeprefix("${JIFEN_REPO}/")).resolve() == (GRAFANA / "dashboards").resolve()
    assert [p.name for p in DASHBOARDS] == ["jifen-pipeline.json", "jifen-programme.json"]
    assert provisioned_uid() == "jifen-prometheus"


def test_dashboard_uids_and_titles_are_unique() -> None:
    dashboards = [load(p) for p in DASHBOARDS]
    assert len({d["uid"] for d in dashboards}) == len({d["title"] for d in dashboards}) == len(DASHBOARDS)
    assert all(re.fullmatch(r"[a-z0-9-]{1,40}", d["uid"]) for d in dashboards)


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.stem for p in DASHBOARDS])
def test_every_panel_is_placed_and_queries_the_provisioned_datasource(path: Path) -> None:
    dashboard, uid = load(path), provisioned_uid()
    assert dashboard["schemaVersion"] >= 36 and dashboard.get("id") is None
    found = list(panels(dashboard))
    assert len({p["id"] for p in found}) == len(found), "panel ids repeat"
    taken: set[tuple[int, int]] = set()
    for panel in found:
        grid = panel["gridPos"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                 for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells
        if panel["type"] == "row":
            assert "targets" not in panel
            continue
        assert panel["type"] in {"timeseries", "stat"}, panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        assert panel["targets"], panel["title"]
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target.get("datasource", panel["datasource"]) == panel["datasource"], panel["title"]
    variables = dashboard["templating"]["list"]
    assert [v["name"] for v in variables if v["datasource"] != {"type": "prometheus", "uid": uid}] == []
    defined = {v["name"] for v in variables} | BUILT_IN
    used = {m[0] or m[1] for q in queries(dashboard) for m in VARIABLE.findall(q.expr)}
    assert used <= defined, f"variables used but not defined: {used - defined}"
    assert defined - BUILT_IN <= used, "a variable no panel uses"


def test_every_expression_is_promql_that_promtool_parses(promtool: Path, tmp_path: Path) -> None:
    rules = {"groups": [{"name": "grafana", "rules": [{"record": q.record, "expr": q.promql} for q in ALL_QUERIES]}]}
    (tmp_path / "grafana.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    done = subprocess.run([str(promtool), "check", "rules", "grafana.yml"], capture_output=True, cwd=tmp_path,
                          timeout=120)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    assert f"SUCCESS: {len(ALL_QUERIES)} rules found".encode() in done.stdout


def test_every_metric_named_is_exported_by_a_service_or_recorded_and_its_labels_exist() -> None:
    names = known()
    problems = []
    for q in ALL_QUERIES:
        named = selectors(q.promql)
        if not named:
            problems.append(f"{q.where}: names no metric")
        labels: set[str] = {"__name__"}
        for name, matchers in named:
            if name not in names:
                problems.append(f"{q.where}: {name} is neither exported nor recorded")
                continue
            has = names[name]
            labels |= has if has is not None else {"*"}
            if has is not None and set(matchers) - has - {"__name__"}:
                problems.append(f"{q.where}: {name} has no label {sorted(set(matchers) - has)}")
        if "*" in labels:
            continue  # a collector that names its labels only with a sample
        wanted = grouping_labels(q.promql) | set(re.findall(r"\{\{\s*(\w+)\s*\}\}", q.legend)) | ({q.label} - {""})
        if wanted - labels:
            problems.append(f"{q.where}: groups or names labels none of its metrics has: {sorted(wanted - labels)}")
    assert problems == [], "\n".join(problems)


def test_the_input_series_are_what_the_services_export() -> None:
    names = exported()
    wrong = [f"{s} (exported: {sorted(names.get(s.name) or [])})" for s in realistic()
             if s.name not in names or (names[s.name] is not None and set(s.all_labels) != names[s.name])]
    assert wrong == [], "\n".join(wrong)


def test_every_panel_returns_a_number_on_realistic_series(promtool: Path, tmp_path: Path) -> None:
    def non_empty(q: Query) -> str:
        # One sample, 1, when the expression returns any number (NaN is not one); nothing when it returns nothing.
        promql = f"count by ({q.label}) ({q.promql})" if q.label else q.promql
        return f"count(({promql}) >= -Inf) > bool 0"

    tests = {"rule_files": [str(RULES)], "evaluation_interval": STEP, "tests": [{
        "interval": STEP,
        "input_series": [{"series": str(s), "values": s.values} for s in realistic()],
        "promql_expr_test": [{"expr": non_empty(q), "eval_time": EVAL, "exp_samples": [{"labels": "{}", "value": 1}]}
                             for q in ALL_QUERIES]}]}
    (tmp_path / "grafana_test.yml").write_text(yaml.safe_dump(tests, sort_keys=False, width=1000))
    done = subprocess.run([str(promtool), "test", "rules", "grafana_test.yml"], capture_output=True, cwd=tmp_path,
                          timeout=120)
    output = done.stdout.decode() + done.stderr.decode()
    empty = [q.where for q in ALL_QUERIES if json.dumps(non_empty(q)) in output]  # promtool quotes them as Go does
    assert done.returncode == 0, f"panels returning nothing: {empty}\n{output[-4000:]}"
    assert "SUCCESS" in output
