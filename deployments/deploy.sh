#!/usr/bin/env bash
# Creates (or updates) DAF's work pools, the `gpu` tag concurrency limit and the deployments in
# deployments/prefect.yaml on the server at PREFECT_API_URL. Safe to run again: every step overwrites.
#
# Usage: deployments/deploy.sh [--local-only]
#   --local-only   only the daf-local process pool and the *-local deployments (no GPU pools)
set -euo pipefail
cd "$(dirname "$0")/.."

# Importing DAF's flows imports mettagrid, which lowers the root logger to INFO: Prefect's HTTP client would then
# print a line per request (~70, one a `422` from a CSRF probe that means nothing). Its own setting keeps it at WARNING.
export METTAGRID_LOG_LEVEL="${METTAGRID_LOG_LEVEL:-WARNING}"

local_only=false
case "${1:-}" in
  "") ;;
  --local-only) local_only=true ;;
  *) echo "usage: $0 [--local-only]" >&2; exit 2 ;;
esac

# The project's virtualenv when there is one (a checkout), else prefect on PATH (the image).
prefect=prefect python=python
[ -x .venv/bin/prefect ] && prefect=.venv/bin/prefect python=.venv/bin/python

pool() {
  "$prefect" --no-prompt work-pool create "$1" --type "$2" --base-job-template "deployments/$3" --overwrite
}

pool daf-local process process-job-template.json
if ! $local_only; then
  pool daf-docker-gpu docker docker-gpu-job-template.json
  pool daf-k8s-gpu kubernetes k8s-gpu-job-template.json
fi

# Tasks running on a GPU carry the `gpu` tag (tasks/common.py): one at a time per server.
"$prefect" --no-prompt concurrency-limit create gpu 1

if $local_only; then
  selection=(--name '*-local')
else
  selection=(--all)
fi
"$prefect" --no-prompt deploy "${selection[@]}" --prefect-file deployments/prefect.yaml
# A run of these deployments with a parameter their flow does not take, or a mission DAF does not know, is refused
# when it is created (instead of failing on the worker): see flows/deployment_steps.py.
"$python" -m daf.flows.deployment_steps check-parameters
