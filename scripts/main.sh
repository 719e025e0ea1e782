#!/usr/bin/env bash
# The main job: installs what it needs, then runs the quickstart benchmark on Prefect's embedded server (CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
exec .venv/bin/daf benchmark --config configs/quickstart_benchmark.yaml "$@"
