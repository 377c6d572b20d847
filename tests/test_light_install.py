"""`pip install samedge` with no extras is a working runtime: Session and runtime.predict, no torch.

A fresh venv (no system site packages) gets the wheel built from a copy of the tree, its base
dependencies from the package index (pip's cache makes reruns quick), and runs from outside
the checkout, so the installed package is what answers.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_plugin_build import build_wheel

# What the extras bring; none may come with the base install. (safetensors is the base's since SAM 2
# tracking: runtime/tracker.py reads a bundle's tracking.safetensors with its numpy loader.)
EXTRAS_ONLY = ("torch", "torchvision", "segment_anything", "tqdm", "skimage", "matplotlib", "torch_pruning",
               "av", "openvino")


@pytest.fixture(scope="module")
def base_venv(tmp_path_factory) -> Path:
    tmp_path = tmp_path_factory.mktemp("light-install")
    wheel = build_wheel(tmp_path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    result = subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(wheel)], capture_output=True, text=True)
    assert result.returncode == 0, f"pip install {wheel.name} failed:\n{result.stdout[-2000:]}{result.stderr[-3000:]}"
    return python


def run(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), *args], cwd=cwd, capture_output=True, text=True)


def test_base_install_brings_no_extra(base_venv, tmp_path):
    script = "import importlib.util as u; print(' '.join(n for n in %r if u.find_spec(n)))" % (EXTRAS_ONLY,)
    result = run(base_venv, "-c", script, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [], f"the base install pulled in {result.stdout.split()}"


@pytest.mark.parametrize("name", ["tiny_bundle", "tiny_birkhoff_bundle"])
def test_session_predicts_in_base_install(base_venv, name, request, tmp_path):
    """Dense, and Birkhoff-coded (decoded in numpy at session start: onnx, no torch)."""
    bundle = request.getfixturevalue(name)
    script = textwrap.dedent(f"""
        import numpy as np
        import runtime
        from runtime import Session
        print(runtime.__file__)
        masks, scores, _ = Session({str(bundle)!r}).predict(np.zeros((30, 40, 3), np.uint8),
                                                                 points=[[12, 9]], labels=[1])
        print(masks.shape, scores.shape)
    """)
    result = run(base_venv, "-c", script, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    location, shapes = result.stdout.splitlines()
    assert Path(location).is_relative_to(base_venv.parent.parent), f"ran {location}, not the installed package"
    assert shapes == "(3, 30, 40) (3,)"


def test_predict_cli_in_base_install(base_venv, tiny_bundle, tmp_path):
    image = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(image)
    result = run(base_venv, "-m", "runtime.predict", str(tiny_bundle), str(image), "--point", "12,9",
                 "--out", "o.png", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    with Image.open(tmp_path / "o.png") as overlay:
        assert (overlay.format, overlay.size) == ("PNG", (40, 30))


def test_tracking_in_base_install(base_venv, sam2_bundle, tmp_path):
    """A SAM 2 bundle tracks a folder of frames with the base install: no torch, no PyAV."""
    from compress.demo.clips import moving_shapes, write_jpeg_folder

    clip = write_jpeg_folder(moving_shapes(3, 48, 64), tmp_path / "clip")
    script = textwrap.dedent(f"""
        import sys
        from runtime.video import VideoPredictor
        predictor = VideoPredictor({str(sam2_bundle)!r}, backend="onnxruntime")
        state = predictor.init_state({str(clip)!r})
        predictor.add_new_points_or_box(state, 0, 1, points=[[32, 24]], labels=[1])
        print([masks.shape for _, _, masks in predictor.propagate_in_video(state)], "torch" in sys.modules)
    """)
    result = run(base_venv, "-c", script, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[(1, 1, 48, 64), (1, 1, 48, 64), (1, 1, 48, 64)] False"
