"""The two external services of the deployment, run locally: PostgreSQL (Dagster's runs, events and
schedules) and Redis (the Celery broker and result backend).

Each runs from the Debian packages under a folder of its own, on a free loopback port, in its own
session, so one machine can hold several deployments (tests, benchmarks, other users) side by side.
On several machines the same roles are played by a managed PostgreSQL and Redis: only the URLs change.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "HOST",
    "PostgresServer",
    "RedisServer",
    "ServiceError",
    "free_port",
    "wait_for_port",
]

HOST = "127.0.0.1"
PG_USER = "postgres"  # the Debian package's system user: initdb refuses to run as root
PG_DATABASE = "dagster"
START_TIMEOUT_S = 60.0


class ServiceError(RuntimeError):
    """A service is missing, did not start or did not stop."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, *, timeout: float = START_TIMEOUT_S, what: str = "service") -> None:
    """Return once 127.0.0.1:``port`` accepts connections; ``ServiceError`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
            return
        if time.monotonic() > deadline:
            raise ServiceError(f"{what} did not listen on {HOST}:{port} within {timeout:.0f} s")
        time.sleep(0.1)


def _postgres_bin(name: str) -> str:
    # Debian keeps the server binaries out of PATH, one folder per major version.
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise ServiceError(f"PostgreSQL's {name} not found: apt-get install postgresql (cluster.sh does)")
    return found[-1]


def _as_postgres(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    # The server refuses to run as root; the Debian package provides the unprivileged user.
    prefix = ["runuser", "-u", PG_USER, "--"] if os.geteuid() == 0 else []
    return subprocess.run(prefix + command, check=True, capture_output=True, text=True, **kwargs)


@dataclass(frozen=True)
class PostgresServer:
    """A PostgreSQL cluster under ``directory`` listening on 127.0.0.1:``port``, password auth only."""

    directory: Path
    port: int

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def log_path(self) -> Path:
        return self.directory / "postgres.log"

    @property
    def password_path(self) -> Path:
        return self.directory / "password"

    @property
    def password(self) -> str:
        return self.password_path.read_text().strip()

    @property
    def url(self) -> str:
        return f"postgresql://{PG_USER}:{self.password}@{HOST}:{self.port}/{PG_DATABASE}"

    def init(self) -> None:
        """Create the cluster (once) with a random superuser password and scram auth on TCP only."""
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        self.password_path.write_text(secrets.token_hex(16) + "\n")
        self.password_path.chmod(0o600)
        pwfile = self.directory / ".initdb-password"
        pwfile.write_text(self.password)
        if os.geteuid() == 0:
            shutil.chown(self.directory, PG_USER)
            shutil.chown(pwfile, PG_USER)
        try:
            _as_postgres(
                [
                    _postgres_bin("initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    PG_USER,
                    f"--pwfile={pwfile}",
                    "--auth-host=scram-sha-256",
                    "--auth-local=reject",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ]
            )
        finally:
            pwfile.unlink()

    def start(self) -> None:
        """Start the server (no Unix socket: loopback TCP only) and create the database if missing."""
        if self.running():
            return
        options = f"-p {self.port} -c listen_addresses={HOST} -c unix_socket_directories='' -c fsync=off"
        if os.geteuid() == 0:
            self.log_path.touch()
            shutil.chown(self.log_path, PG_USER)
        # pg_ctl forks the server into its own session (setsid), so it outlives whoever started it.
        _as_postgres(
            [
                _postgres_bin("pg_ctl"),
                "-D",
                str(self.data_dir),
                "-o",
                options,
                "-l",
                str(self.log_path),
                "-w",
                "-t",
                str(int(START_TIMEOUT_S)),
                "start",
            ]
        )
        self._create_database()

    def _create_database(self) -> None:
        import psycopg2

        with contextlib.closing(
            psycopg2.connect(
                host=HOST, port=self.port, user=PG_USER, password=self.password, dbname="postgres"
            )
        ) as connection:
            connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (PG_DATABASE,))
                if cursor.fetchone() is None:
                    cursor.execute(f"CREATE DATABASE {PG_DATABASE}")

    def running(self) -> bool:
        if not (self.data_dir / "postmaster.pid").exists():
            return False
        result = subprocess.run(
            [_postgres_bin("pg_isready"), "-h", HOST, "-p", str(self.port)], capture_output=True
        )
        return result.returncode == 0

    def stop(self) -> None:
        """Fast shutdown: open transactions are rolled back, the data stays consistent."""
        if not (self.data_dir / "postmaster.pid").exists():
            return
        _as_postgres([_postgres_bin("pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"])


@dataclass(frozen=True)
class RedisServer:
    """A Redis server under ``directory`` on 127.0.0.1:``port``, with an fsync'ed append-only file so
    that queued Celery messages survive a restart."""

    directory: Path
    port: int

    @property
    def pid_path(self) -> Path:
        return self.directory / "redis.pid"

    @property
    def log_path(self) -> Path:
        return self.directory / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}"

    def start(self) -> None:
        if self.running():
            return
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServiceError("redis-server not found: apt-get install redis-server (cluster.sh does)")
        self.directory.mkdir(parents=True, exist_ok=True)
        config = [
            "--port",
            str(self.port),
            "--bind",
            HOST,
            "--protected-mode",
            "yes",
            "--dir",
            str(self.directory),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
            "--daemonize",
            "yes",
            "--pidfile",
            str(self.pid_path),
            "--logfile",
            str(self.log_path),
        ]
        subprocess.run([binary, *config], check=True, capture_output=True)
        wait_for_port(self.port, what="redis-server")

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_path.read_text())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def running(self) -> bool:
        return self.pid() is not None

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM: Redis flushes its append-only file and exits."""
        pid = self.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.pid() is not None:
            if time.monotonic() > deadline:
                raise ServiceError(f"redis-server (pid {pid}) still ran {timeout:.0f} s after SIGTERM")
            time.sleep(0.05)
