"""Every measurement of one model's variants, in one process, into one table of rows.

A row holds a number per column, or a string saying why that cell is empty; ratios are
always against the original model's figure from this same run.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path

from tqdm import tqdm

from export.bundle_size import size_report

from . import fidelity, latency, model_size, peak_memory
from .plans import TIMED_NOT_IN_QUICK, ModelPlan
from .variants import DEFINITIONS, ORIGINAL, VARIANTS, Built, build_variant

ORT_CPU = "ONNX Runtime CPU"


def build_all(plan: ModelPlan, work: Path) -> dict[str, Built]:
    built: dict[str, Built] = {}
    for variant in tqdm(plan.variants, desc=f"build {plan.source.key}", unit="variant"):
        base = DEFINITIONS[variant].base
        if base and base not in built:
            raise ValueError(f"{variant} starts from {base}: list {base} before it")
        built[variant] = build_variant(variant, plan.source, work, built)
    return built


def _sizes(built: Built) -> dict:
    counts = model_size.encoder_counts(built.manifest["model"]["architecture"])
    bundle = size_report(built.bundle)  # the whole bundle against the weights it carries, stored once
    return {**counts, "onnx_bytes": model_size.onnx_bytes(built.bundle), "bundle_bytes": bundle["total_bytes"],
            "bundle_weights_ratio": bundle["ratio"],
            "checkpoint_bytes": model_size.checkpoint_bytes(built.checkpoint) or
            "n/a: ONNX-only (quantised ONNX files, no checkpoint)",
            "compression_seconds": built.compression_seconds if built.variant != ORIGINAL else "-"}


def _size_ratios(rows: dict) -> None:
    original = rows[ORIGINAL]
    for row in rows.values():
        for key in ("onnx", "checkpoint"):
            size = row.get(f"{key}_bytes")  # or why there is none, which the ratio inherits
            row[f"{key}_ratio"] = original[f"{key}_bytes"] / size if isinstance(size, int) else size


def _latency_rows(plan: ModelPlan, built: dict[str, Built], rows: dict, kernel) -> None:
    """Fills rows[v]['latency'][backend]; runs the agreement on the ONNX Runtime CPU sessions
    (their first encodes are then the warm-up the timing needs anyway)."""
    image = fidelity.photographs(plan.agreement_photos[:1])[plan.agreement_photos[0]]
    for spec in latency.backends():
        cells = {}
        runners = {}
        for variant in built:
            if spec.missing:
                cells[variant] = spec.missing
            elif spec.name not in plan.latency_backends:
                cells[variant] = TIMED_NOT_IN_QUICK
            else:
                opened = latency.open_runner(spec, built[variant], image, kernel)
                if isinstance(opened, str):
                    cells[variant] = opened
                else:
                    runners[variant] = opened
        if spec.name == ORT_CPU and "agreement" in plan.fidelity:
            _agreement(plan, runners, rows)
        if runners:
            cells.update(latency.with_ratios(latency.measure(runners, plan.repeats, desc=spec.name), ORIGINAL))
        for variant, cell in cells.items():
            rows[variant].setdefault("latency", {})[spec.name] = cell
        del runners
        gc.collect()  # one backend's sessions at a time: vit_b sessions are large


def _agreement(plan: ModelPlan, runners: dict, rows: dict) -> None:
    if ORIGINAL not in runners:
        raise ValueError("agreement needs the original model on ONNX Runtime CPU")
    candidates = {v: r.session for v, r in runners.items() if v != ORIGINAL}
    results = fidelity.agreement(runners[ORIGINAL].session, candidates,
                                 fidelity.photographs(plan.agreement_photos))
    for variant, result in results.items():
        rows[variant]["agreement_miou"] = result["miou"]
    rows[ORIGINAL]["agreement_miou"] = "reference"
    for runner in runners.values():
        runner.adopt_session_embedding()


def measure_model(plan: ModelPlan, work: Path, kernel=None) -> dict:
    began = time.perf_counter()
    built = build_all(plan, work)
    rows = {variant: {} for variant in VARIANTS}
    for variant in VARIANTS:
        if variant not in built:
            rows[variant]["not_built"] = plan.not_built
    for variant in tqdm(built, desc="sizes", unit="variant", leave=False):
        rows[variant].update(_sizes(built[variant]))
    _size_ratios({v: rows[v] for v in built})
    if "ground-truth" in plan.fidelity:
        for variant in tqdm(built, desc="ground-truth mIoU", unit="variant", leave=False):
            rows[variant].update(fidelity.ground_truth(built[variant].bundle, plan.ground_truth_count))
    _latency_rows(plan, built, rows, kernel)
    peaks = peak_memory.measure_all({variant: b.bundle for variant, b in built.items()})
    for variant, peak in peaks.items():
        rows[variant]["peak_rss_bytes"] = peak
    return {"key": plan.source.key, "label": plan.label, "fidelity": list(plan.fidelity),
            "schedule": plan.schedule, "ground_truth_count": plan.ground_truth_count,
            "agreement_photos": list(plan.agreement_photos), "repeats": plan.repeats,
            "built": {v: {"bundle": str(b.bundle), "built_at": b.built_at, "build_seconds": b.build_seconds}
                      for v, b in built.items()},
            "rows": rows, "seconds": time.perf_counter() - began}
