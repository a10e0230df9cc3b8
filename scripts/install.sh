#!/usr/bin/env bash
# Creates .venv (if missing) and installs the project with its test and cluster extras. torch is pinned through
# constraints.txt: an open torch range with nothing installed would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.installed-$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip 2>/dev/null || true
  .venv/bin/python -m pip install --quiet -c constraints.txt -e ".[test,cluster]"
  rm -f .venv/.installed-* && touch "$stamp"
fi
