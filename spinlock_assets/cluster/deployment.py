"""The whole deployment on one machine: PostgreSQL, Redis, a gRPC code server, the webserver, the daemon
and N Celery run workers, each in its own session, all on 127.0.0.1, under one folder.

``up`` writes ``<folder>/cluster.json`` (ports, pids, settings) and ``down`` reads it back, so the
deployment can be stopped from another process (``scripts/cluster.sh down``). The layout of the
folder::

    cluster.json            ports, pids, worker counts, spec and data root
    dagster_home/           DAGSTER_HOME: dagster.yaml rendered from deploy/dagster.celery.yaml
    workspace.yaml          the code server's address, for the webserver and the daemon
    postgres/ redis/        the services' data and logs
    logs/<process>.log      one log per process
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .instance_config import render_instance_yaml, render_workspace_yaml
from .services import HOST, PostgresServer, RedisServer, ServiceError, free_port, wait_for_port

__all__ = ["Deployment", "DeploymentError", "down", "status", "up"]

STATE_FILE = "cluster.json"
CODE_MODULE = "spinlock_assets.definitions"
CELERY_APP = "spinlock_assets.cluster.celery_app"
STARTUP_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0
WORKER_READY = b" ready."  # Celery's log line once the worker consumes from its queues


class DeploymentError(RuntimeError):
    """A process of the deployment did not start, or did not stop."""


@dataclass
class Deployment:
    """A deployment's settings, ports and processes (``cluster.json``)."""

    directory: Path
    cpu_workers: int = 2
    cuda_workers: int = 0
    launcher: str = "celery"  # or "process": Dagster's default launcher, no workers (a baseline)
    spec: str = ""  # SPINLOCK_SPEC; empty: the package default
    data_root: str = ""  # SPINLOCK_DATA_ROOT; empty: <directory>/data
    webserver_port: int = 0
    code_server_port: int = 0
    postgres_port: int = 0
    redis_port: int = 0
    postgres_dir: str = ""  # see _postgres_dir
    processes: dict[str, int] = field(default_factory=dict)  # name -> pid (also its session id)

    @property
    def dagster_home(self) -> Path:
        return self.directory / "dagster_home"

    @property
    def postgres(self) -> PostgresServer:
        return PostgresServer(Path(self.postgres_dir), self.postgres_port)

    @property
    def redis(self) -> RedisServer:
        return RedisServer(self.directory / "redis", self.redis_port)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.webserver_port}"

    def log_path(self, name: str) -> Path:
        return self.directory / "logs" / f"{name}.log"

    def environment(self) -> dict[str, str]:
        """What every process of the deployment (and a client of its instance) needs to see."""
        return {
            **os.environ,
            "DAGSTER_HOME": str(self.dagster_home),
            "DAGSTER_PG_HOST": HOST,
            "DAGSTER_PG_PORT": str(self.postgres_port),
            "DAGSTER_PG_USER": "postgres",
            "DAGSTER_PG_PASSWORD": self.postgres.password,
            "DAGSTER_PG_DB": "dagster",
            "DAGSTER_CELERY_BROKER": f"{self.redis.url}/0",
            "DAGSTER_CELERY_BACKEND": f"{self.redis.url}/1",
            "SPINLOCK_DATA_ROOT": self.data_root or str(self.directory / "data"),
            **({"SPINLOCK_SPEC": self.spec} if self.spec else {}),
            "PYTHONUNBUFFERED": "1",
        }

    def save(self) -> None:
        state = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}
        (self.directory / STATE_FILE).write_text(json.dumps(state, indent=1))

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> Deployment:
        path = Path(directory).absolute() / STATE_FILE
        if not path.exists():
            raise DeploymentError(f"no deployment at {path.parent} (no {STATE_FILE}): run `up` first")
        state = json.loads(path.read_text())
        return cls(**{**state, "directory": Path(state["directory"])})

    # -- processes --------------------------------------------------------------------------------

    def start_process(self, name: str, command: list[str], env: Mapping[str, str] | None = None) -> int:
        """Start ``command`` in its own session (stopped as a group), logging to ``logs/<name>.log``."""
        self.log_path(name).parent.mkdir(parents=True, exist_ok=True)
        with self.log_path(name).open("ab") as log:
            process = subprocess.Popen(
                command,
                cwd=self.directory,
                env={**self.environment(), **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes[name] = process.pid
        self.save()
        return process.pid

    def start_worker(self, kind: str, index: int) -> str:
        """Start Celery run worker ``<kind><index>`` serving queue ``kind`` (``cpu`` or ``cuda``): one
        run at a time in one warm pool process, torch on one thread (runs are the parallelism)."""
        name = f"worker-{kind}{index}"
        env = {"SPINLOCK_DEVICE": kind, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        if kind == "cuda":
            env["CUDA_VISIBLE_DEVICES"] = str(index - 1)  # one GPU per worker
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            CELERY_APP,
            "worker",
            "-Q",
            kind,
            "-c",
            "1",
            "-P",
            "prefork",
            "-n",
            f"{kind}{index}@%h",
            "-O",
            "fair",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel",
            "INFO",
        ]
        self.start_process(name, command, env)
        return name

    def workers(self) -> list[str]:
        return sorted(name for name in self.processes if name.startswith("worker-"))

    def alive(self, name: str) -> bool:
        return bool(_session_pids(self.processes.get(name, -1)))

    def wait_worker_ready(self, name: str, *, since: int = 0, timeout: float = STARTUP_TIMEOUT_S) -> None:
        """Wait until worker ``name`` logs that it is ready (after byte ``since`` of its log)."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError), self.log_path(name).open("rb") as log:
                log.seek(since)
                if WORKER_READY in log.read():
                    return
            if not self.alive(name):
                raise DeploymentError(f"{name} exited while starting\n{self.log_tail(name)}")
            if time.monotonic() > deadline:
                raise DeploymentError(f"{name} not ready after {timeout:.0f} s\n{self.log_tail(name)}")
            time.sleep(0.2)

    def stop_process(self, name: str, timeout: float = STOP_TIMEOUT_S) -> list[str]:
        """SIGTERM to the process's session, SIGKILL to what is left after ``timeout``; the command
        lines that had to be killed."""
        session = self.processes.pop(name, None)
        self.save()
        if session is None:
            return []
        with contextlib.suppress(ProcessLookupError):
            os.killpg(session, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _session_pids(session) and time.monotonic() < deadline:
            time.sleep(0.1)
        killed = [cmd for _, cmd in _session_pids(session)]
        for pid, _ in _session_pids(session):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return killed

    def log_tail(self, name: str, lines: int = 40) -> str:
        try:
            text = self.log_path(name).read_text(errors="replace")
        except OSError as error:
            return f"(no log for {name}: {error})"
        return f"--- last {lines} lines of {self.log_path(name)} ---\n" + "\n".join(
            text.splitlines()[-lines:]
        )


def _session_pids(session: int) -> list[tuple[int, str]]:
    """Live processes (not zombies) of process group or session ``session``: ``(pid, cmdline)``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # exited meanwhile
            continue
        state, _ppid, pgrp, sid = stat[stat.rindex(")") + 2 :].split()[:4]  # comm may hold spaces
        if state not in ("Z", "X") and session in (int(pgrp), int(sid)):
            found.append((int(entry.name), cmdline))
    return found


def _postgres_dir(directory: Path) -> Path:
    """Where PostgreSQL keeps its data: ``<directory>/postgres``, unless the server's unprivileged user
    cannot reach it (pytest's temp folders are private to root); then a folder in /tmp named after
    ``directory``, so that ``up`` after ``down`` finds the same database again."""
    import hashlib

    if os.geteuid() != 0 or all(p.stat().st_mode & 0o001 for p in (directory, *directory.parents)):
        return directory / "postgres"
    return Path("/tmp") / f"spinlock-pg-{hashlib.sha256(str(directory).encode()).hexdigest()[:12]}"


def _wait_webserver(deployment: Deployment, timeout: float) -> None:
    """Until the webserver answers and its code location has loaded."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy
    query = json.dumps(
        {"query": "{ workspaceOrError { ... on Workspace { locationEntries { loadStatus } } } }"}
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not deployment.alive("webserver"):
            raise DeploymentError(f"the webserver exited\n{deployment.log_tail('webserver')}")
        request = urllib.request.Request(
            f"{deployment.url}/graphql", data=query.encode(), headers={"Content-Type": "application/json"}
        )
        with contextlib.suppress(OSError, ValueError), opener.open(request, timeout=5) as response:
            entries = json.load(response)["data"]["workspaceOrError"]["locationEntries"]
            if entries and all(entry["loadStatus"] == "LOADED" for entry in entries):
                return
        time.sleep(0.3)
    raise DeploymentError(f"webserver not serving after {timeout:.0f} s\n{deployment.log_tail('webserver')}")


def up(
    directory: str | os.PathLike[str],
    *,
    cpu_workers: int = 2,
    cuda_workers: int = 0,
    spec: str = "",
    data_root: str = "",
    webserver_port: int = 0,
    launcher: str = "celery",
    timeout: float = STARTUP_TIMEOUT_S,
) -> Deployment:
    """Start everything under ``directory`` and wait until it serves; ``DeploymentError`` (after
    stopping what had started) if any part fails."""
    directory = Path(directory).absolute()
    if (directory / STATE_FILE).exists() and Deployment.load(directory).processes:
        raise DeploymentError(f"a deployment is already up at {directory}: run `down` first")
    directory.mkdir(parents=True, exist_ok=True)
    deployment = Deployment(
        directory,
        cpu_workers=cpu_workers,
        cuda_workers=cuda_workers,
        launcher=launcher,
        spec=str(Path(spec).absolute()) if spec else "",
        data_root=str(Path(data_root).absolute()) if data_root else "",
        webserver_port=webserver_port or free_port(),
        code_server_port=free_port(),
        postgres_port=free_port(),
        redis_port=free_port(),
        postgres_dir=str(_postgres_dir(directory)),
    )
    instance_yaml = render_instance_yaml(
        cpu_workers=cpu_workers, cuda_workers=cuda_workers, launcher=launcher
    )
    deployment.dagster_home.mkdir(exist_ok=True)
    (deployment.dagster_home / "dagster.yaml").write_text(instance_yaml)
    (directory / "workspace.yaml").write_text(
        render_workspace_yaml(host=HOST, port=deployment.code_server_port)
    )
    deployment.save()
    try:
        _start(deployment, timeout)
    except BaseException:
        with contextlib.suppress(DeploymentError, ServiceError):
            down(directory)
        raise
    return deployment


def _start(deployment: Deployment, timeout: float) -> None:
    deployment.postgres.init()
    deployment.postgres.start()
    deployment.redis.start()
    bin_dir = Path(sys.executable).parent
    # The GPU pool admits one step per GPU (at least one slot, so a lone cuda run still proceeds).
    command = [str(bin_dir / "dagster"), "instance", "concurrency", "set", "gpu"]
    result = subprocess.run(
        [*command, str(max(deployment.cuda_workers, 1))],
        env=deployment.environment(),
        capture_output=True,
        text=True,
        cwd=deployment.directory,
    )
    if result.returncode:
        raise DeploymentError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    workspace = str(deployment.directory / "workspace.yaml")
    deployment.start_process(
        "code-server",
        [
            str(bin_dir / "dagster"),
            "code-server",
            "start",
            "-m",
            CODE_MODULE,
            "-h",
            HOST,
            "-p",
            str(deployment.code_server_port),
            "--location-name",
            "spinlock_assets",
        ],
    )
    workers = []
    if deployment.launcher == "celery":
        workers += [deployment.start_worker("cpu", i) for i in range(1, deployment.cpu_workers + 1)]
        workers += [deployment.start_worker("cuda", i) for i in range(1, deployment.cuda_workers + 1)]
    wait_for_port(deployment.code_server_port, timeout=timeout, what="the code server")
    deployment.start_process(
        "webserver",
        [
            str(bin_dir / "dagster-webserver"),
            "-w",
            workspace,
            "-h",
            HOST,
            "-p",
            str(deployment.webserver_port),
        ],
    )
    deployment.start_process("daemon", [str(bin_dir / "dagster-daemon"), "run", "-w", workspace])
    for name in workers:
        deployment.wait_worker_ready(name, timeout=timeout)
    _wait_webserver(deployment, timeout)
    if not deployment.alive("daemon"):
        raise DeploymentError(f"the daemon exited\n{deployment.log_tail('daemon')}")


def down(directory: str | os.PathLike[str], timeout: float = STOP_TIMEOUT_S) -> None:
    """Stop every process and both services; ``DeploymentError`` naming any process that had to be
    SIGKILLed. The daemon goes first (no new run is launched), the code server last."""
    deployment = Deployment.load(directory)
    order = ["daemon", "webserver", *deployment.workers(), "code-server"]
    order += [name for name in list(deployment.processes) if name not in order]
    killed = [cmd for name in order for cmd in deployment.stop_process(name, timeout)]
    deployment.redis.stop()
    deployment.postgres.stop()
    if killed:
        raise DeploymentError(
            f"killed after {timeout:.0f} s without exiting on SIGTERM:\n" + "\n".join(killed)
        )


def status(directory: str | os.PathLike[str]) -> dict[str, str]:
    """``{part: "up" | "down"}`` for the services and every recorded process, and the webserver URL."""
    deployment = Deployment.load(directory)
    parts = {
        "postgres": "up" if deployment.postgres.running() else "down",
        "redis": "up" if deployment.redis.running() else "down",
    }
    parts.update({name: "up" if deployment.alive(name) else "down" for name in deployment.processes})
    if deployment.processes:
        parts["url"] = deployment.url
    return parts
