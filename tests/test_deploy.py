"""deploy/, k8s/ and the AsyncAPI document, checked offline as an SRE would read them.

No Docker engine or cluster runs here: files must parse, reference only what exists,
name only real settings and metrics, and Kubernetes objects must validate against the
Kubernetes schemas (custom resources are checked field by field).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from portrait import metrics
from portrait.config import Settings
from portrait.schemas import SCHEMA_DIR, asyncapi_document
from processors.layout import REDIS_SETTINGS
from streams.kafka import all_topics
from streams.lanes import LANES, consumer_group

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = ROOT / "k8s"
SETTINGS = {f"PORTRAIT_{name.upper()}" for name in Settings.model_fields}
METRICS = {
    collector._name + suffix
    for collector in vars(metrics).values()
    if isinstance(collector, MetricWrapperBase)
    for suffix in ("", "_total", "_bucket", "_count", "_sum")
}


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def env_file(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, value = line.split("=", 1)
            pairs[name] = value
    return pairs


# --- deploy/ ----------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_non_root_and_copies_what_exists() -> None:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and not user[-1].startswith(("0", "root"))
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for item in source.split():
            assert (ROOT / item).exists(), item
    assert list((ROOT / "models" / "artifacts").glob("*.onnx"))  # the models go in the image
    assert "/livez" in text


def test_compose_references_only_what_exists() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    services = compose["services"]
    assert {"kafka", "redis", "worker", "prometheus", "grafana"} <= set(services)
    kafka = services["kafka"]["environment"]
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    redis = services["redis"]["command"]
    assert "--appendonly" in redis
    for name, value in REDIS_SETTINGS.items():  # the sizes the state layout is tuned for
        assert redis[redis.index(f"--{name}") + 1] == value, name
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        for dependency in service.get("depends_on", {}):
            assert dependency in services
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), source
            else:
                assert source in compose["volumes"], source
        for path in service.get("env_file", []):
            assert set(env_file(DEPLOY / path)) <= SETTINGS
    build = services["worker"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).exists()
    worker_env = env_file(DEPLOY / "production.env")
    port = worker_env["PORTRAIT_HTTP_PORT"]
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    [job] = prometheus["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == [f"worker:{port}"]


def test_grafana_dashboard_plots_real_metrics() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "portrait.json").read_text())
    datasource = load_all(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml")
    uid = datasource[0]["datasources"][0]["uid"]
    titles = " ".join(panel["title"] for panel in dashboard["panels"]).lower()
    for topic in ("events", "lag", "latency", "dlq", "prompts", "model"):
        assert topic in titles
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == uid
        for target in panel["targets"]:
            for name in re.findall(r"portrait_[a-z_]+", target["expr"]):
                assert name in METRICS, name


# --- k8s/ -------------------------------------------------------------------------------

CUSTOM_KINDS = {"ServiceMonitor", "ScaledObject", "TriggerAuthentication"}


def manifests() -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name != "kustomization.yaml":
            out.extend((path, doc) for doc in load_all(path))
    return out


BUILTIN = [
    (path, doc)
    for path, doc in manifests()
    if doc["kind"] not in CUSTOM_KINDS and path.parent.name != "production"  # not patches
]


@pytest.mark.parametrize(
    ("path", "doc"),
    BUILTIN,
    ids=[f"{doc['kind']}/{doc['metadata']['name']}" for _, doc in BUILTIN],
)
def test_builtin_objects_validate_against_kubernetes_schemas(
    path: Path, doc: dict[str, Any]
) -> None:
    version = kubernetes_validate.latest_version()
    # raises ValidationError on any schema violation; answers the version it checked against
    assert kubernetes_validate.validate(doc, version, strict=True) == version.rsplit(".", 1)[0]


def test_kustomizations_list_files_that_exist() -> None:
    for kustomization in K8S.rglob("kustomization.yaml"):
        spec = yaml.safe_load(kustomization.read_text())
        for entry in spec.get("resources", []) + [p["path"] for p in spec.get("patches", [])]:
            assert (kustomization.parent / entry).exists(), entry


def by_kind() -> dict[str, dict[str, Any]]:
    return {
        doc["kind"] + "/" + doc["metadata"]["name"]: doc
        for path, doc in manifests()
        if path.parent.name == "base"
    }


def test_workers_are_wired_to_config_secrets_probes_and_partitions() -> None:
    objects = by_kind()
    config = objects["ConfigMap/portrait-config"]["data"]
    assert set(config) <= SETTINGS
    secrets = objects["Secret/portrait-secrets"]["stringData"]
    deployment = objects["Deployment/portrait-worker"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    for variable in container["env"]:
        ref = variable["valueFrom"]["secretKeyRef"]
        assert variable["name"] in SETTINGS and ref["key"] in secrets
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["resources"]["requests"]["cpu"]
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    partitions = int(config["PORTRAIT_TOPIC_PARTITIONS"])
    scaled = objects["ScaledObject/portrait-worker"]["spec"]
    assert deployment["spec"]["replicas"] <= scaled["maxReplicaCount"] <= partitions
    assert scaled["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert scaled["cooldownPeriod"] >= 300  # no rebalance storms
    # one trigger per lane's consumer group (streams/lanes.py), each on a topic it reads
    group = config["PORTRAIT_CONSUMER_GROUP"]
    by_group = {t["metadata"]["consumerGroup"]: t for t in scaled["triggers"]}
    assert set(by_group) == {consumer_group(group, lane) for lane in LANES}
    for lane, topics in LANES.items():
        trigger = by_group[consumer_group(group, lane)]
        assert trigger["type"] == "kafka"
        short = trigger["metadata"]["topic"].removeprefix(config["PORTRAIT_TOPIC_PREFIX"])
        assert short in topics
        assert "TriggerAuthentication/" + trigger["authenticationRef"]["name"] in objects
    monitor = objects["ServiceMonitor/portrait-worker"]["spec"]
    service = objects["Service/portrait-worker"]["spec"]
    assert monitor["endpoints"][0]["port"] == service["ports"][0]["name"]
    assert monitor["endpoints"][0]["path"] == "/metrics"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for selector in (
        service["selector"],
        deployment["spec"]["selector"]["matchLabels"],
        objects["PodDisruptionBudget/portrait-worker"]["spec"]["selector"]["matchLabels"],
        objects["NetworkPolicy/portrait-worker"]["spec"]["podSelector"]["matchLabels"],
        monitor["selector"]["matchLabels"],
    ):
        assert selector.items() <= labels.items()


# --- AsyncAPI -----------------------------------------------------------------------------


def test_asyncapi_names_every_topic_and_existing_schemas() -> None:
    document = json.loads((SCHEMA_DIR / "asyncapi.json").read_text())
    assert document == asyncapi_document()  # in sync with the models (schemas --check too)
    assert document["asyncapi"].startswith("3.")
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert addresses == set(all_topics(Settings()))
    for message in document["components"]["messages"].values():
        assert (SCHEMA_DIR / message["payload"]["schema"]["$ref"]).exists()
    for operation in document["operations"].values():
        channel = operation["channel"]["$ref"].rsplit("/", 1)[1]
        for ref in operation["messages"]:
            assert ref["$ref"].rsplit("/", 1)[1] in document["channels"][channel]["messages"]
