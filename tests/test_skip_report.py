"""tests/skip_report.py: skips counted by reason, an unknown reason listed on its own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.skip_report import UNEXPECTED, group_of, lines

REPO = Path(__file__).resolve().parent.parent


def test_known_reasons_fall_into_their_groups_and_others_stand_out():
    assert group_of("no CUDA GPU on this machine") == "GPU: no CUDA device"
    assert group_of("tensorrt is not installed") == "TensorRT runtime: tensorrt not installed"
    assert group_of("TensorRT 11.1 headers not at /x") == UNEXPECTED  # they are everywhere now: a skip is news
    shown = lines(["no CUDA GPU on this machine"] * 3 + ["cmake is not installed"])
    assert shown[0] == "4 skipped"
    assert "     3  GPU: no CUDA device" in shown
    assert any(line.strip().startswith("1  UNEXPECTED") for line in shown)
    assert shown[-1].strip() == "1  cmake is not installed"


def test_the_plugin_reports_a_run_and_pytest_keeps_its_closing_line(tmp_path):
    (tmp_path / "test_some.py").write_text(
        "import pytest\n"
        "def test_gpu():\n    pytest.skip('no CUDA GPU on this machine')\n"
        "def test_new():\n    pytest.skip('a new reason')\n"
        "def test_ok():\n    pass\n")
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.skip_report", str(tmp_path), "-q",
                             "-p", "no:cacheprovider"], capture_output=True, text=True, cwd=REPO)
    out = result.stdout
    assert "skips by reason" in out and "2 skipped" in out, out
    assert "     1  GPU: no CUDA device" in out and "a new reason" in out.split("skips by reason")[1], out
    assert out.strip().splitlines()[-1].startswith("1 passed, 2 skipped"), out
