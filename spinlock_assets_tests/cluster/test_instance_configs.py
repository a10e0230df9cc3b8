"""The deployment's instance configurations (Celery on one machine or many, Kubernetes) match Dagster's
config schema, down to each configured class's own config. Fast: nothing is started or connected."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from dagster_celery.launcher import CeleryRunLauncher

from spinlock_assets.cluster.instance_config import (
    DEPLOY_DIR,
    InstanceConfigError,
    render_instance_yaml,
    render_workspace_yaml,
    validate_instance_yaml,
)

README = Path(__file__).resolve().parents[2] / "README.md"


def test_celery_instance_config_is_valid_and_limits_runs_to_the_workers(tmp_path: Path) -> None:
    path = tmp_path / "dagster.yaml"
    path.write_text(render_instance_yaml(cpu_workers=3, cuda_workers=2))
    config = validate_instance_yaml(path)
    assert config["storage"]["postgres"]["postgres_db"]["hostname"] == {"env": "DAGSTER_PG_HOST"}
    assert config["run_launcher"]["class"] == "CeleryRunLauncher"
    runs = config["concurrency"]["runs"]
    assert runs["max_concurrent_runs"] == 5
    limits = {limit["value"]: limit["limit"] for limit in runs["tag_concurrency_limits"]}
    assert limits == {"cpu": 3, "cuda": 2}
    assert config["run_monitoring"]["enabled"] and config["run_monitoring"]["max_resume_run_attempts"] == 0
    assert config["run_retries"] == {"enabled": True, "max_retries": 2, "retry_on_asset_or_op_failure": False}


def test_celery_run_launcher_builds_from_the_config_without_a_broker(tmp_path: Path) -> None:
    path = tmp_path / "dagster.yaml"
    path.write_text(render_instance_yaml(cpu_workers=1))
    launcher_config = dict(validate_instance_yaml(path)["run_launcher"]["config"])
    launcher_config.update(broker="redis://127.0.0.1:1/0", backend="redis://127.0.0.1:1/1")  # never dialled
    launcher = CeleryRunLauncher(**launcher_config)
    assert launcher.default_queue == "cpu"
    assert launcher.celery.conf.task_acks_late is True


def test_process_launcher_variant_drops_only_the_run_launcher(tmp_path: Path) -> None:
    path = tmp_path / "dagster.yaml"
    path.write_text(render_instance_yaml(cpu_workers=2, launcher="process"))
    config = validate_instance_yaml(path)
    assert "run_launcher" not in config
    assert config["concurrency"]["runs"]["max_concurrent_runs"] == 2


def test_kubernetes_instance_config_is_valid() -> None:
    config = validate_instance_yaml(DEPLOY_DIR / "dagster.k8s.yaml")
    assert config["run_launcher"]["class"] == "K8sRunLauncher"
    assert "HDF5_USE_FILE_LOCKING=FALSE" in config["run_launcher"]["config"]["env_vars"]


def test_readme_kubernetes_snippet_is_valid(tmp_path: Path) -> None:
    section = README.read_text().split("## Beyond one machine", 1)[1].split("\n## ", 1)[0]
    snippets = [s for s in re.findall(r"```yaml\n(.*?)```", section, re.S) if "K8sRunLauncher" in s]
    assert snippets, "the README's 'Beyond one machine' section shows a K8sRunLauncher configuration"
    path = tmp_path / "dagster.yaml"
    path.write_text(snippets[0])
    assert validate_instance_yaml(path)["run_launcher"]["module"] == "dagster_k8s"


def test_a_misspelled_launcher_key_is_reported_with_the_class(tmp_path: Path) -> None:
    text = (DEPLOY_DIR / "dagster.k8s.yaml").read_text().replace("job_namespace:", "job_namespaces:")
    path = tmp_path / "dagster.yaml"
    path.write_text(text)
    with pytest.raises(InstanceConfigError, match=r"run_launcher \(K8sRunLauncher\).*job_namespaces"):
        validate_instance_yaml(path)


def test_worker_counts_are_checked() -> None:
    with pytest.raises(ValueError, match="at least one worker"):
        render_instance_yaml(cpu_workers=0)


def test_workspace_points_at_the_code_server() -> None:
    text = render_workspace_yaml(host="127.0.0.1", port=4321)
    assert "port: 4321" in text and "host: 127.0.0.1" in text and "$" not in text
