"""The benchmark pages' shared machinery: the one page writer, the dispatch of page names by
`python -m benchmarks.run PAGE`, the timing helper, and the forms that need no heavy run."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from benchmarks import ort_memory, prompts_at_scale, report, run
from benchmarks.fidelity import photographs
from benchmarks.latency import interleaved
from benchmarks.report import Page, machine, write_page
from benchmarks.slimsam_step_time import gpu_estimate
from runtime import Session
from runtime.parity import standard_images


def test_page_has_the_header_and_json_and_is_replaced_whole(tmp_path):
    path = tmp_path / "page.md"
    path.write_text("old page\n")
    write_page(Page(path, "A title", "What was measured.", "| a |\n|---|\n| 1 |", data={"rows": [1]}), "the command")
    text = path.read_text()
    lines = text.splitlines()
    assert lines[0] == "# A title"
    assert lines[2].startswith("Measured ") and "by `the command` on " in lines[2]
    assert machine()["cpu"] in lines[2]
    assert lines[4] == "What was measured."
    assert text.endswith("| 1 |\n")
    assert json.loads(path.with_suffix(".json").read_text()) == {"rows": [1]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["page.json", "page.md"]  # no temporary files left


def test_page_may_name_its_own_command_and_machine(tmp_path):
    path = write_page(Page(tmp_path / "p.md", "T", "I", "B", machine="a GPU", command="bash scripts/x.sh"), "run")
    assert "by `bash scripts/x.sh` on a GPU." in path.read_text()


def test_interrupted_write_leaves_the_old_page(tmp_path, monkeypatch):
    path = tmp_path / "page.md"
    path.write_text("old page\n")
    real_write_text = Path.write_text

    def half_then_fail(self, text, *args, **kwargs):
        real_write_text(self, text[: len(text) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_text", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_page(Page(path, "New", "intro", "body " * 100), "cmd")
    monkeypatch.undo()
    assert path.read_text() == "old page\n"
    assert [p.name for p in tmp_path.iterdir()] == ["page.md"]


@pytest.fixture
def fake_form(monkeypatch, tmp_path):
    """A page form registered under 'fake', writing to tmp_path/fake.md."""
    module = types.ModuleType("fake_form")
    module.__doc__ = "A fake page."
    seen = {}

    def add_arguments(parser):
        parser.add_argument("--value", type=int, default=1)

    def measure(args):
        seen["value"] = args.value
        return Page(tmp_path / "fake.md", "Fake", f"value {args.value}", "body")

    module.add_arguments, module.measure = add_arguments, measure
    monkeypatch.setitem(sys.modules, "fake_form", module)
    monkeypatch.setitem(run.FORMS, "fake", run.Form("fake_form", "a fake page"))
    return seen


def test_a_page_name_runs_its_form_and_the_header_names_the_command(fake_form, tmp_path):
    assert run.main(["fake", "--value", "3"]) == 0
    assert fake_form["value"] == 3
    text = (tmp_path / "fake.md").read_text()
    assert "by `python -m benchmarks.run fake --value 3` on " in text
    assert "value 3" in text


def test_unknown_page_is_refused_with_the_list(capsys):
    assert run.main(["no-such-page"]) == 2
    err = capsys.readouterr().err
    assert "unknown page 'no-such-page'" in err
    for name in run.FORMS:
        assert name in err


@pytest.mark.parametrize("name", sorted(run.FORMS))
def test_every_page_form_parses_its_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run.main(([] if name == run.RESULTS else [name]) + ["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: python -m benchmarks.run{'' if name == run.RESULTS else ' ' + name}" in out
    if name == run.RESULTS:
        assert all(page in out for page in run.FORMS)  # the results page's help lists the others


def test_interleaved_warms_up_untimed_and_rotates():
    order = []
    calls = {name: (lambda name=name: order.append(name)) for name in "abc"}
    runs = interleaved(calls, repeats=3, warmup=2)
    assert order[:6] == ["a", "a", "b", "b", "c", "c"]  # warm-up, not timed
    assert order[6:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert {name: len(times) for name, times in runs.items()} == {"a": 3, "b": 3, "c": 3}
    assert all(t >= 0 for times in runs.values() for t in times)


def test_interleaved_stride_keeps_groups_together():
    order = []
    calls = {(variant, part): (lambda key=(variant, part): order.append(key))
             for variant in "ab" for part in ("encoder", "decoder")}
    interleaved(calls, repeats=2, warmup=0, stride=2)
    assert order == [("a", "encoder"), ("a", "decoder"), ("b", "encoder"), ("b", "decoder"),
                     ("b", "encoder"), ("b", "decoder"), ("a", "encoder"), ("a", "decoder")]


@pytest.mark.skipif(torch.cuda.is_available(), reason="measures for real where a GPU exists")
def test_kernel_page_without_a_gpu_writes_nothing(tmp_path, capsys):
    page = tmp_path / "kernel.md"
    assert run.main(["hyperlinear-kernel", "--page", str(page)]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err
    assert not page.exists()


def test_kernel_page_from_gpu_check_results(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "info.json").write_text(json.dumps({"gpu": "Some GPU", "capability": "9.0", "sms": 132,
                                                   "kernel_archs": ["90"]}))
    (results / "bench.json").write_text(json.dumps({"status": "passed", "repeats": 3, "inner": 2, "rows": [
        {"in": 768, "out": 768, "m": 1, "dtype": "float16", "fused_ms": 0.01, "cublas_ms": 0.02, "ratio": 0.5}]}))
    (results / "memcheck.json").write_text(json.dumps({"status": "failed", "reason": "timed out"}))
    (results / "steps.tsv").write_text("info\tpassed\t1\nbench\tpassed\t9\n")
    page = tmp_path / "kernel.md"
    assert run.main(["hyperlinear-kernel", "--page-from", str(results), "--page", str(page)]) == 0
    text = page.read_text()
    assert "by `bash scripts/gpu_check.sh` on Some GPU (compute capability 9.0, 132 SMs)" in text
    assert "| 768 x 768 | 1 | float16 | 0.0100 | 0.0200 | 0.50 |" in text
    assert "| memcheck | failed: timed out |" in text
    assert "Not run (the build wrote no result; see the step table)." in text
    assert "| bench | passed | 9 |" in text


def test_kernel_page_needs_gpu_check_info(tmp_path, capsys):
    assert run.main(["hyperlinear-kernel", "--page-from", str(tmp_path), "--page", str(tmp_path / "k.md")]) == 2
    assert "no info.json" in capsys.readouterr().err
    assert not (tmp_path / "k.md").exists()


def test_gpu_estimate_is_the_one_docs_slimsam_md_cites():
    text = gpu_estimate(cpu_hours=18552)
    for figure in ("about 2.6 TFLOP", "teacher forward 486G MACs", "about 0.13 s per image-step",
                   "about 43 GPU-hours", "(18552 hours)"):
        assert figure in text, figure


def test_agreement_photographs_are_runtime_parity_s():
    images = photographs(["coffee", "astronaut"])
    assert list(images) == ["coffee", "astronaut"]
    assert (images["coffee"] == standard_images()["coffee"]).all()
    with pytest.raises(ValueError, match="not among runtime.parity's standard images"):
        photographs(["rocket"])


def test_ort_memory_children_report_every_run(tiny_bundle):
    for setting in ort_memory.SETTINGS:
        result = ort_memory.in_fresh_process(tiny_bundle, setting, 2)
        assert len(result["seconds"]) == 2 and all(s > 0 for s in result["seconds"])
        assert 0 < result["peaks"][0] <= result["peaks"][1] < 8 * 2**30  # VmHWM never falls


def test_prompts_at_scale_measures_both_ways_on_one_bundle(tiny_bundle):
    """Its rows on the tiny model: per-prompt times of all three ways, and both generators' masks."""
    image = standard_images()["astronaut"][::8, ::8]
    with Session(tiny_bundle) as session:
        rows, timings = prompts_at_scale.decoder_rows("tiny", session, image, repeats=1)
    assert [row[1] for row in rows] == list(prompts_at_scale.PROMPT_COUNTS)
    assert all(set(t) == {"batch", "batch, low-res only", "loop of predict"} and min(t.values()) > 0
               for t in timings.values())
    rows, results = prompts_at_scale.everything_rows("tiny", tiny_bundle, image, repeats=1)
    result = results["tiny everything"]
    assert result["passed"] and result["masks"][0] == result["masks"][1]  # the same weights, the same masks


def test_memory_children_do_not_load_torch():
    """A child's peak is the Session's: importing its module must not bring torch (0.63 GiB) in."""
    for module in ("benchmarks.ort_memory", "benchmarks.peak_memory"):
        code = f"import sys, {module}; print('torch' in sys.modules)"
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                cwd=Path(__file__).resolve().parent.parent)
        assert result.stdout.strip() == "False", module


def test_a_page_older_than_its_inputs_is_found_stale(tmp_path, monkeypatch):
    """report.staleness on a temporary page: current after writing; stale, naming the input, once a
    file, a "module:NAME" value or a function it describes changes; stale too without an inputs line."""
    monkeypatch.setattr(report, "REPO", tmp_path)
    (tmp_path / "measures.py").write_text("ROWS = 1\n")
    module = types.ModuleType("samedge_test_table")
    module.TABLE = {"fp32": "openvino"}
    monkeypatch.setitem(sys.modules, "samedge_test_table", module)
    inputs = ("measures.py", "samedge_test_table:TABLE", "benchmarks.report:table")
    page = tmp_path / "page.md"
    write_page(Page(page, "T", "I", "B", inputs=inputs), "run")
    assert report.staleness(page, inputs) is None
    module.TABLE["int4"] = "openvino"  # a value the page states
    assert report.staleness(page, inputs) == "changed: samedge_test_table:TABLE"
    write_page(Page(page, "T", "I", "B", inputs=inputs), "run")
    assert report.staleness(page, inputs) is None
    (tmp_path / "measures.py").write_text("ROWS = 2\n")  # the code that measures it
    assert report.staleness(page, inputs) == "changed: measures.py"
    assert report.staleness(page, inputs[1:]) == "no longer among its inputs: measures.py"
    assert report.staleness(page, (*inputs, "new.py")).endswith("not in its header (inputs added since): new.py")
    del module.TABLE
    assert "cannot be read: samedge_test_table:TABLE (AttributeError" in report.staleness(page, inputs)
    write_page(Page(page, "T", "I", "B", inputs=("gone.py",)), "run")  # written all the same, said
    assert report.recorded_digests(page) == {"gone.py": report.UNREADABLE}
    assert report.staleness(page, ("gone.py",)).startswith("cannot be read: gone.py (FileNotFoundError")
    write_page(Page(page, "T", "I", "B"), "run")
    assert report.staleness(page, inputs).startswith("no inputs digest in its header")


@pytest.fixture
def pages_repo(monkeypatch, tmp_path):
    """A repository of one page form, 'probe' (benchmarks/probe.py in tmp_path, describing probe_table.py),
    in place of the real FORMS: --check-stale and --vouch run on it as on docs/."""
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "probe.py").write_text(
        "from pathlib import Path\n"
        "from benchmarks import report\n"
        "def measure(args):\n"
        "    rows = (report.REPO / 'probe_table.py').read_text()\n"
        "    return report.Page(report.REPO / 'docs/benchmarks/probe.md', 'Probe', 'What was measured.', rows,\n"
        "                       data={'rows': rows})\n")
    (tmp_path / "probe_table.py").write_text("TABLE = {'fp32': 'openvino'}\n")
    (tmp_path / "docs" / "benchmarks").mkdir(parents=True)
    module = types.ModuleType("benchmarks.probe")
    exec((tmp_path / "benchmarks" / "probe.py").read_text(), module.__dict__)
    monkeypatch.setitem(sys.modules, "benchmarks.probe", module)
    for target in (report, run):
        monkeypatch.setattr(target, "REPO", tmp_path)
    monkeypatch.setattr(run, "FORMS", {"probe": run.Form("benchmarks.probe", "a probe page",
                                                         measured_with=("probe_table.py",))})
    return tmp_path


def test_check_stale_passes_on_a_fresh_page_and_names_the_input_that_changed(pages_repo, capsys):
    assert run.main(["--check-stale"]) == 1  # no page yet
    assert "stale: docs/benchmarks/probe.md: no page" in capsys.readouterr().out
    assert run.main(["probe"]) == 0
    text = (pages_repo / "docs/benchmarks/probe.md").read_text()
    assert "\nInputs (sha256, 16 hex digits; " in text and "benchmarks/probe.py " in text and "probe_table.py " in text
    capsys.readouterr()
    assert run.main(["--check-stale"]) == 0
    assert "1 of 1 pages describe their inputs as they are now" in capsys.readouterr().out
    (pages_repo / "probe_table.py").write_text("TABLE = {'fp32': 'onnxruntime'}\n")
    assert run.main(["--check-stale"]) == 1
    out = capsys.readouterr().out
    assert ("stale: docs/benchmarks/probe.md: changed: probe_table.py; regenerate it: python -m benchmarks.run probe"
            in out)
    assert "benchmarks/probe.py" not in out.split("changed:")[1]  # only what changed is named
    assert run.main(["probe"]) == 0
    assert run.main(["--check-stale"]) == 0


def test_vouching_records_the_inputs_and_leaves_the_page(pages_repo, capsys):
    """--vouch (a page checked by a person against the changed inputs): the digests as they are now,
    the header saying so, the figures and text untouched; a page written before digests gets the line."""
    page = pages_repo / "docs/benchmarks/probe.md"
    old = "# Probe\n\nMeasured long ago by `x` on a machine.\n\nWhat was measured.\n\n| a |\n"
    page.write_text(old)
    assert run.main(["--check-stale"]) == 1
    assert run.main(["--vouch", "probe"]) == 0
    text = page.read_text()
    lines = text.splitlines()
    assert lines[4].startswith("Inputs recorded ") and "by hand on the page as it was, checked against the code, " \
        "not re-measured (sha256, 16 hex digits" in lines[4]
    assert text.replace(lines[4] + "\n\n", "") == old
    assert run.main(["--check-stale"]) == 0
    (pages_repo / "probe_table.py").write_text("TABLE = {}\n")
    assert run.main(["--vouch", "probe"]) == 0  # the line replaced, not added
    assert page.read_text().count("\nInputs ") == 1
    assert run.main(["--check-stale"]) == 0
    assert run.main(["--vouch", "no-such-page"]) == 2


def test_a_page_rendered_again_keeps_what_its_figures_were_measured_with(pages_repo, monkeypatch):
    """Rendering again from the JSON (page.measured set) brings the text's inputs up to date, not the
    figures': those keep the digests of the page it replaces, or are recorded as unrecorded."""
    module = sys.modules["benchmarks.probe"]
    measure = module.measure

    def again(args):
        page = measure(args)
        page.measured = "Measured then by someone."
        return page

    page = pages_repo / "docs/benchmarks/probe.md"
    page.write_text("# Probe\n\nMeasured then by someone.\n\nold\n")  # no digests: figures unrecorded
    monkeypatch.setattr(module, "measure", again)
    assert run.main(["probe"]) == 0
    assert report.recorded_digests(page)["probe_table.py"] == report.UNRECORDED
    assert report.staleness(page, run.FORMS["probe"].inputs) == (
        "not recorded when its figures were measured: probe_table.py")
    monkeypatch.setattr(module, "measure", measure)
    assert run.main(["probe"]) == 0  # measured: every input recorded
    recorded = report.recorded_digests(page)
    (pages_repo / "benchmarks" / "probe.py").write_text((pages_repo / "benchmarks" / "probe.py").read_text() + "#\n")
    (pages_repo / "probe_table.py").write_text("TABLE = {}\n")
    monkeypatch.setattr(module, "measure", again)
    assert run.main(["probe"]) == 0
    again_recorded = report.recorded_digests(page)
    assert again_recorded["probe_table.py"] == recorded["probe_table.py"]  # the figures' input kept
    assert again_recorded["benchmarks/probe.py"] != recorded["benchmarks/probe.py"]  # the text's brought up to date
    assert report.staleness(page, run.FORMS["probe"].inputs) == "changed: probe_table.py"


def test_every_page_names_inputs_that_exist():
    """Each form's inputs can be read (a renamed file or function would otherwise make its page stale
    for good). Whether the pages are current is `python -m benchmarks.run --check-stale`'s to say, not
    a test's: pages take up to half an hour to measure, and the code they describe moves meanwhile."""
    for name, form in run.FORMS.items():
        for item in form.inputs:
            assert len(report.input_digest(item)) == report.DIGEST_DIGITS, (name, item)
        assert set(form.measured_with) <= set(form.inputs) and len(set(form.inputs)) == len(form.inputs), name


def test_openvino_cpu_renders_again_from_its_json_without_measuring(tmp_path):
    """The page's figures come from its JSON unchanged; the header keeps the run that measured them
    (without an earlier rendering's note), and the page says what auto picks now."""
    from benchmarks import openvino_cpu

    results = json.loads((report.DOCS / "openvino-cpu.json").read_text())
    old = (report.DOCS / "openvino-cpu.md").read_text()
    measured = openvino_cpu._measured_line(report.DOCS / "openvino-cpu.md")
    assert measured.startswith("Measured ") and "Rendered again" not in measured
    page = openvino_cpu._page(results, measured=measured)
    assert page.data == results and page.path == openvino_cpu.PAGE
    text = report.render(page, "cmd", machine())
    assert text.splitlines()[2].startswith(measured + " Rendered again ")
    assert page.body.split("## What auto picks")[0].strip() in old  # the measured tables, as they were
    for kind, (picked, _) in openvino_cpu.CPU_CHOICE.items():
        assert f"| {kind} | {picked} |" in page.body
