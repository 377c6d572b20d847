"""Shared models and bundles. Built once per test session; full-size ones only on demand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage import data

from compress import seeded_checkpoint
from compress.demo import DEFAULT_CHECKPOINT as DEMO_CHECKPOINT
from compress.recipe import parse_recipe
from export.build import build_bundle
from runtime.backends.openvino_backend import CACHE_VARIABLE

REPO = Path(__file__).resolve().parent.parent


def _seeded_checkpoint(tmp_path_factory, model_type: str) -> Path:
    return seeded_checkpoint(model_type, tmp_path_factory.mktemp(model_type))


def _bundle(tmp_path_factory, name: str, checkpoint: Path, recipe=None) -> Path:
    out = tmp_path_factory.mktemp("bundles") / f"{name}-cpu"
    build_bundle(out, "cpu", checkpoint, run_parity=False, recipe=recipe)
    return out


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return _seeded_checkpoint(tmp_path_factory, "tiny")


@pytest.fixture(scope="session")
def vit_b_checkpoint(tmp_path_factory) -> Path:
    """The full-size vit_b architecture with seeded random weights (no download needed)."""
    return _seeded_checkpoint(tmp_path_factory, "vit_b")


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, tiny_checkpoint) -> Path:
    return _bundle(tmp_path_factory, "tiny", tiny_checkpoint)


@pytest.fixture(scope="session")
def tiny_birkhoff_bundle(tmp_path_factory, tiny_checkpoint) -> Path:
    """tiny with Birkhoff codes: HyperLinear and HyperTensor nodes in its ONNX files."""
    return _bundle(tmp_path_factory, "tiny-birkhoff", tiny_checkpoint, parse_recipe("birkhoff"))


@pytest.fixture(scope="session")
def demo_bundle(tmp_path_factory) -> Path:
    return _bundle(tmp_path_factory, "demo", DEMO_CHECKPOINT)


@pytest.fixture(scope="session")
def demo_birkhoff_bundle(tmp_path_factory) -> Path:
    return _bundle(tmp_path_factory, "demo-birkhoff", DEMO_CHECKPOINT, parse_recipe("birkhoff"))


@pytest.fixture(scope="session")
def sam2_checkpoint(tmp_path_factory) -> Path:
    """SAM 2.1 Hiera-t at 256 px (the real architecture, 0.2 s per image), seeded and perturbed weights."""
    return _seeded_checkpoint(tmp_path_factory, "sam2.1_hiera_t_256")


@pytest.fixture(scope="session")
def sam2_bundle(tmp_path_factory, sam2_checkpoint) -> Path:
    return _bundle(tmp_path_factory, "sam2.1_hiera_t_256", sam2_checkpoint)


@pytest.fixture(scope="session")
def sam2_video_bundle(tmp_path_factory) -> Path:
    """SAM 2.1 hiera-t at 256 px whose tracking depends on its memory (tests/video_model.py)."""
    from tests.video_model import memory_sensitive_checkpoint

    checkpoint = memory_sensitive_checkpoint(tmp_path_factory.mktemp("sam2-video"))
    return _bundle(tmp_path_factory, "sam2-video", checkpoint)


@pytest.fixture(scope="session")
def video_clip(tmp_path_factory) -> Path:
    """18 JPEG frames (96 x 128) of moving shapes: enough to fill SAM 2's memory bank (6 frames, 15 pointers)."""
    from compress.demo.clips import moving_shapes, write_jpeg_folder

    return write_jpeg_folder(moving_shapes(18, 96, 128), tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="session", autouse=True)
def openvino_model_cache(tmp_path_factory):
    """OpenVINO's model cache in the test session's temporary folder, not the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_VARIABLE, str(tmp_path_factory.mktemp("openvino-cache")))
        yield


@pytest.fixture(scope="session")
def vit_b_bundle(tmp_path_factory, vit_b_checkpoint) -> Path:
    return _bundle(tmp_path_factory, "vit_b", vit_b_checkpoint)


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    return {name: getattr(data, name)() for name in ("astronaut", "coffee", "chelsea")}
