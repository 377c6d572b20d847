"""The results page on the tiny SAM: every variant built and measured, the page and PNGs written."""

from __future__ import annotations

import pytest
import torch

from benchmarks.plans import TINY_VARIANTS
from benchmarks.report import write_page
from benchmarks.results import run_benchmark
from benchmarks.variants import ORIGINAL, VARIANTS
from compress import load_checkpoint, parameter_count
from compress.birkhoff.hyper_linear import HyperLinear
from plugins.hyperlinear.torch_op import FusedHyperLinear, use_fused_kernel


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("benchmark")
    results, page = run_benchmark("tiny", root / "RESULTS.md", root / "work", png_folder=root / "results")
    write_page(page, "pytest")
    return results, page.path.read_text(), root


def _model(results):
    (model,) = results["models"]
    return model


def test_page_has_the_header_and_a_row_for_every_variant_in_every_table(run):
    _, page, _ = run
    assert page.startswith("# Results: the original model and every variant, side by side\n\nMeasured ")
    assert "by `pytest` on " in page.splitlines()[2]
    tables = page.count("| variant |")
    assert tables == 4  # size, fidelity + memory, encoder latency, decoder latency
    for variant in VARIANTS:
        assert page.count(f"| {variant} |") == tables, variant
    rows = _model(run[0])["rows"]
    for variant in set(VARIANTS) - set(TINY_VARIANTS):  # rows of variants the test does not build say why
        assert rows[variant]["not_built"].startswith("not built in the test configuration")


def test_plots_are_written(run):
    _, page, root = run
    for name in ("size-vs-fidelity.png", "latency.png"):
        path = root / "results" / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"results/{name}" in page


def test_latency_ratios_are_against_the_original_of_the_same_run(run):
    results, page, _ = run
    rows = _model(results)["rows"]
    measured = [b for b, cell in rows[ORIGINAL]["latency"].items() if isinstance(cell, dict)]
    assert "ONNX Runtime CPU" in measured and "torch CPU" in measured
    for backend in measured:
        base = rows[ORIGINAL]["latency"][backend]
        assert base["encoder_ratio"] == 1.0 and base["decoder_ratio"] == 1.0
        for variant in TINY_VARIANTS:
            cell = rows[variant]["latency"][backend]
            if isinstance(cell, dict):
                assert cell["encoder_ratio"] == pytest.approx(cell["encoder_s"] / base["encoder_s"])
                assert cell["decoder_ratio"] == pytest.approx(cell["decoder_s"] / base["decoder_s"])
    assert "(1.00x)" in page.split("| original |")[3]  # the encoder-latency table's original row


def test_size_ratios_and_counts(run):
    results, _, _ = run
    rows = _model(results)["rows"]
    assert rows[ORIGINAL]["onnx_ratio"] == 1.0
    for variant in TINY_VARIANTS:
        assert rows[variant]["onnx_ratio"] == pytest.approx(rows[ORIGINAL]["onnx_bytes"] / rows[variant]["onnx_bytes"])
    # Pruning shrinks the encoder; Birkhoff keeps its architecture (a HyperLinear counts as its Linear).
    assert rows["slimsam-77"]["params"] < rows[ORIGINAL]["params"]
    assert rows["slimsam-77+birkhoff"]["params"] == rows["slimsam-77"]["params"]
    assert rows["birkhoff-reference"]["macs_linear_conv"] == rows[ORIGINAL]["macs_linear_conv"]
    bundle = _model(results)["built"]["birkhoff-reference"]["bundle"]
    loaded = load_checkpoint(f"{bundle}/model.birkhoff.safetensors")
    assert parameter_count(loaded.image_encoder) == rows["birkhoff-reference"]["params"]
    assert rows["slimsam-77+birkhoff"]["checkpoint_bytes"] < rows["slimsam-77"]["checkpoint_bytes"]


def test_fidelity_and_memory_are_filled(run):
    results, _, _ = run
    rows = _model(results)["rows"]
    assert rows[ORIGINAL]["agreement_miou"] == "reference"
    for variant in TINY_VARIANTS:
        assert 0.0 <= rows[variant]["point_miou"] <= 1.0 and 0.0 <= rows[variant]["box_miou"] <= 1.0
        assert rows[variant]["peak_rss_bytes"] > results["memory_floor_bytes"]
        if variant != ORIGINAL:
            assert 0.0 <= rows[variant]["agreement_miou"] <= 1.0


def test_empty_cells_say_why(run):
    results, page, _ = run
    rows = _model(results)["rows"]
    assert rows["int8"]["latency"]["torch CPU"].startswith("n/a: an ONNX Runtime quantisation")
    if not torch.cuda.is_available():
        assert rows[ORIGINAL]["latency"]["torch CUDA"] == "no GPU on this machine"
        assert "no GPU on this machine" in page
    try:
        import tensorrt  # optional: imported here so the test runs where TensorRT is not installed
    except ImportError:
        tensorrt = None
    if tensorrt is None:
        assert rows[ORIGINAL]["latency"]["TensorRT"] == "not installed"


def test_fused_hyperlinear_swap_keeps_cpu_outputs(run):
    results, _, _ = run
    bundle = _model(results)["built"]["birkhoff-reference"]["bundle"]
    model = load_checkpoint(f"{bundle}/model.birkhoff.safetensors")
    expected_count = sum(isinstance(m, HyperLinear) for m in model.modules())
    x = torch.randn(1, 3, model.image_encoder.img_size, model.image_encoder.img_size)
    with torch.no_grad():
        before = model.image_encoder(x)
        calls = []
        assert use_fused_kernel(model, lambda x, layer: calls.append(layer)) == expected_count > 0
        after = model.image_encoder(x)
    assert sum(isinstance(m, FusedHyperLinear) for m in model.modules()) == expected_count
    assert not calls  # CPU inputs never reach the CUDA kernel
    assert torch.equal(before, after)
