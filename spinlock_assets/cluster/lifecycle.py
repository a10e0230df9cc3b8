"""Bringing the whole deployment up and down on one machine: PostgreSQL, Redis, a gRPC code server, the
webserver, the daemon and N Celery run workers, each in its own session, all on 127.0.0.1.

``up`` records everything in ``<folder>/cluster.json`` and ``down`` reads it back, so the deployment
can be stopped from another process (``scripts/cluster.sh down``).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from .deployment import STARTUP_TIMEOUT_S, STATE_FILE, STOP_TIMEOUT_S, Deployment, DeploymentError
from .instance_config import render_instance_yaml, render_workspace_yaml
from .services import HOST, ServiceError, free_port, wait_for_port

__all__ = ["down", "status", "up"]

CODE_MODULE = "spinlock_assets.definitions"


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
