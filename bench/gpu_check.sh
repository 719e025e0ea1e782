#!/usr/bin/env bash
# The GPU check (issue #19), for a machine with an NVIDIA GPU and ~16 cores, in one call of under 10 minutes:
#   1. the CUDA tests (tests/test_cuda.py; skipped on machines without CUDA, so they run only here),
#   2. bench/training_throughput.py on cuda for mlp and lstm with 512 rows (128 envs x 4 agents), in-process and
#      with env workers, each with and without overlap_update (the next rollout collected during the update),
#   3. evaluation throughput on cuda (bench/eval_throughput.py --device cuda),
#   4. GPU utilisation sampled by nvidia-smi while 2 runs,
# then one table of the figures at the end. Run from the repository root:
#   bash bench/gpu_check.sh            (writes its logs under ${OUT:-/tmp}/gpu_check/)
# The interpreter is $PYTHON, else .venv/bin/python (scripts/bootstrap.sh), else python3. It needs a CUDA build of
# torch and DAF's dependencies. A GPU machine that cannot reach PyPI but has a CUDA torch (this workplace's H200
# image: Python 3.12, torch 2.11+cu130) can be given the rest as wheels downloaded elsewhere, e.g.
#   pip download --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 -d .whl \
#       mettagrid==0.26.22 "prefect>=3.9.1,<3.10" optuna tensorboard
# then: pip install --no-index --find-links .whl --target /tmp/site ... && PYTHONPATH=/tmp/site:. bash bench/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
[ -z "$PY" ] && [ -x .venv/bin/python ] && PY=.venv/bin/python
PY="${PY:-python3}"
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
LOGS="${OUT:-/tmp}/gpu_check"
mkdir -p "$LOGS"
WORKERS="${GPU_CHECK_WORKERS:-8}"
STEPS="${GPU_CHECK_STEPS:-1000000}"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$LOGS/gpu.txt"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())" \
  | tee -a "$LOGS/gpu.txt"

# Preflight: say what is missing before minutes are spent.
"$PY" - <<'PY' || { echo "gpu_check: the interpreter $PY lacks what DAF needs (above)"; exit 2; }
import importlib, sys
missing = [m for m in ("torch", "mettagrid", "prefect", "optuna", "tensorboard", "scipy", "jinja2", "typer")
           if importlib.util.find_spec(m) is None]
import torch
if missing or not torch.cuda.is_available():
    sys.exit(f"missing: {missing or 'none'}; torch {torch.__version__} sees CUDA: {torch.cuda.is_available()}")
PY

echo "== CUDA tests"
timeout 240 "$PY" -m pytest -q tests/test_cuda.py -p no:cacheprovider 2>&1 | tee "$LOGS/cuda_tests.txt" | tail -5

echo "== training throughput on cuda (nvidia-smi sampling utilisation)"
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -lms 500 >"$LOGS/gpu_util.csv" &
SMI=$!
timeout 360 "$PY" bench/training_throughput.py --device cuda --num-envs 128 --steps "$STEPS" --raw-seconds 3 \
  --env-workers "0,$WORKERS" --overlap-update 2>&1 | tee "$LOGS/training_throughput.txt" | tail -16
kill "$SMI" 2>/dev/null

echo "== evaluation throughput on cuda"
timeout 120 "$PY" bench/eval_throughput.py --quick --device cuda 2>&1 | tee "$LOGS/eval_throughput.txt" | tail -4

echo
echo "================ GPU check summary ================"
cat "$LOGS/gpu.txt"
echo "CUDA tests:          $(grep -E 'passed|failed|error|skipped' "$LOGS/cuda_tests.txt" | tail -1)"
grep -E '^trainer | vs in-process: ' "$LOGS/training_throughput.txt"
awk -F', ' 'NF >= 2 { n++; s += $1; if ($1 > m) m = $1; if ($2 > mem) mem = $2 }
  END { if (n) printf "GPU utilisation during training: mean %.0f%%, max %d%% over %d samples; max memory %d MiB\n", s / n, m, n, mem }' \
  "$LOGS/gpu_util.csv"
grep -iE 'agent-steps/s|x ' "$LOGS/eval_throughput.txt" | tail -3
