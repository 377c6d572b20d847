"""The rate-distortion page on the tiny model (seconds), and its pieces."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from benchmarks import rate_distortion, run
from benchmarks.rate_distortion import POINTS, comparisons, densified, synthetic_rows
from compress import build_sam
from compress.birkhoff import codec
from compress.birkhoff.hyper_linear import HyperLinear
from compress.birkhoff.model import compress_model


def test_the_page_on_the_tiny_model(tmp_path):
    page = tmp_path / "rd.md"
    points = ["authors", "fill t=0.001", "authors + fall-back 0.1"]
    assert run.main(["rate-distortion", "--models", "tiny", "--points", *points, "--agreement",
                     "--photos", "coffee", "--skip-synthetic", "--out", str(page)]) == 0
    text = page.read_text()
    assert "by `python -m benchmarks.run rate-distortion --models tiny" in text and "### tiny" in text
    assert (tmp_path / "rd.png").stat().st_size > 0
    rows = json.loads(page.with_suffix(".json").read_text())["models"]["tiny"]
    assert [r["point"] for r in rows] == ["original (float32)", *points]
    assert rows[0]["bits_per_weight"] > 32  # the header and the buffers are in the file too
    for row in rows[1:]:
        assert row["bits_per_weight"] == pytest.approx(8 * row["bytes"] / row["weights"])
        assert 0 < row["rel_rmse"] < 0.1 and row["code_bits"] > row["entropy_bits"] > 0
        assert 0 < row["agreement_miou"] <= 1
        assert row["settings"] == POINTS[row["point"]].settings.to_dict()
    assert rows[1]["lzma_bits"] is not None and rows[3]["lzma_bits"] is None  # key points only
    assert rows[2]["bits_per_weight"] <= rows[1]["bits_per_weight"]  # index-filling codebooks: no larger


def test_densified_model_gives_the_same_numbers():
    model = compress_model(build_sam("tiny", seed=0), show_progress=False).model.eval()
    image = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model.image_encoder(image)
        dense = densified(model)
        assert not any(isinstance(m, HyperLinear) for m in dense.modules())
        torch.testing.assert_close(dense.image_encoder(image), expected, rtol=0, atol=0)


def test_comparisons_name_the_wins_at_equal_size_and_equal_error():
    rows = [{"point": "original (float32)", "family": "original", "bits_per_weight": 32.0, "rel_rmse": 0.0},
            {"point": "authors", "family": "authors", "bits_per_weight": 6.0, "rel_rmse": 0.040},
            {"point": "authors t=5e-4", "family": "authors", "bits_per_weight": 5.0, "rel_rmse": 0.030},
            {"point": "same size", "family": "fill", "bits_per_weight": 6.0, "rel_rmse": 0.030},
            {"point": "same error", "family": "fill", "bits_per_weight": 5.5, "rel_rmse": 0.040},
            {"point": "worse", "family": "scaled", "bits_per_weight": 7.0, "rel_rmse": 0.050}]
    size, error = comparisons(rows)
    assert size.startswith("equal size (rel. RMS error): `same size`") and "25 % less" in size
    assert error.startswith("equal error (rel. RMS error): `same error`") and "8 % smaller" in error
    assert comparisons(rows[:2] + rows[-1:]) == []  # nothing of samedge's beats the authors': no claim
    # Two points of a family around the authors': tensors split between them (squared error adds up).
    curve = [{"point": "coarse", "family": "fill", "bits_per_weight": 5.0, "rel_rmse": 0.05},
             {"point": "fine", "family": "fill", "bits_per_weight": 7.0, "rel_rmse": 0.02}]
    size, error = comparisons(rows[:2] + curve)
    assert "mixing `coarse` and `fine` per tensor: 0.0381 at 6.00" in size and "(5 % less)" in size
    assert "0.0400 at 5.86 bits per weight (2 % smaller)" in error


def test_synthetic_tensors_show_what_the_bulk_loses():
    rows = {r["tensor"]: r for r in synthetic_rows([POINTS["authors"]])}
    gaussian = rows["Gaussian, std 0.02"]["authors"]
    assert gaussian["robust_rel"] == pytest.approx(gaussian["rel_rmse"], rel=0.03)
    heavy = rows["Student-t df 2, scale 0.005"]["authors"]
    assert heavy["robust_rel"] > 2 * heavy["rel_rmse"] and heavy["robust_rel"] > 0.2
    assert rows["Student-t df 2"]["authors"] is None  # the authors' MAE fall-back: raw


def test_every_point_is_a_setting_the_decoders_take():
    assert POINTS[rate_distortion.AUTHORS].settings == codec.Settings(fallback_rel_rmse=None)
    assert rate_distortion.default_point() in POINTS
    for point in POINTS.values():
        assert point.settings.max_rings <= 3 and point.variant in ("reference", "scaled")
        weights = np.random.default_rng(0).normal(0, 0.02, (16, 32))
        assert codec.encode(weights, True, settings=point.settings.replace(fallback_mae=None)).bits <= 13
