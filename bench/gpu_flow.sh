#!/usr/bin/env bash
# The whole workflow on the lent GPU machine, offline, measured: installs the wheelhouse
# (bench/wheelhouse.py) beside the image's torch, runs Snakemake end to end and writes back the
# per-rule benchmarks, the Snakemake logs, onset.csv, the figures and a JSON summary.
#
#   bench/gpu_flow.sh                 # GPU: accuracy, then config/paper.yaml compiled, cold and warm cache
#   bench/gpu_flow.sh --flow-test     # CPU: the same path on a tiny config (tests/data/flow.yaml)
#
# Options: --wheelhouse DIR (default .whl; empty/missing: use the current environment as is),
#          --images DIR (default .devdata/images, else ../shared/data/imagenet-samples),
#          --runs "accuracy paper_cold paper_warm" (which runs, in order; a run that finds no
#          time left is skipped; paper_quick: the study's settings on 2 classes x 20 steps, a
#          short check of the whole path, analysis included; paper, shard50, paper_compiled: as
#          before; paper_cold / paper_warm: paper.yaml compiled with a persistent compile cache
#          that starts empty / holds paper_cold's graphs; accuracy: bench/accuracy_speed.py, the
#          Occlusion tail variants' maps/s and every method's error vs float64, at most
#          ACCURACY_LIMIT seconds, default 200), --budget SECONDS (the whole script's wall limit;
#          each run gets what is left, minus a reserve for packing; default 540).
# Carried to the device (both git-ignored): .whl/ and .devdata/images/ (bench/prepare_device.sh).
# Output in $OUT (default ./flow-out): summary.json, env.txt, <run>.tar.gz (results of each run
# without the big stores), <run>-snakemake.log.
set -uo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${OUT:-$PWD/flow-out}"
PY="${PYTHON:-python3}"
WHEELHOUSE="$REPO/.whl"
IMAGES=""
RUNS="accuracy paper_cold paper_warm"
ACCURACY_LIMIT="${ACCURACY_LIMIT:-200}"
BUDGET=540
FLOW_TEST=0
while [ $# -gt 0 ]; do
  case "$1" in
    --flow-test) FLOW_TEST=1; RUNS="flow accuracy_quick"; shift ;;
    --wheelhouse) WHEELHOUSE="$2"; shift 2 ;;
    --images) IMAGES="$2"; shift 2 ;;
    --runs) RUNS="$2"; shift 2 ;;
    --budget) BUDGET="$2"; shift 2 ;;
    *) echo "gpu_flow.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
if [ -z "$IMAGES" ]; then
  if [ -d "$REPO/.devdata/images" ]; then IMAGES="$REPO/.devdata/images"; else IMAGES="$REPO/../shared/data/imagenet-samples"; fi
fi
[ -d "$IMAGES" ] || { echo "gpu_flow.sh: image folder $IMAGES not found" >&2; exit 2; }
IMAGES="$(cd "$IMAGES" && pwd)"
mkdir -p "$OUT"
T_START=$(date +%s)
WORK="$(mktemp -d "${TMPDIR:-/tmp}/diffxai-flow.XXXXXX")"
SITE="$WORK/site"

{
  echo "date: $(date -u +%FT%TZ)"; uname -a; nproc
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || echo "no nvidia-smi"
} > "$OUT/env.txt" 2>&1

# 1. the wheelhouse, into a fresh target folder that goes first on the path
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
T0=$(now)
if ls "$WHEELHOUSE"/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$WHEELHOUSE"/*.whl \
    >> "$OUT/env.txt" 2>&1 || { echo "gpu_flow.sh: installing $WHEELHOUSE failed (see env.txt)" >&2; cat "$OUT/env.txt"; exit 3; }
  export PYTHONPATH="$SITE:$REPO${PYTHONPATH:+:$PYTHONPATH}"
  SMK=("$PY" -m snakemake)
else
  export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
  SMK=("$PY" -m snakemake)
fi
INSTALL_S=$(since "$T0")
export PYTHONUNBUFFERED=1 DIFFXAI_FLOW_SITE="$SITE"
"$PY" "$REPO/bench/flow_summary.py" env --site "$SITE" >> "$OUT/env.txt" 2>&1 \
  || { echo "gpu_flow.sh: the installed environment does not import (see env.txt)" >&2; cat "$OUT/env.txt"; exit 3; }
cat "$OUT/env.txt"

# 2. the runs: each its own working folder, Snakemake's greedy scheduler (PuLP is not carried)
config_for() {  # sets ARGS, the run's Snakemake config arguments
  case "$1" in
    paper) ARGS=(--configfile "$REPO/config/paper.yaml" --config "image_dir=$IMAGES") ;;
    shard50) ARGS=(--configfile "$REPO/config/imagenet1k.yaml" --config "image_dir=$IMAGES"
                   "classes=[$(seq -s, 0 49)]" shard_size=50) ;;
    paper_compiled) ARGS=(--configfile "$REPO/config/paper.yaml" --config "image_dir=$IMAGES"
                          "attribution={compile: true}") ;;
    paper_cold|paper_warm) ARGS=(--configfile "$REPO/config/paper.yaml" --config "image_dir=$IMAGES"
                                 "attribution={compile: true}") ;;
    paper_quick) ARGS=(--configfile "$REPO/config/paper.yaml" --config "image_dir=$IMAGES"
                       "classes=[n02129604, n02123394]" "noise={steps: 20}") ;;
    flow) ARGS=(--configfile "$REPO/tests/data/flow.yaml" --config "image_dir=$IMAGES") ;;
    accuracy|accuracy_quick) ARGS=() ;;
    *) echo "gpu_flow.sh: unknown run $1" >&2; return 1 ;;
  esac
}
RC=0
# one compile cache for paper_cold (empty at its start) and paper_warm (paper_cold's graphs)
FLOW_CACHE="$WORK/inductor-cache"
accuracy_run() {  # $1: run name, $2: time limit; bench/accuracy_speed.py into the summary
  local extra=()
  [ "$1" = accuracy_quick ] && extra=(--quick --device cpu --methods integrated_gradients --variants folded --maps 1 --error-maps 1)
  echo "== $1 (limit ${2}s): bench/accuracy_speed.py ${extra[*]}"
  local t0; t0=$(now)
  timeout --signal=INT --kill-after=20 "$2" "$PY" "$REPO/bench/accuracy_speed.py" --out "$OUT/$1.json" \
    --compile-cache "$WORK/accuracy-cache" --images "$IMAGES" "${extra[@]}" > "$OUT/$1.log" 2>&1
  local rc=$?
  echo "   exit $rc after $(since "$t0")s"; tail -3 "$OUT/$1.log"
  [ $rc -ne 0 ] && RC=$rc
  "$PY" "$REPO/bench/flow_summary.py" extra "$OUT/$1.json" --name "$1" --wall "$(since "$t0")" --exit-code "$rc" \
    --json "$OUT/summary.json" || RC=4
}
for run in $RUNS; do
  config_for "$run" || exit 2
  left=$(( BUDGET - ($(date +%s) - T_START) - 30 ))
  if [ "$left" -lt 30 ]; then echo "gpu_flow.sh: no time left for $run" | tee -a "$OUT/env.txt"; continue; fi
  case "$run" in
    accuracy*) accuracy_run "$run" "$(( left < ACCURACY_LIMIT ? left : ACCURACY_LIMIT ))"; continue ;;
    paper_cold|paper_warm) export DIFFXAI_COMPILE_CACHE_DIR="$FLOW_CACHE" ;;
    *) unset DIFFXAI_COMPILE_CACHE_DIR ;;
  esac
  dir="$WORK/$run"; mkdir -p "$dir"
  echo "== $run (limit ${left}s): snakemake ${ARGS[*]}"
  t0=$(now)
  timeout --signal=INT --kill-after=20 "$left" "${SMK[@]}" --snakefile "$REPO/Snakefile" --directory "$dir" \
    --cores all --scheduler greedy --resources gpu=1 "${ARGS[@]}" \
    > "$OUT/$run-snakemake.log" 2>&1
  rc=$?
  wall=$(since "$t0")
  [ $rc -ne 0 ] && RC=$rc
  echo "   exit $rc after ${wall}s"; tail -3 "$OUT/$run-snakemake.log"
  "$PY" "$REPO/bench/flow_summary.py" run "$dir" --name "$run" --wall "$wall" --exit-code "$rc" \
    --json "$OUT/summary.json" || RC=4
  # results without the stores and PDFs; without the per-class figures if that is still over
  # the 16 MB a file the device hands back
  tar -C "$dir" -czf "$OUT/$run.tar.gz" --exclude='*.zarr' --exclude='*.pdf' results 2>/dev/null
  if [ "$(stat -c %s "$OUT/$run.tar.gz")" -gt 15000000 ]; then
    tar -C "$dir" -czf "$OUT/$run.tar.gz" --exclude='*.zarr' --exclude='*.pdf' --exclude='onset_*.png' results
  fi
done
"$PY" "$REPO/bench/flow_summary.py" finish --json "$OUT/summary.json" --install-seconds "$INSTALL_S" \
  --total-seconds "$(( $(date +%s) - T_START ))" --flow-test "$FLOW_TEST"
rm -rf "$WORK"
exit $RC
