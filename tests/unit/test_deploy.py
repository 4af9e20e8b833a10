"""deploy/k8s and deploy/compose run every service the local stack runs, each probed, sized, scraped and listening
beyond its container, and both are valid: every Kubernetes object against the API schemas of a pinned Kubernetes
version, the compose file against the Compose Specification. Both checks run offline: kubernetes-validate and
check-jsonschema ship the schemas in their packages."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from cli import topics
from cli.main import main
from deploy.local.stack import SERVICES, ServiceProcess

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
COMPOSE = REPO / "deploy" / "compose"
# The oldest Kubernetes the manifests are for (they are checked against the newest that kubernetes-validate knows too).
KUBERNETES = "1.29"
# What the rendering below does of a kustomization; anything else (a generator, a patch) it would silently skip.
RENDERED_FIELDS = {"apiVersion", "kind", "namespace", "images", "resources"}
NAMESPACED = {"ConfigMap", "Secret", "Deployment", "Service", "Job"}
PROGRAMMES_DIR = "/etc/jifen/programmes"

Manifest = dict[str, Any]


def _load_all(path: Path) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _kustomization() -> Manifest:
    return dict(yaml.safe_load((K8S / "kustomization.yaml").read_text()))


def _rendered() -> list[Manifest]:
    """What `kubectl apply -k deploy/k8s` sends, for the fields this kustomization uses: the resources in order, the
    namespace on each namespaced object, the images renamed."""
    kustomization = _kustomization()
    images = {i["name"]: f"{i.get('newName', i['name'])}:{i['newTag']}" for i in kustomization.get("images", [])}
    objects = [doc for name in kustomization["resources"] for doc in _load_all(K8S / name)]
    for obj in objects:
        if obj["kind"] in NAMESPACED and "namespace" in kustomization:
            obj["metadata"]["namespace"] = kustomization["namespace"]
        pod = obj.get("spec", {}).get("template", {}).get("spec", {})
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            container["image"] = images.get(container["image"], container["image"])
    return objects


def _find(objects: list[Manifest], kind: str, name: str) -> Manifest:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{len(found)} {kind} named {name!r} in deploy/k8s"
    return found[0]


def _example_secret() -> Manifest:
    (secret,) = _load_all(K8S / "secret.example.yaml")
    return secret


def _env(container: Manifest, objects: list[Manifest]) -> dict[str, str]:
    """The container's environment as the kubelet makes it: ConfigMaps named by envFrom, then env over them; a
    secret's value as `secret:<name>/<key>` once the example Secret is known to have that key."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env |= _find(objects, "ConfigMap", source["configMapRef"]["name"])["data"]
    secret = _example_secret()
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
            continue
        ref = var["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"], \
            f"{var['name']} names {ref}, which secret.example.yaml does not show"
        env[var["name"]] = f"secret:{ref['name']}/{ref['key']}"
    return env


def _quantity(value: str | int) -> float:
    """A Kubernetes quantity as a number: cores for CPU, bytes for memory."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9}
    match = re.fullmatch(r"([0-9.]+)(m|Ki|Mi|Gi|k|M|G|)", str(value))
    assert match, f"not a quantity: {value!r}"
    return float(match[1]) * units.get(match[2], 1)


def _objects_ids() -> list[str]:
    return [f"{o['kind']}/{o['metadata']['name']}" for o in _rendered()]


# --- Kubernetes ------------------------------------------------------------------------------------------------------

def test_the_kustomization_lists_every_manifest_and_uses_only_what_is_rendered_here() -> None:
    kustomization = _kustomization()
    assert set(kustomization) <= RENDERED_FIELDS, f"{set(kustomization) - RENDERED_FIELDS}: render them in this test"
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert listed == on_disk, "deploy/k8s's manifests and the kustomization's resources differ"
    assert "secret.example.yaml" not in listed, "applying the example would overwrite the real secret's values"


@pytest.mark.parametrize("obj", [*_rendered(), _example_secret()],
                         ids=[*_objects_ids(), "Secret/jifen-secrets (example)"])
def test_every_object_is_valid_for_the_kubernetes_api(obj: Manifest) -> None:
    # strict: a field the API does not know (a typo: `readinesProbe`) fails too, instead of being dropped.
    for version in (KUBERNETES, kubernetes_validate.latest_version()):
        kubernetes_validate.validate(obj, version, strict=True)


def test_a_deployment_and_a_service_for_every_service_and_nothing_else() -> None:
    objects = _rendered()
    names = {s.name for s in SERVICES}
    assert {o["metadata"]["name"] for o in objects if o["kind"] == "Deployment"} == names
    assert {o["metadata"]["name"] for o in objects if o["kind"] == "Service"} == names


@pytest.mark.parametrize("service", SERVICES, ids=[s.name for s in SERVICES])
def test_each_service_is_probed_scraped_and_reachable(service: ServiceProcess) -> None:
    objects = _rendered()
    deployment = _find(objects, "Deployment", service.name)
    template = deployment["spec"]["template"]
    pod = template["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["python", "-m", service.module]
    assert container["image"] == "jifen:" + _kustomization()["images"][0]["newTag"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert list(ports.values()) == [service.port]

    def probe(kind: str) -> tuple[str, int]:
        get = container[kind]["httpGet"]
        return get["path"], ports.get(get["port"], get["port"])

    assert probe("livenessProbe") == ("/health/live", service.port)
    assert probe("readinessProbe") == ("/health/ready", service.port)
    assert probe("startupProbe")[1] == service.port

    assert template["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true", "prometheus.io/port": str(service.port), "prometheus.io/path": "/metrics"}

    env = _env(container, objects)
    assert env["JIFEN_HTTP_HOST"] == "0.0.0.0", "bound to 127.0.0.1 the service answers no probe and no client"
    assert env["JIFEN_HTTP_PORT"] == str(service.port)
    assert env["JIFEN_DATABASE_URL"] == "secret:jifen-secrets/JIFEN_DATABASE_URL"
    assert env["JIFEN_KAFKA_BOOTSTRAP"]
    assert env["JIFEN_PROGRAMMES_DIR"] == PROGRAMMES_DIR
    if service.name == "redemption":
        assert env["JIFEN_COUPON_KEY"] == "secret:jifen-secrets/JIFEN_COUPON_KEY"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts[PROGRAMMES_DIR]]["configMap"]["name"] == "jifen-programmes"

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    (init,) = pod["initContainers"]
    assert init["command"][:3] == ["jifen", "topics", "check"], "the pods must not start before the topics exist"

    service_object = _find(objects, "Service", service.name)
    assert service_object["spec"]["selector"].items() <= template["metadata"]["labels"].items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    (port,) = service_object["spec"]["ports"]
    assert (port["port"], ports.get(port["targetPort"], port["targetPort"])) == (service.port, service.port)


def test_every_container_asks_for_cpu_and_memory_within_its_limits() -> None:
    pods = {o["metadata"]["name"]: o["spec"]["template"]["spec"] for o in _rendered()
            if o["kind"] in {"Deployment", "Job"}}
    assert pods.keys() == {s.name for s in SERVICES} | {"jifen-topics"}
    for name, pod in pods.items():
        for container in pod["containers"] + pod.get("initContainers", []):
            for what in ("cpu", "memory"):
                request, limit = (container["resources"][bound][what] for bound in ("requests", "limits"))
                assert 0 < _quantity(request) <= _quantity(limit), \
                    f"{name}/{container['name']} {what}: request {request}, limit {limit}"


def test_the_topics_job_creates_the_topics_on_the_configured_cluster() -> None:
    objects = _rendered()
    job = _find(objects, "Job", "jifen-topics")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["jifen", "topics", "create"]
    env = _env(container, objects)
    assert {"JIFEN_KAFKA_BOOTSTRAP", "JIFEN_TOPIC_PREFIX", "JIFEN_PARTITIONS", "JIFEN_REPLICATION_FACTOR"} <= env.keys()
    assert int(env["JIFEN_REPLICATION_FACTOR"]) >= 3, "a topic on one broker is lost with that broker"


def test_the_programmes_config_map_holds_the_programme_files() -> None:
    data = _find(_rendered(), "ConfigMap", "jifen-programmes")["data"]
    files = {p.name: p.read_text() for p in sorted((REPO / "programmes").glob("*.y*ml"))}
    assert data == files, ("deploy/k8s/programmes.yaml differs from programmes/: make it again with `kubectl create "
                           "configmap jifen-programmes --from-file=programmes/ --dry-run=client -o yaml`")


# --- Compose ---------------------------------------------------------------------------------------------------------

def _compose() -> Manifest:
    return dict(yaml.safe_load((COMPOSE / "compose.yaml").read_text()))


def test_the_compose_file_is_valid_against_the_compose_specification() -> None:
    checked = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
                              str(COMPOSE / "compose.yaml")], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_compose_runs_every_service_and_the_topics_first() -> None:
    services = _compose()["services"]
    assert set(services) == {s.name for s in SERVICES} | {"topics"}
    topics = services["topics"]
    assert topics["command"] == ["jifen", "topics", "create"]
    assert topics["restart"] == "no"
    assert {"JIFEN_KAFKA_BOOTSTRAP", "JIFEN_TOPIC_PREFIX", "JIFEN_PARTITIONS", "JIFEN_REPLICATION_FACTOR"} <= \
        topics["environment"].keys()


@pytest.mark.parametrize("service", SERVICES, ids=[s.name for s in SERVICES])
def test_each_compose_service_is_health_checked_and_points_at_the_external_kafka_and_database(
        service: ServiceProcess) -> None:
    composed = _compose()["services"][service.name]
    assert composed["command"] == ["python", "-m", service.module]
    env = composed["environment"]
    assert env["JIFEN_HTTP_HOST"] == "0.0.0.0", "bound to 127.0.0.1 the service answers nobody outside its container"
    assert env["JIFEN_HTTP_PORT"] == str(service.port)
    # Required from .env: compose refuses to start without them rather than run against a default on localhost.
    assert env["JIFEN_KAFKA_BOOTSTRAP"].startswith("${JIFEN_KAFKA_BOOTSTRAP:?")
    assert env["JIFEN_DATABASE_URL"].startswith("${JIFEN_DATABASE_URL:?")
    if service.name == "redemption":
        assert env["JIFEN_COUPON_KEY"].startswith("${JIFEN_COUPON_KEY:?")
    check = " ".join(composed["healthcheck"]["test"])
    assert "/health/ready" in check and "JIFEN_HTTP_PORT" in check
    assert [p.rsplit(":", 2)[1:] for p in composed["ports"]] == [[str(service.port), str(service.port)]]
    assert [env["JIFEN_PROGRAMMES_DIR"], "ro"] in [v.rsplit(":", 2)[1:] for v in composed["volumes"]]
    assert composed["restart"] == "unless-stopped"
    assert composed["depends_on"]["topics"]["condition"] == "service_completed_successfully"


def test_the_env_example_names_every_variable_compose_requires() -> None:
    required = set(re.findall(r"\$\{(\w+):\?", (COMPOSE / "compose.yaml").read_text()))
    example = set(re.findall(r"^(\w+)=", (COMPOSE / ".env.example").read_text(), flags=re.MULTILINE))
    assert required == {"JIFEN_KAFKA_BOOTSTRAP", "JIFEN_DATABASE_URL", "JIFEN_COUPON_KEY"}
    assert required <= example


# --- the image and the commands --------------------------------------------------------------------------------------

def test_the_image_installs_the_locked_dependencies_and_runs_as_a_user() -> None:
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    assert "uv sync --locked --no-dev" in dockerfile
    users = re.findall(r"^USER\s+(\S+)", dockerfile, flags=re.MULTILINE)
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert "USER 10001" in dockerfile, "the pods' runAsUser is 10001"


def _jifen_commands() -> list[list[str]]:
    """Every `jifen …` the deployments run."""
    containers = [c for o in _rendered() if "template" in o.get("spec", {})
                  for c in o["spec"]["template"]["spec"].get("containers", []) +
                  o["spec"]["template"]["spec"].get("initContainers", [])]
    commands = [c["command"] for c in containers] + [s["command"] for s in _compose()["services"].values()]
    return [list(c) for c in sorted({tuple(c) for c in commands if c[0] == "jifen"})]


@pytest.mark.parametrize("command", _jifen_commands(), ids=" ".join)
def test_the_jifen_commands_the_deployments_run_are_commands(command: list[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    taken: list[argparse.Namespace] = []

    async def run(args: argparse.Namespace) -> int:
        taken.append(args)
        return 0

    monkeypatch.setattr(topics, "run", run)  # parsed, not run: no Kafka here
    assert main(command[1:]) == 0
    assert [(args.command, args.topics_command) for args in taken] == [tuple(command[1:3])]
