#!/usr/bin/env bash
# Prepare what bench/gpu_flow.sh needs on the lent GPU machine (no network there), here where the
# package index is reachable. Both folders are git-ignored and travel with `carry`:
#   .whl/            the wheelhouse (bench/wheelhouse.py: what the GPU image lacks, for Python 3.12)
#   .devdata/images/ the four study images and the first 50 classes (the 50-class shard)
# Then, on the device:  bash bench/gpu_flow.sh      (carry: .whl .devdata)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
SAMPLES="${SAMPLES:-../shared/data/imagenet-samples}"
"$PY" bench/wheelhouse.py --out .whl
mkdir -p .devdata/images
# ImageNet-1k class indices follow the sorted synsets: the first 50 files are classes 0..49
ls "$SAMPLES" | sort | head -50 | while read -r f; do cp -f "$SAMPLES/$f" .devdata/images/; done
for s in n02123394 n02123597 n02124075 n02129604; do cp -f "$SAMPLES"/"$s"_*.jpg .devdata/images/; done
echo "images: $(ls .devdata/images | wc -l) files, $(du -sh .devdata/images | cut -f1)"
du -ch .whl/*.whl .devdata/images | tail -1
