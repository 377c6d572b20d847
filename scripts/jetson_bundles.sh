#!/usr/bin/env bash
# The Jetson bundles in one command: the bundled demo model, and vit_b hyper-compressed with
# Birkhoff. Each carries tensorrt/ (ONNX files for TensorRT, the HyperLinear plugin sources
# when needed, build_engines.sh) for building its engines on the Jetson.
#
#   bash scripts/jetson_bundles.sh                          # vit_b with seeded random weights
#   SAM_VIT_B=sam_vit_b_01ec64.pth bash scripts/jetson_bundles.sh   # the official weights
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
"$python" -m export.build --target jetson --overwrite
if [ -n "${SAM_VIT_B:-}" ]; then
    weights=(--checkpoint "$SAM_VIT_B")
else
    weights=(--seeded-weights)
fi
"$python" -m export.build --target jetson --model-type vit_b "${weights[@]}" --compress birkhoff --overwrite
