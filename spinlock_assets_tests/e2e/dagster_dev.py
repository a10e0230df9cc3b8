"""A real ``dagster dev`` for end-to-end tests, driven through its GraphQL API.

``dagster_dev(directory, spec)`` is a context manager that writes the spec to a file, creates a
``DAGSTER_HOME`` with a minimal ``dagster.yaml`` (telemetry off), starts
``dagster dev -w workspace.yaml`` on a free loopback port in its own session (so it
can be checked and stopped as a whole), waits until the webserver answers and the code location
has loaded, and yields a :class:`DagsterDev`. On exit it sends SIGTERM to ``dagster dev``, then to
its process group, waits for every process of the group to end (SIGKILL after ``STOP_TIMEOUT_S``)
and raises :class:`DagsterDevError` if any had to be killed (see :meth:`DagsterDev.stop`).

Everything listens on and talks to 127.0.0.1 only. Runs are launched with ``dagster-graphql``'s
``DagsterGraphQLClient``; what it cannot do (launch an asset backfill, ask whether the code location has
loaded, ad hoc queries) goes through :meth:`DagsterDev.graphql` on the same ``gql`` transport; runs,
backfills and materializations are read from the server's own ``DagsterInstance`` (its ``DAGSTER_HOME``).

Use it as a module-scoped fixture::

    @pytest.fixture(scope="module")
    def server(tmp_path_factory):
        with dagster_dev(tmp_path_factory.mktemp("dagster_dev"), tiny_spec()) as dev:
            yield dev
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import dagster as dg
from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError
from gql import Client, gql
from gql.transport.exceptions import TransportError
from gql.transport.requests import RequestsHTTPTransport

from spinlock_assets.cluster.client import GraphQLError, launch_backfill
from spinlock_assets.cluster.deployment import session_processes, with_sigint_restored

__all__ = [
    "ASSET_JOB",
    "HOST",
    "DagsterDev",
    "DagsterDevError",
    "Materialization",
    "dagster_dev",
    "expect_typename",
    "free_port",
]

HOST = "127.0.0.1"
WORKSPACE = Path(__file__).resolve().parents[2] / "workspace.yaml"  # what scripts/ui.sh serves
REPO_ROOT = Path(__file__).resolve().parents[2]
REPOSITORY_NAME = "__repository__"
ASSET_JOB = "__ASSET_JOB"
STARTUP_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0
POLL_INTERVAL_S = 0.5
DAGSTER_YAML = "telemetry:\n  enabled: false\n"
BACKFILL_DONE = frozenset({"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"})
RUN_DONE = frozenset({"SUCCESS", "FAILURE", "CANCELED"})

T = TypeVar("T")

_WORKSPACE = """
query {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name loadStatus
        locationOrLoadError {
          __typename
          ... on RepositoryLocation { name repositories { name } }
          ... on PythonError { message errorChain { error { message } } }
        }
      }
    }
    ... on Error { message }
  }
}
"""


class DagsterDevError(RuntimeError):
    """``dagster dev`` did not start or stop cleanly, or a GraphQL call failed."""


@dataclass(frozen=True)
class Materialization:
    """One recorded materialization of an asset (partition ``None`` when unpartitioned)."""

    asset_key: str
    partition: str | None
    run_id: str
    timestamp: float
    metadata: dict[str, Any]


def free_port() -> int:
    """A TCP port on 127.0.0.1 free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def poll(probe: Callable[[], T | None], *, timeout: float, what: str, interval: float = POLL_INTERVAL_S) -> T:
    """Call ``probe`` until it returns something other than ``None``; ``TimeoutError`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: still waiting after {timeout:.0f} s")
        time.sleep(interval)


def _asset_path(key: str | Sequence[str]) -> list[str]:
    return key.split("/") if isinstance(key, str) else list(key)


def expect_typename(result: Mapping[str, Any], typename: str, action: str) -> Mapping[str, Any]:
    """``result`` when the server answered ``typename``; ``DagsterDevError`` with its answer otherwise."""
    if result["__typename"] != typename:
        raise DagsterDevError(f"{action}: {result['__typename']}: {json.dumps(result, indent=1)[:4000]}")
    return result


@dataclass
class DagsterDev:
    """A running ``dagster dev`` (use :func:`dagster_dev`): a GraphQL client for it and its instance."""

    directory: Path
    port: int
    process: subprocess.Popen
    log_path: Path
    spec_path: Path
    data_root: Path
    dagster_home: Path
    location_name: str = ""
    _log_file: Any = field(default=None, repr=False)
    _stopped: bool = field(default=False, repr=False)
    _opener: urllib.request.OpenerDirector = field(
        default_factory=lambda: urllib.request.build_opener(urllib.request.ProxyHandler({})), repr=False
    )
    _instance: dg.DagsterInstance | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    # -- process ----------------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        directory: str | os.PathLike[str],
        spec: Any,
        *,
        startup_timeout: float = STARTUP_TIMEOUT_S,
        instance_yaml: str = "",
        env: Mapping[str, str] | None = None,
    ) -> DagsterDev:
        """Start ``dagster dev`` for ``spec`` (a ``DatasetSpec``, a dict or JSON text) under ``directory``
        and wait until it serves; ``instance_yaml`` is appended to the minimal ``dagster.yaml``."""
        directory = Path(directory).absolute()
        directory.mkdir(parents=True, exist_ok=True)
        spec_path = directory / "spec.json"
        spec_json = spec.to_json() if hasattr(spec, "to_json") else spec
        spec_path.write_text(spec_json if isinstance(spec_json, str) else json.dumps(spec_json))
        home = directory / "dagster_home"
        home.mkdir(exist_ok=True)
        (home / "dagster.yaml").write_text(DAGSTER_YAML + instance_yaml)
        data_root = directory / "data"
        log_path = directory / "dagster-dev.log"
        port = free_port()
        environment = {
            **os.environ,
            "SPINLOCK_SPEC": str(spec_path),
            "SPINLOCK_DATA_ROOT": str(data_root),
            "DAGSTER_HOME": str(home),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        # dagster dev handles SIGTERM with its SIGINT handler, which a pytest started in the background
        # inherits ignored: restore it (as the cluster deployment does for each of its processes).
        command = with_sigint_restored([sys.executable, "-m", "dagster", "dev"])
        command += ["-w", str(WORKSPACE)]
        command += ["-h", HOST, "-p", str(port)]
        log_file = log_path.open("wb")
        try:
            process = subprocess.Popen(
                command,
                cwd=directory,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own session and group: found, signalled and checked as a whole
            )
        except BaseException:
            log_file.close()
            raise
        server = cls(directory, port, process, log_path, spec_path, data_root, home, _log_file=log_file)
        try:
            server._wait_ready(startup_timeout)
        except BaseException:
            with contextlib.suppress(DagsterDevError):
                server.stop()
            raise
        return server

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout

        def exited() -> None:
            if self.process.poll() is not None:
                code = self.process.returncode
                raise DagsterDevError(
                    f"dagster dev exited with code {code} while starting\n{self.log_tail()}"
                )

        def answers() -> bool | None:
            exited()
            try:
                with self._opener.open(f"{self.url}/server_info", timeout=5) as response:
                    return True if response.status == 200 else None
            except (OSError, urllib.error.URLError):
                return None

        def location_loaded() -> str | None:
            exited()
            data = self.graphql(_WORKSPACE)["workspaceOrError"]
            for entry in expect_typename(data, "Workspace", "workspace")["locationEntries"]:
                if entry["loadStatus"] != "LOADED":
                    return None
                location = entry["locationOrLoadError"]
                if location["__typename"] != "RepositoryLocation":
                    chain = [location.get("message", "")]
                    chain += [link["error"]["message"] for link in location.get("errorChain") or []]
                    causes = "\n".join(message.strip() for message in chain if message)
                    raise DagsterDevError(f"code location {entry['name']!r} failed to load:\n{causes}")
                return location["name"]
            return None

        try:
            poll(answers, timeout=timeout, what="dagster dev /server_info")
            self.location_name = poll(
                location_loaded, timeout=max(deadline - time.monotonic(), 1.0), what="code location load"
            )
        except TimeoutError as error:
            raise DagsterDevError(f"{error}\n{self.log_tail()}") from error

    @property
    def stopped(self) -> bool:
        """Whether :meth:`stop` was called (as opposed to the server dying on its own)."""
        return self._stopped

    @property
    def running(self) -> bool:
        return not self._stopped and self.process.poll() is None

    def leftover_processes(self) -> list[tuple[int, str]]:
        """Processes of the server's process group or session still alive."""
        return session_processes(self.process.pid)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop the server and every process it started; idempotent.

        SIGTERM goes to ``dagster dev`` itself first: it then stops its webserver, daemon and code
        server in order. (SIGTERM to the whole group at once races with its code-server watchdog,
        which restarts the code server it sees exit, and that new one outlives ``dagster dev``.)
        Then SIGTERM to the process group for anything left (a run worker still running), and
        SIGKILL for what is still alive ``timeout`` seconds after the first signal, which raises
        :class:`DagsterDevError` naming those processes.
        """
        if self._stopped:
            return
        self._stopped = True
        group = self.process.pid
        deadline = time.monotonic() + timeout
        with contextlib.suppress(ProcessLookupError):
            os.kill(group, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=timeout)
        if self.leftover_processes():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGTERM)
        leftovers = self.leftover_processes()
        while leftovers and time.monotonic() < deadline:
            time.sleep(0.2)
            leftovers = self.leftover_processes()
        if leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
            for pid, _ in leftovers:  # a process that left the group but not the session
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=5)
        self._log_file.close()
        if self._instance is not None:
            self._instance.dispose()
        if leftovers:
            listing = "\n".join(f"  {pid}: {cmd[:200]}" for pid, cmd in leftovers)
            raise DagsterDevError(
                f"{len(leftovers)} process(es) of dagster dev still ran {timeout:.0f} s after SIGTERM "
                f"(killed):\n{listing}\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 80) -> str:
        """The last ``lines`` lines of the dagster dev log (webserver, daemon, code server, runs)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as error:
            return f"(no dagster dev log: {error})"
        return f"--- last {lines} lines of {self.log_path} ---\n" + "\n".join(text.splitlines()[-lines:])

    # -- GraphQL and the instance ------------------------------------------------------------------

    @functools.cached_property
    def _transport(self) -> RequestsHTTPTransport:
        return RequestsHTTPTransport(url=f"{self.url}/graphql", use_json=True, timeout=60)

    @functools.cached_property
    def client(self) -> DagsterGraphQLClient:
        """``dagster-graphql``'s client for this server (launches runs, reloads the code location)."""
        return DagsterGraphQLClient(HOST, port_number=self.port, transport=self._transport)

    @property
    def instance(self) -> dg.DagsterInstance:
        """The server's instance (its ``DAGSTER_HOME``), for reading runs, backfills and materializations."""
        if self._instance is None:
            self._instance = dg.DagsterInstance.from_config(str(self.dagster_home))
        return self._instance

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None) -> dict:
        """Execute ``query`` on the server; the ``data`` of the answer, ``DagsterDevError`` on any error."""
        request = gql(query)
        request.variable_values = dict(variables or {})
        try:
            return Client(transport=self._transport).execute(request)
        except (TransportError, OSError) as error:
            raise DagsterDevError(f"GraphQL: {error}") from error

    def launch_backfill(
        self,
        asset_keys: Sequence[str | Sequence[str]],
        partition_names: Sequence[str] | None = None,
        *,
        title: str = "e2e backfill",
        tags: Mapping[str, str] | None = None,
    ) -> str:
        """Launch an asset backfill of ``asset_keys`` over ``partition_names`` (all partitions when
        ``None``) through the deployment's client (the UI's mutation); the backfill id."""
        paths = [_asset_path(key) for key in asset_keys]
        try:
            return launch_backfill(self.url, paths, partition_names, title=title, tags=tags)
        except GraphQLError as error:
            raise DagsterDevError(str(error)) from error

    def backfill(self, backfill_id: str) -> dict:
        """``{id, status, error, runs: [{runId, status, jobName, tags}]}`` of a backfill."""
        backfill = self.instance.get_backfill(backfill_id)
        if backfill is None:
            raise DagsterDevError(f"backfill {backfill_id}: not found")
        runs = self.instance.get_runs(filters=dg.RunsFilter.for_backfill(backfill_id))
        return {
            "id": backfill_id,
            "status": backfill.status.value,
            "error": backfill.error.message if backfill.error else None,
            "runs": [_run_summary(run) for run in runs],
        }

    def wait_backfill(self, backfill_id: str, timeout: float = 300) -> str:
        """Poll the backfill until it finishes; its final status (``COMPLETED_SUCCESS`` when all went
        well). ``TimeoutError`` with :meth:`describe_backfill` after ``timeout``."""

        return _wait_until_done(
            lambda: self.backfill(backfill_id)["status"],
            BACKFILL_DONE,
            what=f"backfill {backfill_id}",
            describe=lambda: self.describe_backfill(backfill_id),
            timeout=timeout,
        )

    def describe_backfill(self, backfill_id: str) -> str:
        """Backfill status, each run's status, the errors of failed runs and the dev log tail."""
        backfill = self.backfill(backfill_id)
        lines = [f"backfill {backfill_id}: {backfill['status']} ({len(backfill['runs'])} runs)"]
        if backfill["error"]:
            lines.append(f"  error: {backfill['error']}")
        for run in backfill["runs"]:
            lines.append(
                f"  run {run['runId']}: {run['status']} partition={run['tags'].get('dagster/partition')}"
            )
            if run["status"] == "FAILURE":
                lines += [f"    {message}" for message in self.run_failures(run["runId"])]
        lines.append(self.log_tail())
        return "\n".join(lines)

    def launch_run(
        self,
        job_name: str = ASSET_JOB,
        asset_keys: Sequence[str | Sequence[str]] | None = None,
        *,
        tags: Mapping[str, str] | None = None,
        run_config: Mapping[str, Any] | None = None,
    ) -> str:
        """Launch a run of ``job_name`` (``__ASSET_JOB`` by default), restricted to ``asset_keys`` if
        given (``tags={"dagster/partition": key}`` for one partition); the run id."""
        try:
            return self.client.submit_job_execution(
                job_name,
                repository_location_name=self.location_name,
                repository_name=REPOSITORY_NAME,
                run_config=dict(run_config or {}),
                tags=dict(tags or {}),
                asset_selection=[_asset_path(key) for key in asset_keys] if asset_keys is not None else None,
            )
        except DagsterGraphQLClientError as error:
            raise DagsterDevError(f"launch {job_name}: {error}") from error

    def run(self, run_id: str) -> dict:
        """``{runId, status, jobName, tags}`` of a run."""
        run = self.instance.get_run_by_id(run_id)
        if run is None:
            raise DagsterDevError(f"run {run_id}: not found")
        return _run_summary(run)

    def wait_run(self, run_id: str, timeout: float = 300) -> str:
        """Poll the run until it finishes; its final status (``SUCCESS``, ``FAILURE``, ``CANCELED``)."""

        return _wait_until_done(
            lambda: self.run(run_id)["status"],
            RUN_DONE,
            what=f"run {run_id}",
            describe=lambda: self.describe_run(run_id),
            timeout=timeout,
        )

    def run_failures(self, run_id: str) -> list[str]:
        """The error messages (with the last stack line) of a run's failure events."""
        messages = []
        for entry in self.instance.all_logs(run_id):
            error = getattr(entry.dagster_event and entry.dagster_event.event_specific_data, "error", None)
            if error is not None:
                where = f" [{error.stack[-1].strip()}]" if error.stack else ""
                step = entry.dagster_event.step_key or "run"
                messages.append(f"{step}: {error.message.strip()}{where}")
        return messages

    def describe_run(self, run_id: str) -> str:
        """Run status, its failure messages and the dev log tail."""
        run = self.run(run_id)
        lines = [f"run {run_id} ({run['jobName']}): {run['status']}"]
        lines += [f"  {message}" for message in self.run_failures(run_id)]
        lines.append(self.log_tail())
        return "\n".join(lines)

    def asset_materializations(
        self, asset_key: str | Sequence[str], limit: int = 10, partitions: Sequence[str] | None = None
    ) -> list[Materialization]:
        """The latest ``limit`` materializations of an asset (newest first), optionally of some
        partitions only, with their metadata as Python values (JSON parsed, paths and text as str)."""
        key = dg.AssetKey(_asset_path(asset_key))
        records = self.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=list(partitions) if partitions else None),
            limit=limit,
        ).records
        return [
            Materialization(
                asset_key=key.to_user_string(),
                partition=record.partition_key,
                run_id=record.run_id,
                timestamp=record.timestamp,
                metadata={
                    label: value.value for label, value in record.asset_materialization.metadata.items()
                },
            )
            for record in records
        ]


def _wait_until_done(
    status: Callable[[], str], done: frozenset[str], *, what: str, describe: Callable[[], str], timeout: float
) -> str:
    """Poll ``status`` until it is one of ``done``; ``TimeoutError`` with ``describe()`` after ``timeout``."""
    try:
        return poll(lambda: value if (value := status()) in done else None, timeout=timeout, what=what)
    except TimeoutError as error:
        raise TimeoutError(f"{error}\n{describe()}") from None


def _run_summary(run: dg.DagsterRun) -> dict:
    return {"runId": run.run_id, "status": run.status.value, "jobName": run.job_name, "tags": dict(run.tags)}


@contextlib.contextmanager
def dagster_dev(
    directory: str | os.PathLike[str],
    spec: Any,
    *,
    startup_timeout: float = STARTUP_TIMEOUT_S,
    instance_yaml: str = "",
    env: Mapping[str, str] | None = None,
) -> Iterator[DagsterDev]:
    """A running ``dagster dev`` for ``spec`` with its files under ``directory``; stopped (whole
    process group) on exit. Leftover processes raise :class:`DagsterDevError`, unless the body
    already raised (they are killed either way)."""
    server = DagsterDev.start(
        directory, spec, startup_timeout=startup_timeout, instance_yaml=instance_yaml, env=env
    )
    try:
        yield server
    except BaseException:
        with contextlib.suppress(DagsterDevError):
            server.stop()
        raise
    server.stop()
