#!/usr/bin/env bash
# Opens the Dagster UI (webserver + daemon) on the demo instance, bound to 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export DAGSTER_HOME="${DAGSTER_HOME:-$PWD/dagster_home}"
# dagster.yaml with run monitoring and retries (if missing); the instance created once, under a file lock.
.venv/bin/python -m spinlock_assets.defs.instance "$DAGSTER_HOME"
exec .venv/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p "${PORT:-3000}"
