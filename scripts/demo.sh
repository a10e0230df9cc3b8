#!/usr/bin/env bash
# The main job on the embedded default: install, then generate the default dataset through Dagster
# (local instance in ./dagster_home, HDF5 in ./data), verify a sample by replay, print where things are.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/python -m spinlock_assets.defs.main_job "$@"
