"""The shipped deployment, run as it is shipped: ``deploy/Dockerfile``'s own steps (read
from the file, ``tests/support/image.py``), then its command as the image's user, in a
working directory that user cannot write, with the settings compose and Kubernetes give
it — only the addresses of the broker and Redis point at the local stack instead.

Then: the worker is ready and applies an event (its customer id keyed with the
deployment's key), ``portrait serve`` with the Kubernetes Deployment's settings is ready
with ``/metrics`` on its own port only, and the Kubernetes Secret's committed
placeholders are refused before anything starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from cli.stack import free_port, stop_process
from portrait.config import Settings
from processors.identity import customer_id_for
from streams.kafka import ensure_topics
from tests.support.envelopes import chan
from tests.support.image import Builder, Image, image_base
from tests.support.worker import outputs, produce, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DEPLOY, K8S = ROOT / "deploy", ROOT / "k8s" / "base"
START_SECONDS = 600.0  # a wait, not a bound: a cold machine loads every model first


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    log = tmp_path_factory.mktemp("image") / "build.log"
    built = Builder(DEPLOY / "Dockerfile", ROOT, image_base()).build(log)
    # the image's root filesystem is read-only to its user: nothing of it belongs to them
    home = built.workdir
    os.chown(home, 0, 0)
    home.chmod(0o755)
    return built


def env_file(path: Path) -> dict[str, str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


def local_addresses(settings: Settings, port: int) -> dict[str, str]:
    """What differs from a real deployment: where the broker and Redis are (and whether
    that is a Redis Cluster: ``make test-cluster``), the local broker's session timeout,
    a namespace of this test's, loopback only."""
    return {
        "PORTRAIT_REDIS_CLUSTER": str(settings.redis_cluster).lower(),
        "PORTRAIT_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "PORTRAIT_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
        "PORTRAIT_REDIS_URL": settings.redis_url,
        "PORTRAIT_REDIS_PASSWORD": "",  # the local Redis has none
        "PORTRAIT_TOPIC_PREFIX": settings.topic_prefix,
        "PORTRAIT_REDIS_KEY_PREFIX": settings.redis_key_prefix,
        "PORTRAIT_CONSUMER_GROUP": settings.consumer_group,
        "PORTRAIT_TOPIC_PARTITIONS": "4",
        "PORTRAIT_TOPIC_REPLICATION": "1",
        "PORTRAIT_SESSION_TIMEOUT_SECONDS": "6",
        "PORTRAIT_HTTP_PORT": str(port),
        "PORTRAIT_HTTP_BIND": "127.0.0.1",
    }


@contextmanager
def running(image: Image, env: dict[str, str], args: list[str], log: Path) -> Iterator[Any]:
    """The image's command as its user: only the image's and the deployment's settings,
    the two writable mounts of the Kubernetes Deployment (``.cache``, and temp)."""
    cache = image.path("/home/portrait/.cache")
    tmp = image.path("/tmp")
    for mount in (cache, tmp):
        mount.mkdir(parents=True, exist_ok=True)
        os.chown(mount, image.uid, image.gid)
    whole = image.env | {"HOME": str(image.workdir), "USER": "portrait", "TMPDIR": str(tmp)}
    command = [*image.entrypoint, *(args or image.cmd)]
    with log.open("ab") as handle:
        process = subprocess.Popen(
            command,
            cwd=image.workdir,
            env=whole | env,
            user=image.uid,
            group=image.gid,
            extra_groups=[],
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        stop_process(process)


def status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def compose_worker_env() -> dict[str, str]:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    worker = compose["services"]["worker"]
    found: dict[str, str] = {}
    for name in worker.get("env_file", []):
        found |= env_file(DEPLOY / name)
    return found | {k: str(v) for k, v in worker.get("environment", {}).items()}


def kubernetes_env(deployment: str, container: str, secrets: dict[str, str]) -> dict[str, str]:
    """A container's settings as Kubernetes gives them: the ConfigMap, its own values,
    and each secret reference looked up in ``secrets``."""
    docs = {
        (d["kind"], d["metadata"]["name"]): d
        for path in K8S.glob("*.yaml")
        for d in yaml.safe_load_all(path.read_text(encoding="utf-8"))
        if d and "metadata" in d
    }
    spec = docs[("Deployment", deployment)]["spec"]["template"]["spec"]
    [found] = [c for c in spec["containers"] if c["name"] == container]
    env: dict[str, str] = {}
    for source in found.get("envFrom", []):
        env |= docs[("ConfigMap", source["configMapRef"]["name"])]["data"]
    for variable in found.get("env", []):
        if "value" in variable:
            env[variable["name"]] = variable["value"]
        else:
            ref = variable["valueFrom"]["secretKeyRef"]
            env[variable["name"]] = secrets[f"{ref['name']}/{ref['key']}"]
    return env


def committed_secrets() -> dict[str, str]:
    found = {}
    for doc in yaml.safe_load_all((K8S / "secret.yaml").read_text(encoding="utf-8")):
        for key, value in doc.get("stringData", {}).items():
            found[f"{doc['metadata']['name']}/{key}"] = value
    return found


def test_the_image_runs_as_compose_ships_it(
    image: Image, stack_settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    env = compose_worker_env() | local_addresses(stack_settings, port)
    log = tmp_path / "worker.log"
    phone = "13812345678"
    with running(image, env, [], log) as process:
        wait_for(
            lambda: process.poll() is None and status(port, "/readyz") == 200,
            START_SECONDS,
            "the image's worker to be ready",
        )
        produce(
            stack_settings, [chan("img-1", "2026-12-01T09:00:00+08:00", "app", {"phone": phone})]
        )
        wait_for(lambda: bool(outputs(stack_settings, "profile-changes")), 120.0, "an output")
        assert process.poll() is None
        # Faust's own views are off; the probes and the metrics answer
        assert status(port, "/") == 404 and status(port, "/router") == 404
        assert status(port, "/metrics") == 200
    [changed] = outputs(stack_settings, "profile-changes")
    key = env["PORTRAIT_CUSTOMER_ID_KEY"].encode()
    assert changed["customer_id"] == customer_id_for(f"phone:+86{phone}", key)
    assert changed["customer_id"] != customer_id_for(f"phone:+86{phone}")  # not the local key
    text = log.read_text(errors="replace")
    assert "Permission denied" not in text and "Traceback" not in text
    assert {p.name for p in image.workdir.iterdir()} <= {".cache"}  # nothing written there


def test_kubernetes_placeholders_are_refused_and_real_secrets_serve(
    image: Image, stack_settings: Settings, tmp_path: Path
) -> None:
    port, metrics_port = free_port(), free_port()
    placeholders = committed_secrets()
    env = kubernetes_env("portrait-api", "api", placeholders) | local_addresses(
        stack_settings, port
    )
    env["PORTRAIT_METRICS_PORT"] = str(metrics_port)
    # the committed Secret: the worker refuses it before it starts anything
    refused = subprocess.run(
        [*image.entrypoint, "worker"],
        cwd=image.workdir,
        env=image.env | {"HOME": str(image.workdir)} | env,
        user=image.uid,
        group=image.gid,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert refused.returncode == 2
    assert "placeholder" in refused.stderr and "PORTRAIT_ERASURE_KEY" in refused.stderr
    # the real Secret, made as docs/operations.md says: serve is ready, metrics apart
    real = {name: hashlib.sha256(name.encode()).hexdigest() for name in placeholders}
    tokens = image.path("/etc/portrait/api/tokens.json")
    tokens.parent.mkdir(parents=True, exist_ok=True)
    token = "image-test-token"
    listed = [
        {
            "subject": "t",
            "scope": "service",
            "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
        }
    ]
    tokens.write_text(json.dumps(listed))
    env = kubernetes_env("portrait-api", "api", real) | local_addresses(stack_settings, port)
    env |= {"PORTRAIT_METRICS_PORT": str(metrics_port), "PORTRAIT_API_TOKENS_FILE": str(tokens)}
    ensure_topics(stack_settings)  # the workers' first start makes them; serve reads one
    with running(image, env, ["serve"], tmp_path / "serve.log") as process:
        wait_for(
            lambda: process.poll() is None and status(port, "/readyz") == 200,
            START_SECONDS,
            "portrait serve from the image",
        )
        assert status(metrics_port, "/metrics") == 200
        assert status(port, "/metrics") == 404
        assert status(port, "/v1/profiles/c-00000000000000000000") == 401
        time.sleep(0.1)
        assert process.poll() is None
