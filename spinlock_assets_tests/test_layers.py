"""The layers hold: ``core``, ``storage``, ``cli`` and ``figures`` import and work with Dagster absent
(a researcher's notebook, the command line), and only ``defs``, ``definitions`` and the deployment
(``cluster``) import it."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "spinlock_assets"
DAGSTER_FREE = ("core", "storage", "cli", "figures")

# A meta-path finder that refuses dagster, as if it were not installed.
_WITHOUT_DAGSTER = """
import importlib.abc, sys
class NoDagster(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "dagster" or name.startswith(("dagster.", "dagster_")):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None
sys.meta_path.insert(0, NoDagster())
"""


@pytest.mark.parametrize("layer", DAGSTER_FREE)
def test_layer_imports_without_dagster_installed(layer: str) -> None:
    modules = sorted(
        ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        for path in (PACKAGE / layer).rglob("*.py")
    )
    code = _WITHOUT_DAGSTER + "".join(f"import {m}\n" for m in modules) + "print('ok')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_only_the_dagster_layer_imports_dagster() -> None:
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        layer = path.relative_to(PACKAGE).parts[0]
        if layer in ("defs", "cluster", "definitions.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [f"{path.relative_to(PACKAGE)}: {n}" for n in names if n.split(".")[0] == "dagster"]
    assert offenders == []
