#!/usr/bin/env bash
# The vit_h bundle, timed: its encoder's 2.5 GB of weights go to external data (protobuf cannot
# hold a model over 2 GiB), shared in weights.bin, and parity runs against segment_anything as for any bundle.
# Prints the parity summary, then the wall time and the peak resident memory of the whole build.
#
#   bash scripts/vit_h_bundle.sh                                  # seeded random weights
#   SAM_VIT_H=sam_vit_h_4b8939.pth bash scripts/vit_h_bundle.sh   # the official weights
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
if [ -n "${SAM_VIT_H:-}" ]; then
    weights=(--checkpoint "$SAM_VIT_H")
else
    weights=(--seeded-weights)
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
/usr/bin/time -v -o "$log" "$python" -m export.build --target cpu --model-type vit_h "${weights[@]}" --overwrite
grep -E "Elapsed|Maximum resident" "$log"
