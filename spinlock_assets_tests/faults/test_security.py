"""Static rules on the package and its documented commands:

- no deserialisation that can run code on the data path (pickle and relatives, ``allow_pickle=True``,
  ``torch.load``, ``eval``/``exec``, unsafe ``yaml.load``, ``shell=True``);
- every documented command that starts the webserver binds it to 127.0.0.1 explicitly;
- determinism: no global RNG seeding or sampling and no builtin ``hash()`` (salted per process) in the
  package; randomness comes from explicitly seeded generators. A line marked ``# rng-ok`` is exempt.

Strings and comments are blanked before matching (docstrings may describe what the code must not do).
"""

from __future__ import annotations

import io
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path

import pytest

from spinlock_assets_tests.faults.helpers import REPO_ROOT

PACKAGE = REPO_ROOT / "spinlock_assets"

UNSAFE_DESERIALISATION = {
    "pickle-like module": r"\b(c?pickle|cloudpickle|dill|shelve|marshal)\b",
    "allow_pickle=True": r"\ballow_pickle\s*=\s*True\b",
    "torch.load": r"\btorch\.load\s*\(",
    "joblib.load": r"\bjoblib\.load\s*\(",
    "eval/exec": r"(?<![\w.])(eval|exec)\s*\(",
    "unsafe yaml.load": r"\byaml\.(load|unsafe_load|full_load)\s*\(",
    "shell=True": r"\bshell\s*=\s*True\b",
}
_GENERATOR_API = "default_rng|Generator|SeedSequence|BitGenerator|PCG64|PCG64DXSM|Philox|SFC64|MT19937"
NONDETERMINISM = {
    "torch global seed": r"\btorch(\.cuda|\.random)?\.(manual_seed(_all)?|seed(_all)?)\s*\(",
    "numpy global seed or sampling": rf"\b(np|numpy)\.random\.(?!({_GENERATOR_API})\b)\w+\s*\(",
    "stdlib global random": r"(?<![\w.])random\.(?!Random\b)\w+\s*\(",
    "builtin hash()": r"(?<![\w.])hash\s*\(",
}
RNG_OK = "# rng-ok"


def code_lines(text: str) -> Iterator[tuple[int, str, str]]:
    """``(line number, code with strings and comments blanked, original line)`` of Python source."""
    lines = text.splitlines(keepends=True)
    blanked = [list(line) for line in lines]
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type not in (tokenize.STRING, tokenize.COMMENT):
            continue
        (row, col), (end_row, end_col) = token.start, token.end
        for r in range(row, end_row + 1):
            first = col if r == row else 0
            last = end_col if r == end_row else len(blanked[r - 1])
            for c in range(first, last):
                if blanked[r - 1][c] != "\n":
                    blanked[r - 1][c] = " "
    for number, (chars, original) in enumerate(zip(blanked, lines, strict=True), start=1):
        yield number, "".join(chars), original


def violations(root: Path, rules: dict[str, str], *, exempt: str | None = None) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        for number, code, original in code_lines(path.read_text()):
            if exempt and exempt in original:
                continue
            found += [
                f"{path}:{number}: {rule}: {original.strip()}"
                for rule, pattern in rules.items()
                if re.search(pattern, code)
            ]
    return found


def test_package_never_deserialises_code_on_the_data_path():
    assert violations(PACKAGE, UNSAFE_DESERIALISATION) == []


def test_package_never_uses_global_or_process_salted_randomness():
    assert violations(PACKAGE, NONDETERMINISM, exempt=RNG_OK) == []


def test_the_scanners_catch_what_they_are_meant_to(tmp_path):
    (tmp_path / "bad.py").write_text(
        "import pickle\n"
        "x = np.load(path, allow_pickle=True)\n"
        "state = torch.load(path)\n"
        "value = eval(text)\n"
        "torch.manual_seed(0)\n"
        "np.random.seed(0)\n"
        "noise = np.random.normal(size=3)\n"
        "random.seed(1)\n"
        "seed = hash(name)\n"
        "seed = hash(name)  # rng-ok: not a seed, a dict key\n"
    )
    (tmp_path / "good.py").write_text(
        '"""Never call torch.manual_seed(0) or eval("x"); pickle is banned."""\n'
        "model.eval()\n"
        "rng = np.random.default_rng(seed)\n"
        "generator = torch.Generator().manual_seed(seed)\n"
        "children = np.random.SeedSequence(seed).spawn(2)\n"
        "key = spec_hash(spec)  # pickle in a comment\n"
        "digest = hashlib.sha256(data)\n"
    )
    assert len(violations(tmp_path, UNSAFE_DESERIALISATION)) == 4
    assert len(violations(tmp_path, NONDETERMINISM, exempt=RNG_OK)) == 5
    assert all(
        "bad.py" in v
        for v in violations(tmp_path, {**UNSAFE_DESERIALISATION, **NONDETERMINISM}, exempt=RNG_OK)
    )


# `dagster dev` / `dagster-webserver` where a shell command starts (not "runs a real dagster dev" in prose)
_WEBSERVER = re.compile(
    r"(^|[;&|(]|\bexec\b|\bnohup\b|\benv\b)\s*(\$\s+)?(\w+=\S*\s+)*(\S*/)?(python\S*\s+-m\s+)?"
    r"dagster(\s+dev\b|[-_]webserver\b)"
)
_LOCAL_BIND = re.compile(r"(^|\s)(-h|--host)(\s+|=)127\.0\.0\.1(\s|$)")


def documented_commands() -> list[tuple[str, str]]:
    """``(file:line, command)`` of every command that starts the Dagster webserver in the scripts, the
    README and docs/ (shell lines, fenced code blocks, and inline code spans with arguments)."""
    commands = []
    files = sorted(
        [*REPO_ROOT.glob("scripts/*.sh"), *REPO_ROOT.glob("README*"), *REPO_ROOT.glob("docs/**/*.md")]
    )
    for path in files:
        in_fence = path.suffix == ".sh"
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if path.suffix != ".sh" and line.lstrip().startswith("```"):
                in_fence = not in_fence
                continue
            candidates = (
                [re.sub(r"(^|\s)#.*", "", line)] if in_fence else re.findall(r"`([^`]*\s-[^`]*)`", line)
            )
            where = f"{path.relative_to(REPO_ROOT)}:{number}"
            commands += [(where, command.strip()) for command in candidates if _WEBSERVER.search(command)]
    return commands


def test_every_documented_webserver_command_binds_to_localhost_only():
    commands = documented_commands()
    assert any(where.startswith("scripts/ui.sh") for where, _ in commands), commands
    unbound = [f"{where}: {command}" for where, command in commands if not _LOCAL_BIND.search(command)]
    assert unbound == []
    assert not [where for where, command in commands if "0.0.0.0" in command]


@pytest.mark.parametrize(
    "command, local",
    [
        ("exec .venv/bin/dagster dev -m spinlock_assets.definitions -h 127.0.0.1 -p 3000", True),
        ("dagster-webserver --host=127.0.0.1 -p 3000", True),
        ("dagster dev -m spinlock_assets.definitions", False),
        ("dagster dev -h 0.0.0.0", False),
        ("dagster dev -h 127.0.0.10", False),
        ("$ DAGSTER_HOME=/tmp/h python -m dagster dev -h 127.0.0.1", True),
        ("cd /srv && dagster-webserver -p 80", False),
    ],
)
def test_the_bind_rule_tells_local_from_exposed(command, local):
    assert _WEBSERVER.search(command) and bool(_LOCAL_BIND.search(command)) == local


def test_prose_mentioning_dagster_dev_is_not_a_command():
    assert not _WEBSERVER.search("spinlock_assets_tests/   mirrors the package; e2e/ runs a real dagster dev")
