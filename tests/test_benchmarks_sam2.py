"""The sam2 benchmark page (benchmarks/sam2.py) on SAM 2.1 Hiera-t at 256 px: one smoke run of the whole
page (about a minute and a half on a 2-core CPU), written to a temporary folder, never to docs/."""

from __future__ import annotations

import json

import pytest

from benchmarks import published, run
from benchmarks import sam2 as page_module
from benchmarks.report import REPO

pytest.importorskip("sam2")
pytest.importorskip("openvino", reason='the cpu extra is not installed (pip install "samedge[cpu]")')

MODEL = "sam2.1_hiera_t_256"


def test_the_anchor_is_the_published_birkhoff_figure():
    assert any(f"{page_module.PUBLISHED_SAM2_B:.2f}x (SAM2-B)" in row[3] for row in published.PUBLISHED)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sam2-page")
    docs_page = REPO / run.FORMS["sam2"].page
    before = docs_page.stat().st_mtime_ns if docs_page.exists() else None
    page = folder / "sam2.md"
    argv = ["sam2", "--models", MODEL, "--repeats", "1", "--decoder-calls", "1", "--work", str(folder / "work"),
            "--page", str(page)]
    assert run.main(argv) == 0
    assert (docs_page.stat().st_mtime_ns if docs_page.exists() else None) == before  # docs/ untouched
    return page, json.loads(page.with_suffix(".json").read_text())


def test_latency_and_memory_of_every_engine(smoke):
    _, results = smoke
    row = results["models"][MODEL]
    assert row["img_size"] == 256 and row["parameters"] > 1e7
    assert set(row["latency"]) == set(page_module.ENGINES)
    for engine, result in row["latency"].items():
        assert result["encoder_s"] > 0 and result["decoder_s"] > 0, engine
        assert len(result["encoder_runs"]) == 1 and len(result["decoder_runs"]) == 1
        assert result["logits_diff"] < 1e-3, engine  # the same model on every engine (measured 7e-7)
    assert set(row["peaks"]) == set(page_module.PEAKS)
    for key, peak in row["peaks"].items():
        assert results["floors"][key.split()[0]] < peak < 8 * 2**30, key  # the model adds to the imports


def test_sizes_against_the_checkpoint(smoke):
    _, results = smoke
    row = results["models"][MODEL]
    checkpoint, sizes = row["checkpoint_bytes"], row["sizes"]
    assert 0.9 < checkpoint / sizes["original"]["model_files_bytes"] < 1.1  # dense: the same fp32 weights
    birkhoff = sizes["birkhoff-reference"]
    assert birkhoff["compression"]["compressed_bytes"] == birkhoff["checkpoint_inside_bytes"]
    assert checkpoint / birkhoff["checkpoint_inside_bytes"] > 1 and checkpoint / birkhoff["model_files_bytes"] > 1
    int8 = sizes["int8"]  # built, or the reason export.quantize gave
    assert int8.get("not_built") or checkpoint / int8["model_files_bytes"] > 1


def test_the_page_and_its_rendering_again(smoke):
    page, results = smoke
    text = page.read_text()
    assert text.startswith("# SAM 2.1 on the CPU")
    assert f"by `python -m benchmarks.run sam2 --models {MODEL} --repeats 1" in text
    for heading in ("## What the figures show", "## Latency", "## Peak RSS", "## Sizes on disk"):
        assert heading in text
    assert f"against the Birkhoff paper's {page_module.PUBLISHED_SAM2_B:.2f}x for SAM2-B" in text
    assert text.count(f"| {MODEL} |") == 3 + 4 + 4  # engines, peaks, checkpoint and three bundles
    measured = page_module._measured_line(page)
    assert run.main(["sam2", "--from-json", str(page.with_suffix(".json")), "--page", str(page)]) == 0
    again = page.read_text()
    assert again.splitlines()[2].startswith(measured + " Rendered again ")
    assert again.split("## Latency")[1] == text.split("## Latency")[1]  # the figures as measured
    assert json.loads(page.with_suffix(".json").read_text()) == results


@pytest.fixture(scope="module")
def zoo_smoke(smoke, tmp_path_factory):
    """The zoo page (benchmarks/zoo.py) on the same model, from the bundles the sam2 smoke built (its cache)."""
    page, _ = smoke
    docs_page = REPO / run.FORMS["zoo"].page
    before = docs_page.stat().st_mtime_ns if docs_page.exists() else None
    zoo_page = page.parent / "zoo.md"
    argv = ["zoo", "--models", MODEL, "--repeats", "1", "--work", str(page.parent / "work"), "--page", str(zoo_page)]
    assert run.main(argv) == 0
    assert (docs_page.stat().st_mtime_ns if docs_page.exists() else None) == before
    return zoo_page, json.loads(zoo_page.with_suffix(".json").read_text())


def test_zoo_row_sizes_latency_and_birkhoff_agreement(zoo_smoke):
    page, results = zoo_smoke
    row = results["models"][MODEL]
    assert row["family"] == "sam2" and row["img_size"] == 256
    assert set(row["latency"]) == set(page_module.ENGINES)
    for engine, result in row["latency"].items():
        assert result["encoder_s"] > 0 and result["logits_diff"] < 1e-3, engine
    agreement = row["birkhoff_agreement"]
    assert agreement["prompts"] == 16 * 3
    # Birkhoff's coded weights: close to dense, not equal (a Birkhoff bundle answering exactly as the dense
    # one would mean the dense weights were served); measured mIoU 0.98, logits within 15 %.
    assert 0.8 < agreement["miou"] <= 1.0 and 0 < agreement["max_relative_logit_diff"] < 0.5
    text = page.read_text()
    assert text.startswith("# The SAM zoo on the CPU") and text.count(f"| {MODEL} | ") == 2
