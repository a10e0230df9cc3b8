#!/usr/bin/env bash
# The multi-process deployment on this machine: scripts/cluster.sh up|down|status [--workers N] ...
# (python -m spinlock_assets.cluster --help). `up` installs PostgreSQL and Redis from Debian packages if
# they are missing (as root), then starts them, a code server, the webserver, the daemon and N Celery
# run workers, all on 127.0.0.1, under ./cluster; `down` stops every one of them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
bash scripts/install_services.sh
exec .venv/bin/python -m spinlock_assets.cluster "$@"
