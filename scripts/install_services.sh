#!/usr/bin/env bash
# Installs the Debian packages of the deployment's services (PostgreSQL, Redis) when they are missing.
# The packages' own services stay stopped: the deployment runs its own instances on free ports.
set -euo pipefail
if ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 && command -v redis-server >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "PostgreSQL and redis-server are needed: install the postgresql and redis-server packages" >&2
  exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql redis-server >/dev/null
