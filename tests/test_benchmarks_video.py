"""The video benchmark page (benchmarks/video.py) on SAM 2.1 Hiera-t at 256 px: one smoke run of the whole
page (torch and OpenVINO, 1 and 2 objects, 4 frames), written to a temporary folder, never to docs/; and
the summary of a run's frames on made-up times (the memory-full median needs 8 frames, more than the smoke)."""

from __future__ import annotations

import json

import pytest

from benchmarks import run
from benchmarks import video as page_module
from benchmarks.report import REPO

pytest.importorskip("sam2")
pytest.importorskip("openvino", reason='the cpu extra is not installed (pip install "samedge[cpu]")')

MODEL = "sam2.1_hiera_t_256"
ENGINES = ("torch", "openvino")


def test_clicks_spread_on_a_grid():
    assert page_module.grid_clicks(1, 480, 640) == [[320.0, 240.0]]
    four = page_module.grid_clicks(4, 480, 640)
    assert four == [[160.0, 120.0], [480.0, 120.0], [160.0, 360.0], [480.0, 360.0]]
    sixteen = page_module.grid_clicks(16, 480, 640)
    assert len({tuple(click) for click in sixteen}) == 16
    assert all(0 < x < 640 and 0 < y < 480 for x, y in sixteen)


def test_summary_splits_filling_and_full_memory():
    frames = [{"frame": t, "seconds": float(t), "pieces": {"encoder": 0.5, "memory_attention": t / 4}}
              for t in range(10)]
    summary = page_module.summarise(frames)
    assert summary["frame0_s"] == 0.0
    assert summary["filling_mean_s"] == 3.5 and summary["filling_frames"] == 6  # frames 1..6
    assert summary["full_median_s"] == 8.0 and summary["full_frames"] == 3  # frames 7, 8, 9
    profile = summary["profile"]
    assert profile["memory"] == "full" and profile["frames"] == [7, 8, 9]
    assert profile["pieces_s"]["encoder"] == 0.5 and profile["pieces_s"]["decoder_batch"] == 0.0
    assert profile["other_s"] == pytest.approx(8.0 - 0.5 - 2.0)
    short = page_module.summarise(frames[:3])
    assert short["full_median_s"] is None and short["profile"]["memory"] == "filling"


def test_default_counts():
    assert page_module.frames_for([1, 4, 16], None, 4) == {1: 9, 4: 9, 16: 3}
    assert page_module.frames_for([1, 2], [4], 4) == {1: 4, 2: 4}
    assert page_module.engines_for(16, list(page_module.ENGINES), 4) == ["torch", "openvino"]
    with pytest.raises(ValueError):
        page_module.frames_for([1, 2, 3], [4, 5], 4)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    folder = tmp_path_factory.mktemp("video-page")
    docs_page = REPO / run.FORMS["video"].page
    before = docs_page.stat().st_mtime_ns if docs_page.exists() else None
    page = folder / "video.md"
    argv = ["video", "--model", MODEL, "--objects", "1", "2", "--frames", "4", "--engines", *ENGINES,
            "--peak-objects", "1", "--peak-frames", "3", "--work", str(folder / "work"), "--page", str(page)]
    assert run.main(argv) == 0
    assert (docs_page.stat().st_mtime_ns if docs_page.exists() else None) == before  # docs/ untouched
    return page, json.loads(page.with_suffix(".json").read_text())


def test_every_engine_tracks_every_frame(smoke):
    _, results = smoke
    assert results["settings"]["img_size"] == 256
    assert set(results["runs"]) == {"1", "2"}
    for objects, runs in results["runs"].items():
        assert set(runs) == set(ENGINES)
        for engine, result in runs.items():
            assert [row["frame"] for row in result["frames"]] == [0, 1, 2, 3], (objects, engine)
            assert all(row["seconds"] > 0 for row in result["frames"])
            assert result["filling_mean_s"] > 0 and result["full_median_s"] is None  # 4 frames: never full
        pieces = runs["openvino"]["profile"]["pieces_s"]
        assert all(pieces[piece] > 0 for piece in page_module.PIECES), pieces
        assert runs["openvino"]["min_iou_vs_torch"] > 0.9  # the same model on both engines
    floors = results["floors"]
    for engine in ENGINES:
        assert floors[engine] < results["peaks"]["1"][engine]["peak_rss_bytes"] < 8 * 2**30


def test_the_page_and_its_rendering_again(smoke):
    page, results = smoke
    text = page.read_text()
    assert text.startswith("# SAM 2.1 video tracking on the CPU")
    assert f"by `python -m benchmarks.run video --model {MODEL} --objects 1 2" in text
    for heading in ("## What the figures show", "## Time per frame", "## Per-piece profile", "## Peak RSS"):
        assert heading in text
    assert "not full (4 frames tracked)" in text and "the memory never filled" in text
    timing = text.split("## Time per frame")[1].split("## Per-piece")[0]
    assert timing.count("| torch CPU (SAM2VideoPredictor) |") == 2 and timing.count("| VideoPredictor, OpenVINO |") == 2
    measured = page.read_text().splitlines()[2]
    assert run.main(["video", "--from-json", str(page.with_suffix(".json")), "--page", str(page)]) == 0
    again = page.read_text()
    assert again.splitlines()[2].startswith(measured + " Rendered again ")
    assert again.split("## Time per frame")[1] == text.split("## Time per frame")[1]  # the figures as measured
    assert json.loads(page.with_suffix(".json").read_text()) == results
