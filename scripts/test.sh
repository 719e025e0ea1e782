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
# Two pytest processes (pytest-xdist): on 2 cores much of the serial suite's time is spent waiting (servers
# starting, workers polling, subprocesses), and the other process fills it. --dist loadfile keeps each file in one
# process, so its module fixtures (a trained policy) are built once; a process that runs integration tests starts
# its own Prefect stack (free ports, its own directories). (--dist loadgroup would keep the stack's files together,
# but pytest 9.2 ignores the node-id suffix xdist 3.8 groups by.) DAF_TEST_PROCESSES=0 runs them in one process.
.venv/bin/python -m pytest -n "${DAF_TEST_PROCESSES:-2}" --dist loadfile "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
exit "$rc"
