"""Shared models and bundles. Built once per test session; full-size ones only on demand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
DEMO_CHECKPOINT = REPO / "compress" / "weights" / "demo_sam.safetensors"


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from compress import build_sam, save_checkpoint

    path = tmp_path_factory.mktemp("tiny") / "tiny.safetensors"
    save_checkpoint(build_sam("tiny", seed=0), path)
    return path


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, tiny_checkpoint) -> Path:
    from export.build import build_bundle

    out = tmp_path_factory.mktemp("bundles") / "tiny-cpu"
    build_bundle(out, "cpu", tiny_checkpoint, run_parity=False)
    return out


@pytest.fixture(scope="session")
def demo_bundle(tmp_path_factory) -> Path:
    from export.build import build_bundle

    out = tmp_path_factory.mktemp("bundles") / "demo-cpu"
    build_bundle(out, "cpu", DEMO_CHECKPOINT, run_parity=False)
    return out


@pytest.fixture(scope="session")
def vit_b_checkpoint(tmp_path_factory) -> Path:
    """The full-size vit_b architecture with seeded random weights (no download needed)."""
    from compress import build_sam, save_checkpoint

    path = tmp_path_factory.mktemp("vit_b") / "vit_b_seed0.safetensors"
    save_checkpoint(build_sam("vit_b", seed=0), path)
    return path


@pytest.fixture(scope="session")
def vit_b_bundle(tmp_path_factory, vit_b_checkpoint) -> Path:
    from export.build import build_bundle

    out = tmp_path_factory.mktemp("bundles") / "vit_b-cpu"
    build_bundle(out, "cpu", vit_b_checkpoint, run_parity=False)
    return out


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    from skimage import data

    return {name: getattr(data, name)() for name in ("astronaut", "coffee", "chelsea")}
