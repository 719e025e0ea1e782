#!/usr/bin/env bash
# Installs what the integration and system tests start or drive themselves (tests/integration/, tests/system/):
# Debian's PostgreSQL server binaries (each test run creates its own cluster in a temporary directory with
# initdb/pg_ctl on 127.0.0.1; no system cluster is used), headless Chromium (renders the Prefect UI), Docker's engine
# (the worker-image tests start their own dockerd on a temporary data root and socket; no system daemon is used) and
# debootstrap (docker/build.sh --local-base makes its Debian base with it). Needs root for apt-get; does nothing when
# all are there already.
set -euo pipefail

missing=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
command -v chromium >/dev/null || missing+=(chromium)
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "missing for the integration tests: ${missing[*]}; install as root: apt-get install ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
