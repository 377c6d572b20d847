"""The results page: the original model and every variant side by side (docs/RESULTS.md and its plots).

    python -m benchmarks.run [--quick] [--out docs/RESULTS.md] [--work .cache/benchmarks] [--fresh]

Builds (or takes from the work directory) the original model and every variant of the
bundled demo model and of the full-size vit_b architecture (seeded weights), then
measures sizes, MACs, fidelity, latency on every backend present and peak memory, all
in this one run, and writes the page and the PNGs next to it (docs/results/). --quick
finishes in under 10 minutes on a 2-core CPU from a cold cache: fewer repeats and
images, and on vit_b only the original, slimsam-77 and slimsam-77+birkhoff; every cell
it leaves out says why. See benchmarks/plans.py for what each form measures.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from . import latency, peak_memory
from .measure import measure_model
from .plans import plans
from .plots import write_plots
from .report import CACHE, REPO, Page, machine
from .results_page import render

DEFAULT_OUT = REPO / "docs" / "RESULTS.md"


def add_arguments(parser) -> None:
    parser.add_argument("--quick", action="store_true", help="the under-10-minutes form (see benchmarks/plans.py)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the page; PNGs go to results/ beside it")
    parser.add_argument("--work", type=Path, default=CACHE, help="cache of built bundles")
    parser.add_argument("--fresh", action="store_true", help="rebuild every bundle instead of reusing the cache")


def run_benchmark(kind: str, out: Path, work: Path, fresh: bool = False,
                  png_folder: Path | None = None) -> tuple[dict, Page]:
    """Measure every model of the `kind` plan ('quick', 'full' or 'tiny'); write the PNGs and
    results-<kind>.json (in `work`); return the results and the page for `out`."""
    began = time.perf_counter()
    model_plans = plans(kind, work)
    if fresh:
        for plan in model_plans:
            shutil.rmtree(work / plan.source.key, ignore_errors=True)
    kernel, gpu_note = latency.fused_kernel(work / "kernel")
    run_start = time.time()
    models = [measure_model(plan, work, kernel) for plan in model_plans]
    reused = sum(1 for m in models for b in m["built"].values()
                 if time.mktime(time.strptime(b["built_at"], "%Y-%m-%dT%H:%M:%S")) < run_start)
    results = {
        "kind": kind, "machine": machine(), "gpu_note": gpu_note,
        "backends": [spec.name for spec in latency.backends()],
        "memory_floor_bytes": peak_memory.measure(None), "models": models,
        "cache_note": "every bundle built in this run" if reused == 0 else
        f"{reused} bundle(s) reused from the cache in {work}; --fresh rebuilds them",
    }
    results["seconds"] = time.perf_counter() - began
    png_folder = png_folder or out.parent / "results"
    write_plots(models, results["backends"], png_folder)
    work.mkdir(parents=True, exist_ok=True)
    (work / f"results-{kind}.json").write_text(json.dumps(results, indent=2, default=str))
    return results, render(results, out, png_folder)


def measure(args) -> Page:
    results, page = run_benchmark("quick" if args.quick else "full", args.out, args.work, args.fresh)
    print(f"measured in {results['seconds'] / 60:.1f} min")
    return page
