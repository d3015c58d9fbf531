#!/usr/bin/env bash
# GPU check, one command of at most ~8 minutes on one CUDA GPU (`device` tool or any GPU node):
#   1. the CUDA tests (skipped on CPU machines): edits and the SECNN policy on the GPU
#   2. CNN growth overhead at CIFAR shape (3x32x32, batch 256), float32 and bf16 autocast
#   3. a 4-trial `senn-automl tune --gpus-per-trial 0.5` (two trials share the GPU)
# Needs torch with CUDA and the package's dependencies (pip install -e ".[tune,test]"); run from
# anywhere. Figures go to stdout and to $OUT (default bench/results/gpu_check/): cnn_fp32.json,
# cnn_bf16.json, tune.log. Exits 2 without a CUDA device.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" RAY_USAGE_STATS_ENABLED=0 PYTHONUNBUFFERED=1
OUT="${OUT:-bench/results/gpu_check}"
mkdir -p "$OUT"
python - <<'PY' || exit 2
import sys, torch
if not torch.cuda.is_available():
    print("gpu_check: no CUDA device (torch", torch.__version__, "); nothing to check"); sys.exit(1)
print("device:", torch.cuda.get_device_name(0), "| torch", torch.__version__, "| CUDA", torch.version.cuda)
PY
status=0
echo "== 1. CUDA tests"
timeout 150 python -m pytest -q -rs -p no:cacheprovider tests/test_cnn.py::test_edits_on_cuda tests/test_secnn.py::test_policy_on_cuda || status=1
echo "== 2. CNN growth overhead, CIFAR shape, batch 256"
timeout 120 python bench/cnn_throughput.py --device cuda --batch 256 --steps 100 --epochs 6 --out "$OUT/cnn_fp32.json" || status=1
timeout 120 python bench/cnn_throughput.py --device cuda --batch 256 --steps 100 --epochs 6 --bf16 --out "$OUT/cnn_bf16.json" || status=1
echo "== 3. tune, 4 trials, 2 sharing the GPU"
work="$(mktemp -d)"
(cd "$work" && timeout 200 senn-automl tune --num-samples 4 --max-concurrent 2 --gpus-per-trial 0.5 --set max_epochs=20) \
  2>&1 | tee "$OUT/tune.log" || status=1
rm -rf "$work"
exit $status
