"""kill -9 at any moment leaves a usable bundle (old or new), and the next run cleans up."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compress.birkhoff.__main__ import main as birkhoff_main
from export.build import build_bundle
from runtime import BundleError, open_bundle
from runtime.bundle import sha256_file
from runtime.bundle_writer import prepare_target

REPO = Path(__file__).resolve().parent.parent


def _build_command(checkpoint: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "export.build", "--checkpoint", str(checkpoint), "--out", str(out),
            "--overwrite", "--skip-parity", "--target", "desktop"]


def _killed_after(command: list[str], seconds: float, folder: Path) -> None:
    """Run `command`; SIGKILL it `seconds` after its staging directory appears in `folder`
    (counted from then, not from the start: Python's imports take what they take)."""
    def partials():
        return {p.name for p in folder.iterdir() if p.name.endswith(".partial")}

    earlier = partials()  # a killed run's, which this run removes before staging its own
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while process.poll() is None and not partials() - earlier:
        time.sleep(0.05)
    try:
        process.wait(seconds)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()


def _killed_inside(script: str, tmp_path: Path) -> None:
    """Run `script` in a fresh interpreter; it SIGKILLs itself at the moment it chooses."""
    path = tmp_path / "kill.py"
    path.write_text(script)
    result = subprocess.run([sys.executable, str(path)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_kill_during_overwrite_keeps_a_whole_bundle_and_the_next_run_cleans_up(tmp_path, tiny_checkpoint):
    out = tmp_path / "b"
    build_bundle(out, "cpu", tiny_checkpoint, run_parity=False)
    # Exporting, loading, staging: the last kill lands whatever the machine's speed.
    for seconds in (1.5, 0.5, 0.0):
        _killed_after(_build_command(tiny_checkpoint, out), seconds, tmp_path)
        bundle = open_bundle(out)  # hashes checked: old or new, never a mixture
        assert bundle.manifest["target"] in ("cpu", "desktop")
    assert _hidden(tmp_path), "no kill landed during the build: nothing was left to clean"
    result = subprocess.run(_build_command(tiny_checkpoint, out), cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert _hidden(tmp_path) == []  # every killed run's .partial is gone
    assert open_bundle(out).manifest["target"] == "desktop"


def test_kill_between_the_two_renames_is_repaired_by_the_next_run(tmp_path, tiny_checkpoint):
    out = tmp_path / "b"
    build_bundle(out, "cpu", tiny_checkpoint, run_parity=False)
    old_manifest = (out / "manifest.json").read_text()
    _killed_inside(f"""
import os, signal
import runtime.bundle_writer as bundle_writer
from export.build import build_bundle

real_replace = os.replace
def replace(source, target):
    real_replace(source, target)
    if str(source) == {str(out)!r}:  # the old bundle is aside, the new one not yet in place
        os.kill(os.getpid(), signal.SIGKILL)
bundle_writer.os.replace = replace
build_bundle({str(out)!r}, "desktop", {str(tiny_checkpoint)!r}, run_parity=False, overwrite=True)
""", tmp_path)
    assert not out.exists()
    with pytest.raises(BundleError, match="interrupted and left the previous bundle in .*run the build again"):
        open_bundle(out)
    prepare_target(out, overwrite=True)  # what every run does first
    assert (out / "manifest.json").read_text() == old_manifest
    open_bundle(out)
    assert _hidden(tmp_path) == []


def test_birkhoff_kill_leaves_no_partial_and_never_an_old_report_beside_a_new_checkpoint(tmp_path, tiny_checkpoint):
    out = tmp_path / "m.birkhoff.safetensors"
    assert birkhoff_main([str(tiny_checkpoint), "--out", str(out)]) == 0
    first_report = json.loads(Path(f"{out}.report.json").read_text())
    _killed_inside(f"""
import os, signal
import compress.birkhoff.__main__ as cli

def write_report(*args, **kwargs):  # the new checkpoint is in place, its report not yet written
    os.kill(os.getpid(), signal.SIGKILL)
cli.write_report = write_report
cli.main([{str(tiny_checkpoint)!r}, "--out", {str(out)!r}, "--variant", "scaled"])
""", tmp_path)
    assert out.is_file()
    assert not Path(f"{out}.report.json").exists() and not Path(f"{out}.report.png").exists()
    assert first_report["checkpoint"]["sha256"] != sha256_file(out)  # the scaled run's checkpoint
    _killed_inside(f"""
import os, signal
import compress.checkpoint_file as checkpoint_file
from compress.birkhoff.__main__ import main

def save_file(tensors, path, metadata=None):  # half-way through writing the checkpoint
    open(path, "wb").write(b"half")
    os.kill(os.getpid(), signal.SIGKILL)
checkpoint_file.save_file = save_file
main([{str(tiny_checkpoint)!r}, "--out", {str(out)!r}])
""", tmp_path)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] != []
    assert birkhoff_main([str(tiny_checkpoint), "--out", str(out)]) == 0
    report = json.loads(Path(f"{out}.report.json").read_text())
    assert report["checkpoint"] == {"file": out.name, "sha256": sha256_file(out)}
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []
