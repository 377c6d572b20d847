#!/usr/bin/env bash
# Create .venv and install samedge with the extras a checkout uses (all but the GPU ones)
# and its test tools. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# torch 2.14.1 + torchvision 0.29.1 come from this machine's local wheels
# (segment-anything needs torchvision); pin them so pip does not look for newer ones.
.venv/bin/pip install --quiet --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
.venv/bin/pip install --quiet --disable-pip-version-check -e ".[compress,cpu,dev,video,serve,label,zoo]"
# A stock tritonserver with its Python backend (runtime/serving/server.py runs it); the wheel's own Python
# package is not used and pins numpy<2, so it comes without its dependencies.
.venv/bin/pip install --quiet --disable-pip-version-check --no-deps "nvidia-pytriton==0.7.0"
# SAM 2 / 2.1 (compress/families/sam2.py): sam2's own package, without its CUDA extension (hole filling,
# which the CPU reference skips with a warning) and without build isolation, which would install torch again.
SAM2_BUILD_CUDA=0 .venv/bin/pip install --quiet --disable-pip-version-check --no-build-isolation "sam2==1.1.0"
# EfficientTAM and EdgeTAM: forks of sam2 that install a top-level `sam2` package of their own, each into
# its own folder (compress/families/sam2_forks.py imports it from there under its own name).
for fork in efficient-track-anything==1.0 edgetam-dimos==1.0.1; do
  folder=".venv/upstream/${fork%%==*}"
  if [ ! -d "$folder" ]; then
    rm -rf "$folder.tmp"
    .venv/bin/pip install --quiet --disable-pip-version-check --no-deps --target "$folder.tmp" "$fork"
    mv "$folder.tmp" "$folder"
  fi
done
# AnyLabeling and samexporter, for the tests that run them (Python >= 3.11; see the file).
if .venv/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  .venv/bin/pip install --quiet --disable-pip-version-check --no-deps -r scripts/clients-requirements.txt
fi
