"""The cpu-attention page's measurement on the demo model: both forms exported in child processes, four
engines timed, the answers compared."""

from types import SimpleNamespace

from benchmarks import cpu_attention


def test_the_page_measures_both_forms_on_both_engines(tmp_path):
    page = cpu_attention.measure(SimpleNamespace(quick=False, models=["demo"], repeats=1, page=tmp_path / "p.md"))
    (row,) = page.data["rows"]
    assert set(row["seconds"]) == {f"{form}/{engine}" for form in cpu_attention.FORMS for engine in cpu_attention.ENGINES}
    assert all(seconds > 0 for seconds in row["seconds"].values())
    assert max(row["relative_difference"].values()) < 1e-5  # fused and plain, ORT and OpenVINO: one answer
    assert row["macs"]["all"] > row["macs"]["linear_conv"] > 0
    assert all(rate > 1e9 for rate in page.data["gemm_rate"].values())
    assert "| demo |" in page.body
