"""The multi-process deployment: per-run overhead with warm Celery workers against a new process per
run, and throughput with 2 workers against 1. Prints its figures; ratios come from one invocation.

    python benchmarks/bench_cluster.py [--runs 5] [--shards 8]

Each configuration is a fresh deployment (``spinlock_assets.cluster.up``: PostgreSQL, Redis, code
server, webserver, daemon, workers with one torch thread each) on its own data root:

overhead: ``--runs`` runs of the generation job, one shard each, launched one after the other. The
run's start cost is the time from its launch (RUN_STARTING, the launcher took it) to its execution
beginning (RUN_START): with warm workers a Celery hand-off to a process that has Dagster, torch and the
code loaded; with Dagster's default launcher a new Python process importing them. The work after
RUN_START is the same in both.
throughput: ``--shards`` runs submitted at once; wall time from the first run's creation to the last
run's end, with 1 and with 2 workers (``max_concurrent_runs`` = workers in both).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import dagster as dg
from dagster._core.events import DagsterEventType
from dagster._core.storage.dagster_run import DagsterRunStatus

from spinlock_assets.cluster import client
from spinlock_assets.cluster.deployment import Deployment
from spinlock_assets.cluster.lifecycle import down, up
from spinlock_assets.core.spec import DatasetSpec, ParameterSpace

JOB = "generate_shards"  # parameters, ICs and the generation rollout: no integrity-check steps
SHARD_SIZE = 64
RUN_TIMEOUT_S = 600


def bench_spec(n_shards: int) -> DatasetSpec:
    """Shards of ~4 s of rollout on one thread (quiet machine): the per-run costs, the same for 1 and
    2 workers (run creation, the daemon's 1 s dequeue interval, events), stay a small part."""
    return DatasetSpec(
        root_seed=11, n_operators=n_shards * SHARD_SIZE, shard_size=SHARD_SIZE, grid=(16, 16), channels=1,
        steps=8, realizations=1, name="bench-cluster",
        parameter_space=ParameterSpace(widths=(8, 16), kernel_sizes=(3, 5), n_layers=(2, 3)),
    )  # fmt: skip


def shard_keys(spec: DatasetSpec) -> list[str]:
    return [f"ops-{s:06d}-{s + spec.shard_size - 1:06d}" for s in range(0, spec.n_operators, spec.shard_size)]


class Session:
    """A deployment brought up for one configuration, with its instance open."""

    def __init__(self, workdir: Path, name: str, spec_path: Path, workers: int, launcher: str) -> None:
        self.directory = workdir / name
        self.deployment = up(self.directory, cpu_workers=workers, spec=str(spec_path), launcher=launcher)
        self._saved_env: dict[str, str] = {}

    def __enter__(self) -> Session:
        self._saved_env = dict(os.environ)
        os.environ.update(self.deployment.environment())
        self.instance = dg.DagsterInstance.get()
        return self

    def __exit__(self, *exc: object) -> None:
        self.instance.dispose()
        os.environ.clear()
        os.environ.update(self._saved_env)
        down(self.deployment.directory)
        shutil.rmtree(self.deployment.postgres_dir, ignore_errors=True)

    def wait(self, run_ids: list[str]) -> None:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while True:
            runs = [self.instance.get_run_by_id(run_id) for run_id in run_ids]
            if all(run is not None and run.is_finished for run in runs):
                failed = [run.run_id for run in runs if run.status != DagsterRunStatus.SUCCESS]
                if failed:
                    raise RuntimeError(f"runs failed: {failed}; logs in {self.directory}/logs")
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"runs not finished after {RUN_TIMEOUT_S} s")
            time.sleep(1.0)  # polling PostgreSQL is load on the same 2 cores

    def event_time(self, run_id: str, event_type: DagsterEventType) -> float:
        [record] = self.instance.get_records_for_run(run_id, of_type=event_type).records
        return record.event_log_entry.timestamp


def measure_overhead(session: Session, keys: list[str]) -> list[tuple[float, float]]:
    """For runs launched one at a time: (RUN_STARTING -> RUN_START, RUN_STARTING -> the run's process
    reporting in). The second part is what the launcher and the hand-off (or a new process's start and
    imports) cost; the rest is the run's set-up in that process, the same for both launchers."""
    costs = []
    for key in keys:
        run_id = client.launch_run(session.deployment.url, JOB, key)
        session.wait([run_id])
        starting = session.event_time(run_id, DagsterEventType.RUN_STARTING)
        started = session.event_time(run_id, DagsterEventType.RUN_START)
        engine = session.instance.get_records_for_run(run_id, of_type=DagsterEventType.ENGINE_EVENT).records
        [reported] = [
            r.event_log_entry.timestamp
            for r in engine
            if (r.event_log_entry.dagster_event.message or "").startswith("Started process for run")
        ]
        costs.append((started - starting, reported - starting))
    return costs


def cpu_seconds(deployment: Deployment) -> dict[str, float]:
    """CPU seconds used so far by the deployment's run workers and by the rest of it (webserver, daemon,
    code server, PostgreSQL, Redis), reaped children included: where a 2-core machine's time goes."""
    ticks = os.sysconf("SC_CLK_TCK")
    workers = {deployment.processes[name] for name in deployment.workers()}
    others = {pid for name, pid in deployment.processes.items() if name not in deployment.workers()}
    service_dirs = (deployment.postgres_dir, str(deployment.redis.directory))
    usage = {"workers": 0.0, "rest": 0.0}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat, cwd = (entry / "stat").read_text(), os.readlink(entry / "cwd")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # state ppid pgrp session ... utime stime cutime cstime
        session, cpu = int(fields[3]), sum(int(f) for f in fields[11:15]) / ticks
        if session in workers:
            usage["workers"] += cpu
        elif session in others or cwd.startswith(service_dirs):
            usage["rest"] += cpu
    return usage


def measure_throughput(session: Session, keys: list[str]) -> tuple[float, dict[str, float]]:
    """Seconds from the first run's creation to the last run's end, all runs submitted at once, and the
    CPU seconds the deployment used meanwhile (``cpu_seconds``)."""
    before = cpu_seconds(session.deployment)
    run_ids = [client.launch_run(session.deployment.url, JOB, key) for key in keys]
    session.wait(run_ids)
    after = cpu_seconds(session.deployment)
    records = [session.instance.get_run_record_by_id(run_id) for run_id in run_ids]
    first = min(record.create_timestamp.timestamp() for record in records)
    wall = max(record.end_time for record in records) - first
    return wall, {part: after[part] - before[part] for part in after}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5, help="runs per configuration for the overhead")
    parser.add_argument("--shards", type=int, default=8, help="runs for the throughput")
    args = parser.parse_args()
    spec = bench_spec(args.runs + 1 + args.shards)
    keys = shard_keys(spec)
    # The first run of a fresh worker or process pays one-time costs (first queries, plan caches): it
    # warms up and is not counted. Both throughput measurements run the same shards (other data roots).
    overhead_keys, throughput_keys = keys[: args.runs + 1], keys[args.runs + 1 :]
    workdir = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    spec_path = workdir / "spec.json"
    spec_path.write_text(spec.to_json())
    print(f"spec: {spec.grid[0]}x{spec.grid[1]}, C={spec.channels}, T={spec.steps}, M={spec.realizations}, "
          f"{spec.shard_size} operators per shard; job {JOB}; workers with 1 torch thread")  # fmt: skip
    try:
        with Session(workdir, "spawned", spec_path, 1, "process") as session:
            spawned = measure_overhead(session, overhead_keys)[1:]
        with Session(workdir, "warm1", spec_path, 1, "celery") as session:
            warm = measure_overhead(session, overhead_keys)[1:]
            one_worker = measure_throughput(session, throughput_keys)
        with Session(workdir, "warm2", spec_path, 2, "celery") as session:
            # both workers warm up on a run each
            session.wait([client.launch_run(session.deployment.url, JOB, key) for key in overhead_keys[:2]])
            two_workers = measure_throughput(session, throughput_keys)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    def figures(values: list[float]) -> str:
        return f"median {statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f})"

    for label, costs in (
        ("new process per run (Dagster's default launcher)", spawned),
        ("warm Celery worker", warm),
    ):
        print(f"run start cost, {label}: {figures([total for total, _ in costs])}")
        print(f"  of which until the run's process reports in: {figures([part for _, part in costs])}")
    ratio = statistics.median(t for t, _ in spawned) / statistics.median(t for t, _ in warm)
    print(f"  ratio spawned / warm: {ratio:.1f}")
    (one_wall, one_cpu), (two_wall, two_cpu) = one_worker, two_workers
    print(f"throughput, {args.shards} runs: 1 worker {one_wall:.1f} s, 2 workers {two_wall:.1f} s, "
          f"speed-up {one_wall / two_wall:.2f}x")  # fmt: skip
    for label, wall, cpu in (("1 worker", one_wall, one_cpu), ("2 workers", two_wall, two_cpu)):
        print(
            f"  CPU meanwhile, {label}: workers {cpu['workers']:.1f} s, webserver + daemon + code server + "
            f"PostgreSQL + Redis {cpu['rest']:.1f} s, of {os.cpu_count()} cores x {wall:.1f} s"
        )


if __name__ == "__main__":
    main()
