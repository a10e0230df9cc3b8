"""The deployment's Dagster configuration files: rendered from the templates in ``deploy/`` and checked
against Dagster's own config schema without connecting to anything.

``dagster_instance_config`` (what ``DagsterInstance.get()`` runs on ``dagster.yaml``) checks the top
level (storage, coordinator, concurrency, monitoring, retries) but takes a configurable class's
``config`` as free-form, and Dagster validates it only when it builds the class: a Kubernetes launcher
would then need a cluster. So each configurable class's ``config`` is also validated against the
class's ``config_type()`` here.
"""

from __future__ import annotations

import importlib
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "DEPLOY_DIR",
    "InstanceConfigError",
    "render_instance_yaml",
    "render_workspace_yaml",
    "validate_instance_yaml",
]

DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy"
CELERY_INSTANCE_TEMPLATE = DEPLOY_DIR / "dagster.celery.yaml"
WORKSPACE_TEMPLATE = DEPLOY_DIR / "workspace.yaml"
# Top-level keys whose value names a class (module, class) and carries that class's own config.
_CONFIGURABLE_CLASS_KEYS = ("run_launcher", "run_coordinator", "compute_logs", "local_artifact_storage")


class InstanceConfigError(ValueError):
    """An instance configuration does not match Dagster's schema (the message lists every error)."""


def _render(template: Path, values: Mapping[str, Any]) -> str:
    # substitute (not safe_substitute): a placeholder left unfilled is a bug, not a default.
    return string.Template(template.read_text()).substitute({k: str(v) for k, v in values.items()})


def render_instance_yaml(*, cpu_workers: int, cuda_workers: int = 0, launcher: str = "celery") -> str:
    """``dagster.yaml`` for ``cpu_workers`` + ``cuda_workers`` Celery workers of one run each. With
    ``launcher="process"`` the run launcher is Dagster's default instead (a new process per run, the
    baseline of ``benchmarks/bench_cluster.py``), everything else unchanged."""
    if cpu_workers < 0 or cuda_workers < 0 or cpu_workers + cuda_workers == 0:
        raise ValueError(f"need at least one worker: cpu_workers={cpu_workers}, cuda_workers={cuda_workers}")
    if launcher not in ("celery", "process"):
        raise ValueError(f"launcher must be 'celery' or 'process', got {launcher!r}")
    text = _render(
        CELERY_INSTANCE_TEMPLATE,
        {"max_runs": cpu_workers + cuda_workers, "cpu_workers": cpu_workers, "cuda_workers": cuda_workers},
    )
    if launcher == "process":
        import yaml

        config = yaml.safe_load(text)
        del config["run_launcher"]
        text = (
            "# deploy/dagster.celery.yaml without its run launcher: one process per run\n"
            + yaml.safe_dump(config)
        )
    return text


def render_workspace_yaml(*, host: str, port: int) -> str:
    """``workspace.yaml`` pointing the webserver and the daemon at the gRPC code server."""
    return _render(WORKSPACE_TEMPLATE, {"code_server_host": host, "code_server_port": port})


def validate_instance_yaml(path: str | Path) -> dict[str, Any]:
    """The validated instance config of the ``dagster.yaml``-style file at ``path`` (defaults filled in);
    ``InstanceConfigError`` naming every problem. Needs the classes' packages, never the network."""
    from dagster._config import validate_config
    from dagster._core.errors import DagsterInvalidConfigError
    from dagster._core.instance.config import dagster_instance_config

    path = Path(path)
    try:
        config, _ = dagster_instance_config(str(path.parent), path.name)
    except DagsterInvalidConfigError as error:
        raise InstanceConfigError(f"{path}: {error}") from error
    problems = []
    for key in _CONFIGURABLE_CLASS_KEYS:
        if key not in config:
            continue
        cls = getattr(importlib.import_module(config[key]["module"]), config[key]["class"])
        result = validate_config(cls.config_type(), config[key].get("config") or {})
        problems += [f"{key} ({cls.__name__}): {e.message}" for e in result.errors or ()]
    if problems:
        raise InstanceConfigError(f"{path}:\n" + "\n".join(problems))
    return dict(config)
