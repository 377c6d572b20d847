"""Birkhoff where it is deployed: the ONNX files' size against the checkpoint, and what an
ONNX Runtime session on them costs (memory, start, speed) against the dense model.

    python -m benchmarks.run hyperlinear-deploy [--models demo vit_b] [--runs 3]

Files: every Birkhoff variant of the results page (and the dense original), from the same
bundle cache (.cache/benchmarks/<model>/, built on first use with the results page's
recipes; vit_b has seeded weights). The ONNX pair is encoder.onnx + decoder.onnx, split into
what its initializers hold: HyperLinear codes, HyperTensor codes (every other coded tensor;
beside them what those tensors would take as float16, the alternative), float32 left (row
scales, raw tensors, what the exporter folded) and the rest (graph, function bodies, int64).

Sessions: the original and birkhoff-reference bundles, one fresh process per row, the
astronaut encoded --runs times (benchmarks/ort_memory.py's child): plain onnxruntime on the
file (it folds the function bodies at start), runtime.Session() (decodes in numpy once) and
Session(low_memory=True) (decodes on every run). Ratios are to the original's Session()
row of the same run. Writes docs/benchmarks/hyperlinear-deploy.md.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx

from export.hyper_linear import is_hyper_linear
from plugins.hyperlinear import spec
from runtime.bundle import DECODER_FILE, ENCODER_FILE

from . import ort_memory
from .model_size import checkpoint_bytes
from .plans import demo_plan, vit_b_plan
from .report import CACHE, DOCS, Page, fmt, table
from .variants import ORIGINAL, build_variant

FILE_VARIANTS = (ORIGINAL, "birkhoff-reference", "birkhoff-scaled", "slimsam-77", "slimsam-77+birkhoff")
SESSION_VARIANTS = (ORIGINAL, "birkhoff-reference")
SESSION_SETTINGS = {"ort-defaults": "plain onnxruntime", "samedge": "Session()",
                    "samedge-low-memory": "Session(low_memory=True)"}


def add_arguments(parser) -> None:
    parser.add_argument("--models", nargs="+", default=["demo", "vit_b"], choices=["demo", "vit_b"])
    parser.add_argument("--runs", type=int, default=3, help="encoder runs per fresh process")


def composition(path: Path) -> Counter:
    """Bytes of one ONNX file by what they hold."""
    model = onnx.load(str(path))
    linear_codes = {n.input[1] for n in model.graph.node if is_hyper_linear(n)}
    tensor_nodes = [n for n in model.graph.node if n.domain == spec.DOMAIN and n.op_type == spec.TENSOR_OP_TYPE]
    tensor_codes = {n.input[0] for n in tensor_nodes}
    parts = Counter()
    for init in model.graph.initializer:
        size = len(init.raw_data)
        kind = ("HyperLinear codes" if init.name in linear_codes else "HyperTensor codes" if init.name in tensor_codes
                else "float32" if init.data_type == onnx.TensorProto.FLOAT else None)
        if kind:
            parts[kind] += size
    parts["other"] = path.stat().st_size - sum(parts.values())
    # What the HyperTensor-coded tensors would take as float16 (not part of the file's bytes).
    parts["as float16"] = sum(2 * int(np.prod(_shape(n))) for n in tensor_nodes)
    return parts


def _shape(node) -> list[int]:
    return next(list(a.ints) for a in node.attribute if a.name == "shape")


def _files_rows(model: str, built: dict) -> list[list]:
    rows = []
    for variant in FILE_VARIANTS:
        bundle = built[variant].bundle
        parts = composition(bundle / ENCODER_FILE) + composition(bundle / DECODER_FILE)
        pair = sum(v for k, v in parts.items() if k != "as float16")
        checkpoint = checkpoint_bytes(built[variant].checkpoint)
        rows.append([model, variant, fmt(checkpoint / 1e6, ".2f"), fmt(pair / 1e6, ".2f"), fmt(pair / checkpoint, ".2f") + "x",
                     *(fmt(parts[k] / 1e6, ".2f") for k in ("HyperLinear codes", "HyperTensor codes", "as float16",
                                                           "float32", "other"))])
    return rows


def _session_rows(model: str, built: dict, runs: int, results: dict) -> list[list]:
    for variant in SESSION_VARIANTS:
        for setting in SESSION_SETTINGS:
            results[f"{model} {variant} {setting}"] = ort_memory.in_fresh_process(built[variant].bundle, setting, runs)
    base = results[f"{model} {ORIGINAL} samedge"]
    base_peak, base_seconds = max(base["peaks"]), float(np.median(base["seconds"][1:] or base["seconds"]))
    rows = []
    for variant in SESSION_VARIANTS:
        for setting, label in SESSION_SETTINGS.items():
            result = results[f"{model} {variant} {setting}"]
            peak, seconds = max(result["peaks"]), float(np.median(result["seconds"][1:] or result["seconds"]))
            rows.append([model, variant, label, fmt(result["start"], ".2f"), fmt(seconds, ".3f"),
                         fmt(seconds / base_seconds, ".2f") + "x", fmt(peak / 2**30, ".2f"),
                         fmt(peak / base_peak, ".2f") + "x"])
    return rows


def measure(args) -> Page:
    files, sessions, results = [], [], {}
    for model in args.models:
        plan = demo_plan(quick=False) if model == "demo" else vit_b_plan(quick=False, work=CACHE)
        built = {}
        for variant in FILE_VARIANTS:  # in order: slimsam-77+birkhoff starts from slimsam-77
            built[variant] = build_variant(variant, plan.source, CACHE, built)
        files += _files_rows(model, built)
        sessions += _session_rows(model, built, args.runs, results)
    intro = ("Birkhoff codes travel in the ONNX files at the checkpoint's bit width (plugins/hyperlinear/spec.py), "
             "and every other coded tensor as a HyperTensor node, so the pair is about the checkpoint's size. "
             "ONNX Runtime: samedge's Session decodes the nodes once in numpy (runtime/decoded_graph.py) and runs "
             "the dense graph; low_memory keeps the codes and decodes on every run; plain onnxruntime folds the "
             "function bodies at session start.")
    body = ("## Files (MB)\n\n" + table(
        ["model", "variant", "checkpoint", "ONNX pair", "pair / checkpoint", "HyperLinear codes", "HyperTensor codes",
         "(those as float16)", "float32", "other"], files)
        + f"\n\n## ONNX Runtime CPU sessions (fresh process each; {args.runs} encoder runs; ratios to the original's "
        "Session())\n\n" + table(
            ["model", "variant", "opened by", "session start (s)", "encoder, median of runs 2.. (s)", "latency ratio",
             "peak RSS (GiB)", "peak ratio"], sessions))
    return Page(DOCS / "hyperlinear-deploy.md", "Birkhoff deployed: ONNX files and ONNX Runtime sessions", intro,
                body, data=results)
