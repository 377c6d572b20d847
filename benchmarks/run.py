"""Every benchmark page of samedge, from one command.

    python -m benchmarks.run [--quick] [--out docs/RESULTS.md] [--work DIR] [--fresh]   # the results page
    python -m benchmarks.run PAGE [options]        # one focused page in docs/benchmarks/
    python -m benchmarks.run PAGE --help           # what PAGE measures, and its options
    python -m benchmarks.run --check-stale         # exit 1 naming each page older than its inputs

Each page is measured by a small module of this package that returns its rows, and written
by report.write_page: atomically, under a header naming this command, the machine and
the date.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
from typing import NamedTuple

from .report import REPO, Unmeasurable, staleness, write_page


class Form(NamedTuple):
    module: str  # measures the page: add_arguments(parser) (where it has options) and measure(args)
    summary: str
    # What the page's figures and text describe (report.inputs_digest): its module, and the code or
    # values it states (a change to any of them makes the page stale until it is written again).
    inputs: tuple[str, ...] = ()

    @property
    def page(self) -> str:
        name = self.module.removeprefix("benchmarks.").replace("_", "-")
        return "docs/RESULTS.md" if name == "results" else f"docs/benchmarks/{name}.md"

    @property
    def stamped_inputs(self) -> tuple[str, ...]:
        return (self.module.replace(".", "/") + ".py", *self.inputs)


RESULTS = "results"
FORMS = {
    RESULTS: Form("benchmarks.results", "docs/RESULTS.md: every variant side by side (the default)"),
    "weight-error": Form("benchmarks.weight_error", "Birkhoff vs int8/int4 weight error; the UNIT_RMS sweep"),
    "rate-distortion": Form("benchmarks.rate_distortion", "Birkhoff settings: bits per weight vs weight error and mIoU"),
    "ort-memory": Form("benchmarks.ort_memory", "ONNX Runtime's session options and a long-lived Session's memory"),
    "hyperlinear-deploy": Form("benchmarks.hyperlinear_deploy", "Birkhoff ONNX files vs checkpoint; ORT sessions' memory"),
    "prompts-at-scale": Form("benchmarks.prompts_at_scale", "batch decoder vs single calls; segment-everything"),
    "openvino-cpu": Form("benchmarks.openvino_cpu", "OpenVINO vs ONNX Runtime on the CPU per bundle kind; auto's pick",
                         ("runtime.backends.choice:CPU_CHOICE",)),
    "session-open": Form("benchmarks.session_open", "what checking a bundle's hashes adds to opening it"),
    "slimsam-size": Form("benchmarks.slimsam_size", "SlimSAM widths, parameters and MACs from vit_b"),
    "slimsam-demo": Form("benchmarks.slimsam_demo", "SlimSAM-50 on the demo model, per stage and importance"),
    "slimsam-step-time": Form("benchmarks.slimsam_step_time", "SlimSAM's step time and the paper schedule's cost"),
    "tensorrt-files": Form("benchmarks.tensorrt_files", "the TensorRT-bound ONNX files run by ONNX Runtime"),
    "hyperlinear-kernel": Form("benchmarks.hyperlinear_kernel", "the HyperLinear CUDA kernel vs cuBLAS (GPU)"),
}


def _pages() -> str:
    return "pages:\n" + "\n".join(f"  {name:<20} {form.summary}" for name, form in FORMS.items())


def stale_pages() -> dict[str, str]:
    """{page: why} for every page that no longer describes its inputs (report.staleness)."""
    found = {form.page: staleness(REPO / form.page, form.stamped_inputs) for form in FORMS.values()}
    return {page: why for page, why in found.items() if why}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv == ["--check-stale"]:
        stale = stale_pages()
        for page, why in stale.items():
            print(f"stale: {page}: {why}; regenerate it: python -m benchmarks.run "
                  f"{next(name for name, form in FORMS.items() if form.page == page)}")
        print(f"{len(FORMS) - len(stale)} of {len(FORMS)} pages describe their inputs as they are now")
        return 1 if stale else 0
    name = argv.pop(0) if argv and not argv[0].startswith("-") else RESULTS
    if name not in FORMS:
        print(f"unknown page {name!r}\n{_pages()}", file=sys.stderr)
        return 2
    # Imported on use: each page needs its own packages (hyperlinear-kernel a GPU machine's torch, not onnx).
    module = importlib.import_module(FORMS[name].module)
    prog = "python -m benchmarks.run" + ("" if name == RESULTS else f" {name}")
    parser = argparse.ArgumentParser(prog=prog, description=module.__doc__, epilog=_pages() if name == RESULTS else None,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    if hasattr(module, "add_arguments"):  # a page measured one fixed way has no options
        module.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        page = module.measure(args)
    except Unmeasurable as why:
        print(why, file=sys.stderr)
        return 2
    if page is not None:  # None: the form wrote what was asked elsewhere (hyperlinear-kernel --no-page)
        if page.path.resolve() == (REPO / FORMS[name].page).resolve():  # a page elsewhere (a test's) vouches for nothing
            page.inputs = FORMS[name].stamped_inputs
        write_page(page, " ".join([prog, *map(shlex.quote, argv)]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
