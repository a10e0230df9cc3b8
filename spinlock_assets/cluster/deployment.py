"""A deployment's state and processes: its settings, ports and pids (``<folder>/cluster.json``), the
environment every process of it sees, and starting and stopping one process (in its own session, so it
is stopped as a group). ``lifecycle.py`` brings the whole deployment up and down. The folder::

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
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .services import HOST, PostgresServer, RedisServer

__all__ = ["STARTUP_TIMEOUT_S", "STOP_TIMEOUT_S", "Deployment", "DeploymentError", "session_processes"]

STATE_FILE = "cluster.json"
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
        """Start ``command`` in its own session (stopped as a group), logging to ``logs/<name>.log``, with
        SIGINT at its default disposition (:func:`with_sigint_restored`)."""
        self.log_path(name).parent.mkdir(parents=True, exist_ok=True)
        with self.log_path(name).open("ab") as log:
            process = subprocess.Popen(
                with_sigint_restored(command),
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
        return bool(session_processes(self.processes.get(name, -1)))

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
        while session_processes(session) and time.monotonic() < deadline:
            time.sleep(0.1)
        killed = [cmd for _, cmd in session_processes(session)]
        for pid, _ in session_processes(session):
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


# Dagster's processes handle SIGTERM with their SIGINT handler. A SIGINT ignored by inheritance (a shell's
# background job without job control, ``nohup``: ``scripts/cluster.sh up &``) stays ignored across exec, and
# then so does SIGTERM: such a deployment would ignore ``down`` until SIGKILL. Restore, then exec.
_RESTORE_SIGINT_AND_EXEC = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execvp(sys.argv[1], sys.argv[1:])"
)


def with_sigint_restored(command: list[str]) -> list[str]:
    """``command`` as a command line that first restores SIGINT's default disposition, then execs it (the
    process keeps its pid, so its session and ``down`` are unchanged)."""
    return [sys.executable, "-c", _RESTORE_SIGINT_AND_EXEC, *command]


def session_processes(session: int) -> list[tuple[int, str]]:
    """Live processes (not zombies) of process group or session ``session``: ``(pid, cmdline)``. A
    process that left the group still counts while it stays in the session (``setsid`` children do not)."""
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
