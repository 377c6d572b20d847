#!/usr/bin/env bash
# Run the test suite (sets up .venv first when it is missing). Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh || exit 1
# tests/skip_report.py: the skipped tests counted by reason (GPU, TensorRT runtime), and any
# other reason listed on its own, so that a new skip cannot hide.
.venv/bin/python -m pytest -ra -p tests.skip_report "$@"
status=$?
if [ "$status" -eq 5 ]; then  # pytest: no tests collected
  echo "pytest collected no tests" >&2
  exit 1
fi
exit "$status"
