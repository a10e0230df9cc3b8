#!/usr/bin/env bash
# Installs everything the tests need (the project, Chromium for the browser tests, PostgreSQL and Redis
# for the cluster tests) and runs them all.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "warning: could not install chromium; browser tests will be skipped" >&2
fi
if [ "$(id -u)" = 0 ]; then  # PostgreSQL and Redis for the cluster tests (they start their own instances)
  bash scripts/install_services.sh || echo "warning: could not install postgresql/redis-server; cluster tests will be skipped" >&2
fi
exec .venv/bin/python -m pytest "$@"
