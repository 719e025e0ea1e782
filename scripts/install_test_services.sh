#!/usr/bin/env bash
# Installs the services the integration tests start themselves (tests/integration/stack.py): Debian's PostgreSQL
# server binaries. Needs root for apt-get; does nothing when they are there already. The tests create their own
# cluster in a temporary directory (initdb/pg_ctl on 127.0.0.1), so no system cluster is started or used.
set -euo pipefail

if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "PostgreSQL server binaries are missing; install them as root: apt-get install postgresql" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends postgresql >/dev/null
# The package may start a system cluster on port 5432; the tests do not use it.
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
