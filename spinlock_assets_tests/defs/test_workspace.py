"""The top-level workspace.yaml, which `dagster dev -w workspace.yaml` (scripts/ui.sh) serves, loads the
project's code location from any working directory."""

import os
import subprocess
import sys
from pathlib import Path

WORKSPACE = Path(__file__).resolve().parents[2] / "workspace.yaml"


def test_workspace_file_loads_the_code_location(tmp_path: Path) -> None:
    env = {**os.environ, "SPINLOCK_DATA_ROOT": str(tmp_path / "data"), "DAGSTER_HOME": str(tmp_path)}
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", str(WORKSPACE)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Validation successful for code location spinlock_assets" in result.stdout + result.stderr
