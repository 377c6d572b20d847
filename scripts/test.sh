#!/usr/bin/env bash
# Run the test suite (sets up .venv first when it is missing). Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh || exit 1
# tests/skip_report.py: the skipped tests counted by reason (GPU, TensorRT runtime), and any
# other reason listed on its own, so that a new skip cannot hide.
# --durations: the slowest tests in every log, so the suite can be kept under its 20 minutes.
.venv/bin/python -m pytest -ra -p tests.skip_report --durations=30 "$@"
status=$?
if [ "$status" -eq 5 ]; then  # pytest: no tests collected
  echo "pytest collected no tests" >&2
  exit 1
fi
exit "$status"
