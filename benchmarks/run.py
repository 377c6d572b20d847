"""Every benchmark page of samedge, from one command.

    python -m benchmarks.run [--quick] [--out docs/RESULTS.md] [--work DIR] [--fresh]   # the results page
    python -m benchmarks.run PAGE [options]        # one focused page in docs/benchmarks/
    python -m benchmarks.run PAGE --help           # what PAGE measures, and its options
    python -m benchmarks.run --check-stale         # exit 1 naming each page older than its inputs, and which
    python -m benchmarks.run --vouch PAGE ...      # record a checked page's inputs as they are now

Each page is measured by a small module of this package that returns its rows, and written
by report.write_page: atomically, under a header naming this command, the machine, the
date, and the SHA-256 of each of the page's inputs (FORMS below), which --check-stale
compares with the code as it is. A page is current only while every input is as its header
records: rewrite it (its command), or, where a change to an input leaves the page true
(checked by a person, against the diff), --vouch for it: the header then says the digests
were recorded by hand and not re-measured.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import shlex
import sys
from typing import NamedTuple

from . import report
from .report import REPO, Unmeasurable, staleness, write_page

# What the figures of the pages that run bundles were measured with: export's graph revision,
# raised whenever the exported files change (the benchmark cache rebuilds its bundles then).
GRAPH = "export.onnx_export:GRAPH_REVISION"
DEMO_WEIGHTS = "compress/weights/demo_sam.safetensors"
BIRKHOFF_CODEC = ("compress/birkhoff/codec.py", "compress/birkhoff/scaled.py", "compress/birkhoff/model.py",
                  "compress/birkhoff/storage.py", "compress/birkhoff/packing.py")
SLIMSAM = tuple(f"compress/slimsam/{name}.py" for name in ("pipeline", "prune", "attention", "importance", "distill"))
ORT_SESSION = ("runtime.backends.ort_backend:_session", "runtime.backends.ort_backend:return_freed_tensors")


class Form(NamedTuple):
    module: str  # measures the page: add_arguments(parser) (where it has options) and measure(args)
    summary: str
    # The page's inputs besides its module (report.input_digest: repo-relative files, "module:NAME"
    # values and functions): what its figures were measured with and what its text states, as
    # narrowly as that can be named; a change to any of them makes the page stale until it is
    # written again. `described`: what only its text states (a page rendered again from its JSON
    # brings them up to date); `measured_with`: what its figures depend on (only a measurement does).
    described: tuple[str, ...] = ()
    measured_with: tuple[str, ...] = ()

    @property
    def page(self) -> str:
        name = self.module.removeprefix("benchmarks.").replace("_", "-")
        return "docs/RESULTS.md" if name == "results" else f"docs/benchmarks/{name}.md"

    @property
    def inputs(self) -> tuple[str, ...]:
        return (self.module.replace(".", "/") + ".py", *self.described, *self.measured_with)


RESULTS = "results"
FORMS = {
    RESULTS: Form("benchmarks.results", "docs/RESULTS.md: every variant side by side (the default)", measured_with=(
        *(f"benchmarks/{name}.py" for name in ("results_page", "plans", "variants", "measure", "model_size",
                                               "fidelity", "latency", "peak_memory", "plots", "published")),
        "export/bundle_size.py", "export/quantize.py", *BIRKHOFF_CODEC, *SLIMSAM, GRAPH, DEMO_WEIGHTS)),
    "weight-error": Form("benchmarks.weight_error", "Birkhoff vs int8/int4 weight error; the UNIT_RMS sweep",
                         measured_with=(*BIRKHOFF_CODEC, "export/quantize.py", DEMO_WEIGHTS)),
    "rate-distortion": Form("benchmarks.rate_distortion", "Birkhoff settings: bits per weight vs weight error and mIoU",
                            measured_with=(*BIRKHOFF_CODEC, "compress/birkhoff/hyper_linear.py", "benchmarks/fidelity.py",
                                           "compress/demo/evaluate.py", DEMO_WEIGHTS)),
    "ort-memory": Form("benchmarks.ort_memory", "ONNX Runtime's session options and a long-lived Session's memory",
                       described=ORT_SESSION,
                       measured_with=("benchmarks.peak_memory:peak_bytes", "benchmarks.peak_memory:in_fresh_process",
                                      "benchmarks.session_open:bundle_for", GRAPH)),
    "hyperlinear-deploy": Form("benchmarks.hyperlinear_deploy", "Birkhoff ONNX files vs checkpoint; ORT sessions' memory",
                               described=(*ORT_SESSION, "runtime/decoded_graph.py"),
                               measured_with=("benchmarks/ort_memory.py", "benchmarks.peak_memory:peak_bytes",
                                              "benchmarks.peak_memory:in_fresh_process", "benchmarks/variants.py",
                                              "benchmarks/plans.py", "export/hyper_linear.py",
                                              "plugins/hyperlinear/spec.py", *BIRKHOFF_CODEC, GRAPH, DEMO_WEIGHTS)),
    "prompts-at-scale": Form("benchmarks.prompts_at_scale", "batch decoder vs single calls; segment-everything",
                             described=("runtime/everything.py", "runtime.session:Session.predict_batch"),
                             measured_with=("runtime/amg.py", "runtime/everything_parity.py",
                                            "benchmarks.session_open:bundle_for", GRAPH, DEMO_WEIGHTS)),
    "openvino-cpu": Form("benchmarks.openvino_cpu", "OpenVINO vs ONNX Runtime on the CPU per bundle kind; auto's pick",
                         described=("runtime.backends.choice:CPU_CHOICE",),
                         measured_with=("runtime/backends/openvino_backend.py", "benchmarks.peak_memory:peak_bytes",
                                        "benchmarks.peak_memory:child", "benchmarks/latency.py",
                                        "benchmarks/variants.py", "benchmarks/plans.py", GRAPH, DEMO_WEIGHTS)),
    "sam2": Form("benchmarks.sam2", "SAM 2.1 hiera-t/b+: torch vs ONNX Runtime vs OpenVINO; dense/int8/Birkhoff sizes",
                 measured_with=("benchmarks.peak_memory:peak_bytes", "benchmarks.peak_memory:child",
                                "benchmarks.latency:interleaved", "benchmarks/variants.py", "compress/families/sam2.py",
                                "compress.families.registry:NumpyPrompts", "runtime/backends/openvino_backend.py",
                                "export/quantize.py", *BIRKHOFF_CODEC, GRAPH)),
    "zoo": Form("benchmarks.zoo", "the SAM zoo, one row per family: sizes, encoder latency, Birkhoff vs dense",
                measured_with=("benchmarks.sam2:_engines", "benchmarks.sam2:_latency", "benchmarks.sam2:_build",
                               "benchmarks/variants.py", "benchmarks.latency:interleaved",
                               "compress/families/mobile_sam.py", "compress/families/sam_hq.py",
                               "compress/families/efficientvit_sam.py", "compress/families/efficient_tam.py",
                               "compress/families/edgetam.py", "compress/families/sam2_forks.py",
                               "runtime/backends/openvino_backend.py", "export/quantize.py", *BIRKHOFF_CODEC, GRAPH)),
    "slimsam2": Form("benchmarks.slimsam2", "SlimSAM on SAM 2's Hiera: widths, parameters, MACs, latency, agreement",
                     measured_with=(*SLIMSAM, "compress/slimsam/hiera.py", "compress/slimsam/targets.py",
                                    "compress/families/sam2.py", "compress/families/sam2_widths.py",
                                    "benchmarks/fidelity.py", "benchmarks.model_size:encoder_macs", GRAPH)),
    "cpu-attention": Form("benchmarks.cpu_attention", "attention on the CPU: plain vs fused graphs, head-dim vs "
                          "whole-head SlimSAM-77, against the machine's GEMM limit",
                          measured_with=("compress/families/fused_attention.py", "compress/families/sam_attention.py",
                                         "compress/families/sam2_memory.py", "benchmarks.model_size:encoder_macs",
                                         GRAPH)),
    "video": Form("benchmarks.video", "SAM 2.1 video tracking: torch vs ONNX Runtime vs OpenVINO per frame; peak RSS",
                  measured_with=("runtime/video.py", "runtime/tracker.py", "compress/families/sam2_memory.py",
                                 "compress/families/sam2.py", "runtime/backends/openvino_backend.py",
                                 "runtime/backends/ort_backend.py", "benchmarks/latency.py",
                                 "benchmarks/peak_memory.py", GRAPH)),
    "serving": Form("benchmarks.serving", "Triton serving: requests/s and p50/p99 for 1/4/16 clients vs a local Session",
                    measured_with=("runtime/serving/triton_model.py", "runtime/serving/bridge.py", "runtime/serving/server.py",
                                   "runtime/backends/triton_backend.py", "export/triton.py",
                                   "benchmarks.session_open:bundle_for", GRAPH, DEMO_WEIGHTS)),
    "labelling": Form("benchmarks.labelling", "runtime.label: images/s in one process and on Ray Data, 1 and 2 workers",
                      measured_with=("runtime/label.py", "runtime/everything.py", "compress.demo.shapes:make_sample",
                                     "benchmarks.session_open:bundle_for", GRAPH, DEMO_WEIGHTS)),
    "session-open": Form("benchmarks.session_open", "what checking a bundle's hashes adds to opening it",
                         described=("runtime.bundle:Bundle.verify", "runtime.session:Session.__init__"),
                         measured_with=(GRAPH, DEMO_WEIGHTS)),
    "slimsam-size": Form("benchmarks.slimsam_size", "SlimSAM widths, parameters and MACs from vit_b", measured_with=(
        "benchmarks.model_size:leaf_parameters", "benchmarks.model_size:encoder_macs",
        "benchmarks.model_size:decoder_macs", "compress/slimsam/prune.py", "compress/slimsam/attention.py",
        "compress/slimsam/importance.py", "compress.slimsam.pipeline:config_for",
        "compress.slimsam.pipeline:with_encoder", "compress/architectures.py")),
    "slimsam-demo": Form("benchmarks.slimsam_demo", "SlimSAM-50 on the demo model, per stage and importance",
                         measured_with=(*SLIMSAM, "compress/slimsam/images.py", "compress/slimsam/settings.py",
                                        "compress/demo/evaluate.py", "compress/demo/shapes.py", DEMO_WEIGHTS)),
    "slimsam-step-time": Form("benchmarks.slimsam_step_time", "SlimSAM's step time and the paper schedule's cost",
                              measured_with=("compress/slimsam/distill.py", "compress/slimsam/attention.py",
                                             "benchmarks.model_size:encoder_counts", "compress/architectures.py")),
    "tensorrt-files": Form("benchmarks.tensorrt_files", "the TensorRT-bound ONNX files run by ONNX Runtime",
                           measured_with=("export/tensorrt_onnx.py", "runtime/masks.py", "runtime.parity:compare",
                                          "runtime.parity:Thresholds", "runtime.parity:standard_images",
                                          *BIRKHOFF_CODEC, GRAPH, DEMO_WEIGHTS)),
    "hyperlinear-kernel": Form("benchmarks.hyperlinear_kernel", "the HyperLinear CUDA kernel vs cuBLAS (GPU)",
                               measured_with=("plugins/hyperlinear/hyperlinear_kernel.cu",
                                              "plugins/hyperlinear/hyperlinear_kernel.cuh",
                                              "plugins/hyperlinear/kernel_checks.py", "scripts/gpu_check.sh")),
}


def _pages() -> str:
    return "pages:\n" + "\n".join(f"  {name:<20} {form.summary}" for name, form in FORMS.items())


def stale_pages() -> dict[str, str]:
    """{page: why} for every page that no longer describes its inputs (report.staleness)."""
    found = {form.page: staleness(REPO / form.page, form.inputs) for form in FORMS.values()}
    return {page: why for page, why in found.items() if why}


def check_stale() -> int:
    """Print each stale page with the inputs that changed; 1 if any page is stale, else 0."""
    stale = stale_pages()
    for name, form in FORMS.items():
        if form.page in stale:
            print(f"stale: {form.page}: {stale[form.page]}; regenerate it: python -m benchmarks.run {name}")
    print(f"{len(FORMS) - len(stale)} of {len(FORMS)} pages describe their inputs as they are now")
    return 1 if stale else 0


VOUCHED = " recorded {date} by hand on the page as it was, checked against the code, not re-measured"


def vouch(names: list[str]) -> int:
    """Record the current digests of each named page's inputs in its header, as checked by hand
    (the page is not rewritten: its figures and text stay as measured). For a page that a person
    has compared with every changed input and found still true; say what was checked in the commit."""
    unknown = [name for name in names if name not in FORMS]
    if unknown or not names:
        print(f"--vouch takes page names: {', '.join(unknown) or 'none given'}\n{_pages()}", file=sys.stderr)
        return 2
    for name in names:
        form = FORMS[name]
        path = REPO / form.page
        why = staleness(path, form.inputs)
        if why is None:
            print(f"{form.page}: current already")
            continue
        note = VOUCHED.format(date=datetime.date.today().isoformat())
        report.record_inputs(path, {item: report.input_digest(item) for item in form.inputs}, note)
        print(f"{form.page}: inputs recorded as they are now (was: {why})")
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv == ["--check-stale"]:
        return check_stale()
    if argv[:1] == ["--vouch"]:
        return vouch(argv[1:])
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
            page.inputs, page.measured_with = FORMS[name].inputs, FORMS[name].measured_with
        write_page(page, " ".join([prog, *map(shlex.quote, argv)]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
