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

from cli.schemas import SCHEMA_DIR, asyncapi_document
from portrait import metrics
from portrait.config import Settings
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
    copied = set()
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for item in source.split():
            assert (ROOT / item).exists(), item
            copied.add(item)
    packages = {path.parent.name for path in ROOT.glob("*/__init__.py")} - {"tests"}
    assert packages <= copied, "every package goes into the image"
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


PATCHES = {
    kustomization.parent / patch["path"]
    for kustomization in K8S.rglob("kustomization.yaml")
    for patch in yaml.safe_load(kustomization.read_text()).get("patches", [])
}
BUILTIN = [
    (path, doc)
    for path, doc in manifests()
    if doc["kind"] not in CUSTOM_KINDS and path not in PATCHES  # a patch is a fragment
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


def test_every_data_file_of_the_packages_is_in_the_package_data() -> None:
    """A file the code reads that ``pip install .`` leaves out breaks only the installed
    image (a stop-words file did): every tracked non-Python file must be shipped."""
    import fnmatch
    import subprocess
    import tomllib

    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    shipped = setuptools["package-data"]
    roots = [p.rstrip("*") for p in setuptools["packages"]["find"]["include"]]
    tracked = subprocess.run(
        ["git", "ls-files", *roots], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in tracked:
        if name.endswith(".py") or name.endswith("README.md"):
            continue
        parts = name.split("/")
        covered = any(
            fnmatch.fnmatch("/".join(parts[cut:]), pattern)
            for cut in range(1, len(parts))
            for pattern in shipped.get(".".join(parts[:cut]), [])
        )
        assert covered, f"{name} is not in [tool.setuptools.package-data]"


def _container_env(objects: dict[str, dict[str, Any]], deployment: str) -> dict[str, str]:
    """A Deployment's first container's settings as Kubernetes gives them: the ConfigMap,
    its own values, each secret reference resolved in the committed Secrets."""
    [container] = objects[f"Deployment/{deployment}"]["spec"]["template"]["spec"]["containers"]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env |= objects[f"ConfigMap/{source['configMapRef']['name']}"]["data"]
    for variable in container.get("env", []):
        if "value" in variable:
            env[variable["name"]] = variable["value"]
            continue
        ref = variable["valueFrom"]["secretKeyRef"]
        env[variable["name"]] = objects[f"Secret/{ref['name']}"]["stringData"][ref["key"]]
    return env


@pytest.mark.parametrize("deployment", ["portrait-worker", "portrait-api", "portrait-profiles"])
def test_each_deployment_gets_what_production_requires_and_refuses_placeholders(
    deployment: str,
) -> None:
    from portrait.config import ConfigurationError

    objects = by_kind()
    env = _container_env(objects, deployment)
    assert set(env) <= SETTINGS
    fields = {name.removeprefix("PORTRAIT_").lower(): value for name, value in env.items()}
    settings = Settings(**fields)
    assert settings.profile == "production"
    with pytest.raises(ConfigurationError, match="placeholder"):  # as committed
        settings.check_production()
    secret_names = {
        v["name"]
        for v in objects[f"Deployment/{deployment}"]["spec"]["template"]["spec"]["containers"][
            0
        ].get("env", [])
        if "valueFrom" in v
    }
    real = {name.removeprefix("PORTRAIT_").lower(): "r" * 32 for name in secret_names}
    Settings(**(fields | real)).check_production()  # with the real Secret: it starts
    spec = objects[f"Deployment/{deployment}"]["spec"]["template"]["spec"]
    [container] = spec["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["securityContext"]["runAsNonRoot"] is True
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    data_dir = Path(env.get("PORTRAIT_DATA_DIR", "/home/portrait/.cache/portrait/data"))
    assert "/tmp" in mounts and any(data_dir.is_relative_to(m) for m in mounts)
    image_env = dict(re.findall(r"(PORTRAIT_DATA_DIR)=(\S+)", (DEPLOY / "Dockerfile").read_text()))
    assert any(Path(image_env["PORTRAIT_DATA_DIR"]).is_relative_to(m) for m in mounts)


def test_the_api_has_its_own_service_and_an_example_ingress() -> None:
    objects = by_kind()
    service = objects["Service/portrait-api"]["spec"]
    labels = objects["Deployment/portrait-api"]["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= labels.items()
    worker_labels = objects["Deployment/portrait-worker"]["spec"]["template"]["metadata"]["labels"]
    assert not service["selector"].items() <= worker_labels.items()
    [container] = objects["Deployment/portrait-api"]["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["serve"]
    env = {v["name"]: v.get("value") for v in container["env"]}
    metrics_port = int(env["PORTRAIT_METRICS_PORT"])
    assert {p["containerPort"] for p in container["ports"]} == {6066, metrics_port}
    ingress = load_all(K8S / "overlays" / "production" / "ingress.yaml")[0]
    backends = {
        path["backend"]["service"]["name"]
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    }
    assert backends == {"portrait-api"} and ingress["spec"]["tls"]
    publisher = objects["Deployment/portrait-profiles"]["spec"]["template"]["spec"]
    assert publisher["containers"][0]["args"] == ["publish-profiles"]
    config = objects["ConfigMap/portrait-config"]["data"]
    assert config["PORTRAIT_PROFILES_TOPIC"] == "false"  # not beside every worker too
