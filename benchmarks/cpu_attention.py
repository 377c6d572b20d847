"""Where CPU time goes in attention: plain vs fused graphs, head-dim vs whole-head SlimSAM, against the machine's limit.

    python -m benchmarks.run cpu-attention                 # vit_b, its SlimSAM-77 shapes, hiera-t, memory attention
    python -m benchmarks.run cpu-attention --quick         # the demo model and hiera-t at 256 px: checks the form

Each model is exported twice, plain and fused (`export.build --attention`, compress/families/fused_attention.py),
each export in its own child process (a vit_b export holds several GB; the child returns it on exit), and the
files are timed on ONNX Runtime and OpenVINO (f32), opened as samedge's backends open them, all four engines of a model interleaved, so the ratios of one
row come from the same minutes. Latency depends on the shapes alone, so every model has seeded weights: vit_b's
SlimSAM-77 rows are SlimSAM's published widths (embed 168, q/k/v 168, MLP 696) with 12 heads of 14 (SlimSAM's
head-dim pruning) or 3 heads of 56 (whole heads, `--compress slimsam-77-heads`). The machine's limit: the model's
MACs (Linear and Conv, plus attention's two matmuls and relative positions) at the fastest fp32 GEMM rate measured
in this run (a 2048 x 2048 x 2048 MatMul on each engine). The memory attention row is SAM 2.1 hiera-t's
memory_attention.onnx with the memory full for one object (7 frames of 64 x 64 tokens, 16 pointers of 4 tokens):
with the encoder it is most of a tracked frame (docs/benchmarks/video.md has the loop itself).
Writes docs/benchmarks/cpu-attention.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .report import DOCS, Page, table

FORMS = ("plain", "fused")
ENGINES = ("onnxruntime", "openvino")
MEMORY_FRAMES, POINTERS = 7, 16  # SAM 2.1's num_maskmem and max_obj_ptrs_in_encoder
FULL = ("vit_b", "vit_b-slimsam-77", "vit_b-slimsam-77-heads", "sam2.1_hiera_t", "sam2.1_hiera_t:memory")
QUICK = ("demo", "sam2.1_hiera_t_256", "sam2.1_hiera_t_256:memory")


# --- the child: one model, one form, one ONNX file, and its MACs ------------------------------------------------

def _sam1_config(name: str):
    from compress.architectures import get_config

    if name == "demo" or name == "vit_b":
        return get_config(name)
    base = get_config("vit_b")
    heads = 3 if name.endswith("-heads") else 12  # SlimSAM-77's 168 q/k/v channels as 3 x 56 or 12 x 14
    return base.replace(name=name, encoder_embed_dim=168, encoder_num_heads=heads, encoder_mlp_dims=(696,) * 12)


@contextlib.contextmanager
def _counting_attention(counter: list):
    """F.scaled_dot_product_attention counted (2 x L x S x d per head) while open: Hiera's and the memory
    attention's matmuls, which the Linear/Conv hooks of benchmarks/model_size.py do not see."""
    import torch.nn.functional as F

    original = F.scaled_dot_product_attention

    def counted(q, k, v, *args, **kwargs):
        counter[0] += 2 * q.shape[:-2].numel() * q.shape[-2] * k.shape[-2] * q.shape[-1]
        return original(q, k, v, *args, **kwargs)

    F.scaled_dot_product_attention = counted
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


def export_child(name: str, form: str, out: Path) -> dict:
    """Export `name`'s encoder (or, for 'TYPE:memory', SAM 2's memory attention) in `form` to `out`;
    returns its MACs."""
    import torch

    from compress import build_sam
    from compress.families import get_family
    from compress.families.fused_attention import attention_form
    from compress.families.sam_pieces import encoder_piece
    from export.onnx_export import export_piece

    from .model_size import encoder_macs, layer_macs

    model_type, _, part = name.partition(":")
    if model_type.startswith("sam2"):
        model = get_family("sam2").seeded(model_type, seed=0)
        piece = next(p for p in get_family("sam2").pieces(model)
                     if p.file == ("memory_attention.onnx" if part == "memory" else "encoder.onnx"))
        example = piece.example
        if part == "memory":  # the memory full for one object
            grid = (model.image_size // 16) ** 2
            sizes = {"num_spatial_tokens": MEMORY_FRAMES * grid, "num_ptr_tokens": POINTERS * 4}
            example = tuple(torch.zeros([sizes.get(piece.dynamic_axes.get(n, {}).get(0), t.shape[0]), *t.shape[1:]])
                            for n, t in zip(piece.input_names, piece.example))
        attention = [0]
        with _counting_attention(attention):
            macs = {"linear_conv": layer_macs(piece.module, example)}
        macs["all"] = macs["linear_conv"] + attention[0]
        shapes = {n: list(t.shape) for n, t in zip(piece.input_names, example)}
    else:
        model = build_sam(_sam1_config(model_type), seed=0).eval()
        piece = encoder_piece(model)
        linear_conv, every = encoder_macs(model.image_encoder)
        macs = {"linear_conv": linear_conv, "all": every}
        shapes = {n: list(t.shape) for n, t in zip(piece.input_names, piece.example)}
    with attention_form(form):
        export_piece(piece, out)
    return {"macs": macs, "shapes": shapes, "heads": getattr(getattr(model, "config", None), "encoder_num_heads", None)}


def _export_in_child(name: str, form: str, out: Path) -> dict:
    record = out.with_suffix(".json")
    command = [sys.executable, "-m", "benchmarks.cpu_attention", "export", name, form, str(out)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"exporting {name} ({form}) failed in its child process (exit {done.returncode}):\n"
                           + done.stderr[-3000:])
    return json.loads(record.read_text())


# --- the parent: engines, interleaved timing, the machine's GEMM rate -------------------------------------------

def _engines(path: Path):
    """ONNX Runtime and OpenVINO sessions opened as samedge's backends open them."""
    import openvino as ov

    from runtime.backends.ort_backend import _session

    session = _session(path, ["CPUExecutionProvider"], coded=False)
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}  # runtime/backends/openvino_backend.py
    request = ov.Core().compile_model(str(path), "CPU", config).create_infer_request()
    return {"onnxruntime": lambda feeds: session.run(None, feeds), "openvino": lambda feeds: request.infer(feeds)}


def _gemm_rate(repeats: int) -> dict:
    """MACs per second of a 2048^3 fp32 MatMul on each engine (the best of `repeats`)."""
    import onnx
    from onnx import TensorProto, helper

    size = 2048
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, [size, size]) for n in "ab"],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [size, size])])
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "gemm.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
        engines = _engines(path)
        rng = np.random.default_rng(0)
        feeds = {n: rng.standard_normal((size, size), dtype=np.float32) for n in "ab"}
        rates = {}
        for engine, run in engines.items():
            run(feeds)
            best = min(_timed(run, feeds) for _ in range(max(3, repeats)))
            rates[engine] = size ** 3 / best
    return rates


def _timed(run, feeds) -> float:
    began = time.perf_counter()
    run(feeds)
    return time.perf_counter() - began


def _feeds(shapes: dict) -> dict:
    rng = np.random.default_rng(0)
    return {name: rng.standard_normal(shape, dtype=np.float32) for name, shape in shapes.items()}


def measure_model(name: str, work: Path, repeats: int) -> dict:
    exported = {form: _export_in_child(name, form, work / f"{name.replace(':', '-')}-{form}.onnx") for form in FORMS}
    feeds = _feeds(exported["plain"]["shapes"])
    runs = {(form, engine): run for form in FORMS
            for engine, run in _engines(work / f"{name.replace(':', '-')}-{form}.onnx").items()}
    outputs = {key: run(feeds) for key, run in runs.items()}  # warm-up, and the answers compared below
    reference = outputs[("plain", "onnxruntime")]
    first = reference[0] if isinstance(reference, (list, tuple)) else reference
    differences = {}
    for key, out in outputs.items():
        value = out[0] if isinstance(out, (list, tuple)) else next(iter(out.values()))
        differences["/".join(key)] = float(np.abs(np.asarray(value) - first).max() / max(1.0, np.abs(first).max()))
    times = {key: [] for key in runs}
    for _ in range(repeats):
        for key, run in runs.items():
            times[key].append(_timed(run, feeds))
    return {"name": name, "macs": exported["plain"]["macs"], "heads": exported["plain"]["heads"],
            "seconds": {"/".join(key): float(np.median(t)) for key, t in times.items()},
            "relative_difference": differences}


# --- the page ----------------------------------------------------------------------------------------------------

LABELS = {"vit_b": "vit_b", "vit_b-slimsam-77": "vit_b SlimSAM-77, 12 heads x 14",
          "vit_b-slimsam-77-heads": "vit_b SlimSAM-77, 3 heads x 56 (whole heads)",
          "sam2.1_hiera_t": "SAM 2.1 hiera-t encoder", "sam2.1_hiera_t:memory": "hiera-t memory attention, memory full",
          "demo": "demo", "sam2.1_hiera_t_256": "hiera-t 256 px encoder",
          "sam2.1_hiera_t_256:memory": "hiera-t 256 px memory attention, memory full"}


def _best(row: dict) -> tuple[str, float]:
    key = min(row["seconds"], key=row["seconds"].get)
    return key, row["seconds"][key]


def render(rows: list[dict], rate: dict) -> str:
    peak = max(rate.values())
    headers = ["model", "MACs (Linear+Conv)", "MACs (all)", "ORT plain s", "ORT fused s", "OV plain s", "OV fused s",
               "fastest", "limit s (MACs at peak)", "fastest / limit", "max relative difference from ORT plain"]
    body = []
    for r in rows:
        s = r["seconds"]
        key, best = _best(r)
        limit = r["macs"]["all"] / peak
        body.append([LABELS.get(r["name"], r["name"]), f"{r['macs']['linear_conv'] / 1e9:.1f}G",
                     f"{r['macs']['all'] / 1e9:.1f}G"]
                    + [f"{s[f'{form}/{engine}']:.3f}" for engine in ENGINES for form in FORMS]
                    + [key.replace("onnxruntime", "ORT").replace("openvino", "OV"), f"{limit:.3f}",
                       f"{best / limit:.2f}x", f"{max(r['relative_difference'].values()):.1e}"])
    text = table(headers, body)
    by_name = {r["name"]: r for r in rows}
    lines = ["Peak fp32 GEMM measured in this run: "
             + ", ".join(f"{engine} {value / 1e9:.1f} GMAC/s" for engine, value in rate.items()) + "."]
    base = by_name.get("vit_b")
    if base:
        for name in ("vit_b-slimsam-77", "vit_b-slimsam-77-heads"):
            if name not in by_name:
                continue
            r = by_name[name]
            for engine in ENGINES:
                ratio = min(base["seconds"][f"{f}/{engine}"] for f in FORMS) / min(
                    r["seconds"][f"{f}/{engine}"] for f in FORMS)
                lines.append(f"- {LABELS[name]} on {engine} (its faster form against vit_b's): {ratio:.1f}x faster "
                             "than vit_b.")
    return text + "\n\n" + "\n".join(lines)


def add_arguments(parser) -> None:
    parser.add_argument("--quick", action="store_true", help="the demo model and hiera-t at 256 px")
    parser.add_argument("--models", nargs="+", help=f"default: {' '.join(FULL)}")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--page", type=Path, default=DOCS / "cpu-attention.md", help=argparse.SUPPRESS)  # tests


def measure(args) -> Page:
    models = tuple(args.models or (QUICK if args.quick else FULL))
    began = time.perf_counter()
    rate = _gemm_rate(args.repeats)
    with tempfile.TemporaryDirectory() as work:
        rows = [measure_model(name, Path(work), args.repeats) for name in models]
    intro = (__doc__.split("\n\n", 2)[2].replace("\n", " ").strip()
             + f" This run: {args.repeats} interleaved runs per engine (median), {time.perf_counter() - began:.0f} s.")
    return Page(args.page, "Attention on the CPU: plain and fused graphs, head-dim and whole-head SlimSAM",
                intro, render(rows, rate), data={"models": list(models), "rows": rows, "gemm_rate": rate})


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "export":  # the child of _export_in_child
    _, _, model_name, attention, target = sys.argv
    from runtime.atomic import atomic_write

    result = export_child(model_name, attention, Path(target))
    atomic_write(Path(target).with_suffix(".json"), lambda tmp: Path(tmp).write_text(json.dumps(result)))
