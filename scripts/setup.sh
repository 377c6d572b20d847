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
.venv/bin/pip install --quiet --disable-pip-version-check -e ".[compress,cpu,dev]"
# AnyLabeling and samexporter, for the tests that run them (Python >= 3.11; see the file).
if .venv/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  .venv/bin/pip install --quiet --disable-pip-version-check --no-deps -r scripts/clients-requirements.txt
fi
