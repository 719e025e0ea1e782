#!/usr/bin/env bash
# The test suite: installs what it needs (the venv; PostgreSQL for the integration tests), lints, then runs pytest.
# Fails if pytest collects no tests.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
bash scripts/install_test_services.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
exit "$rc"
