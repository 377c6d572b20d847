"""docs/RESULTS.md from one run's results: our tables, the machine, then the published figures."""

from __future__ import annotations

import os
from pathlib import Path

from .plots import LATENCY, SIZE_VS_FIDELITY
from .published import published_table
from .report import Page, count, megabytes, table
from .variants import ORIGINAL

HEADLINE = "slimsam-77+birkhoff"
SIZE_LIMIT = 8_000_000  # the bound for slimsam-77+birkhoff from vit_b, in bytes


class Notes:
    """Why-empty reasons as numbered notes, so a long reason does not fill every cell."""

    def __init__(self):
        self.reasons: list[str] = []

    def cell(self, value, render) -> str:
        if isinstance(value, str):
            if value in ("-", "reference"):
                return value
            if value not in self.reasons:
                self.reasons.append(value)
            return f"n/a [{self.reasons.index(value) + 1}]"
        return "-" if value is None else render(value)

    def text(self) -> str:
        return "\n".join(f"{i + 1}. {reason}" for i, reason in enumerate(self.reasons))


def _duration(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1e3:.1f} ms"


def _latency_cell(value, part: str):
    return f"{_duration(value[f'{part}_s'])} ({value[f'{part}_ratio']:.2f}x)" if value[f"{part}_ratio"] is not None \
        else _duration(value[f"{part}_s"])


def _row_cells(row: dict, notes: Notes, columns) -> list[str]:
    if "not_built" in row:
        return [notes.cell(row["not_built"], str)] * len(columns)
    return [notes.cell(row.get(key, "not measured"), render) for key, render in columns]


def size_table(model: dict, notes: Notes) -> str:
    columns = [("params", count), ("macs_linear_conv", count), ("macs_all", count), ("onnx_bytes", megabytes),
               ("onnx_ratio", lambda v: f"{v:.2f}x"), ("checkpoint_bytes", megabytes),
               ("checkpoint_ratio", lambda v: f"{v:.2f}x"), ("compression_seconds", lambda v: f"{v:.1f}"),
               ("bundle_bytes", megabytes), ("bundle_weights_ratio", lambda v: f"{v:.2f}x")]
    headers = ["variant", "encoder params", "encoder MACs (Linear+Conv)", "encoder MACs (all)", "ONNX MB",
               "ONNX ratio", "checkpoint MB", "checkpoint ratio", "compression s", "bundle MB",
               "bundle / its weights"]
    return table(headers, [[v] + _row_cells(row, notes, columns) for v, row in model["rows"].items()])


def fidelity_table(model: dict, notes: Notes) -> str:
    base = model["rows"][ORIGINAL]
    columns, headers = [], ["variant"]
    if "ground-truth" in model["fidelity"]:
        for key, name in (("point_miou", "one point"), ("box_miou", "box")):
            columns.append((key, lambda v, k=key: f"{v:.4f} ({(v - base[k]) * 100:+.2f})"))
            headers.append(f"{name} mIoU vs ground truth (delta, points)")
    if "agreement" in model["fidelity"]:
        columns.append(("agreement_miou", lambda v: f"{v:.4f}"))
        headers.append("agreement mIoU with original")
    columns.append(("peak_rss_bytes", lambda v: f"{v / 2**20:.0f}"))
    headers.append("peak RSS MiB (ORT Session)")
    return table(headers, [[v] + _row_cells(row, notes, columns) for v, row in model["rows"].items()])


def latency_table(model: dict, backends: list[str], part: str, notes: Notes) -> str:
    rows = []
    for variant, row in model["rows"].items():
        if "not_built" in row:
            rows.append([variant] + [notes.cell(row["not_built"], str)] * len(backends))
            continue
        cells = row.get("latency", {})
        rows.append([variant] + [notes.cell(cells.get(b, "not measured"), lambda v: _latency_cell(v, part))
                                 for b in backends])
    return table(["variant"] + backends, rows)


def headline(models: list[dict]) -> list[str]:
    """The issue's three figures for slimsam-77+birkhoff from vit_b, or why they are missing."""
    model = next((m for m in models if m["key"] == "vit_b"), None)
    row = None if model is None else model["rows"].get(HEADLINE)
    if row is None or "not_built" in row:
        return [f"{HEADLINE} from vit_b was not measured in this run."]
    size = row["checkpoint_bytes"]
    verdict = "within" if size <= SIZE_LIMIT else "ABOVE"
    lines = [f"**{HEADLINE} from vit_b** (seeded weights; SlimSAM schedule below the vit_b tables):",
             f"- checkpoint {size / 1e6:.2f} MB ({verdict} the 8 MB aim; ratio {row['checkpoint_ratio']:.2f}x "
             f"against vit_b's {model['rows'][ORIGINAL]['checkpoint_bytes'] / 1e6:.1f} MB); the deployable ONNX "
             f"pair is {row['onnx_bytes'] / 1e6:.2f} MB ({row['onnx_bytes'] / size:.2f}x the checkpoint: the codes "
             "travel at the checkpoint's bit width, the other coded tensors as HyperTensor nodes)."]
    agreement = row.get("agreement_miou")
    lines.append(f"- agreement mIoU with vit_b's masks on {len(model['agreement_photos'])} photograph(s): "
                 + (f"{agreement:.4f}" if isinstance(agreement, float) else str(agreement)))
    cell = row.get("latency", {}).get("ONNX Runtime CPU")
    if isinstance(cell, dict):
        lines.append(f"- ONNX Runtime CPU latency vs vit_b: encoder {cell['encoder_ratio']:.2f}x "
                     f"({_duration(cell['encoder_s'])}), decoder {cell['decoder_ratio']:.2f}x "
                     f"(median of {model['repeats']} run(s) after warm-up).")
    if size > SIZE_LIMIT:
        lines.append("- Why above 8 MB: the prompt encoder and mask decoder (about 4M parameters) are not pruned "
                     "by SlimSAM, and Birkhoff keeps tensors under 10 elements and fall-backs raw.")
    return lines


def model_section(model: dict, backends: list[str], notes: Notes) -> list[str]:
    fidelity = []
    if "ground-truth" in model["fidelity"]:
        fidelity.append(f"ground truth: {model['ground_truth_count']} held-out synthetic images "
                        "(compress.demo.evaluate; one point: best of 3 masks, box: single mask)")
    if "agreement" in model["fidelity"]:
        fidelity.append(f"agreement: IoU of each mask with the original's for the same prompt, on "
                        f"{', '.join(model['agreement_photos'])} (5 prompts each: point, point single-mask, "
                        "fg + bg points, box, box + point), averaged")
    return [
        f"## {model['label']}", "",
        f"Measured in {model['seconds'] / 60:.1f} min of this run. Fidelity: {'; '.join(fidelity)}.", "",
        f"{model['schedule']}", "",
        "### Size, compute, compression", "", size_table(model, notes), "",
        "### Fidelity and memory", "", fidelity_table(model, notes), "",
        f"### Encoder latency (median of {model['repeats']} interleaved run(s) after warm-up; ratio to original)", "",
        latency_table(model, backends, "encoder", notes), "",
        "### Decoder latency (one point; ratio to original)", "", latency_table(model, backends, "decoder", notes), "",
    ]


def machine_section(results: dict) -> list[str]:
    """What the header's machine line leaves out: how the run went, and the GPU columns."""
    return [
        "## Machine", "",
        f"- the whole run took {results['seconds'] / 60:.1f} min ({results['cache_note']})",
        "- the machine in the header is shared with other jobs, so absolute times are noisy (hence the "
        "interleaving and the ratios)",
        f"- GPU: {results['machine']['gpu'] or 'none (every GPU column says so)'}; {results['gpu_note']}",
        "- every figure in the tables above was measured on this machine in this run, except compression "
        "times of bundles reused from the cache, measured when they were built (dates in the run's results.json)",
    ]


def render(results: dict, out: Path, png_folder: Path) -> Page:
    """The page for `out`, its plots in `png_folder`."""
    notes = Notes()
    backends = results["backends"]
    models = results["models"]
    rel = os.path.relpath(png_folder, out.parent)
    lines = headline(models) + [""]
    lines += ["How to read:",
              "- every ratio is against the original model measured in the same run, same backend (original = 1.00x);",
              "- params and MACs are the image encoder's, from the architecture (a HyperLinear counts as the Linear it "
              "stands for; int8/int4 keep the fp32 graph); MACs (Linear+Conv) is the published convention "
              "(window padding included), MACs (all) adds attention's matmuls and relative positions;",
              "- ONNX MB: encoder.onnx + decoder.onnx (decoder_single.onnx is an optional alternative); checkpoint: "
              "the safetensors file torch loads; compression s: wall time of the compression step (export excluded; "
              "slimsam-77+birkhoff = its pruning + Birkhoff);",
              f"- peak RSS: the peak resident set of a fresh process that opens a runtime.Session (ONNX Runtime "
              f"CPU), runs set_image on astronaut and one point prompt, minus nothing (interpreter, numpy, "
              f"onnxruntime and the photo alone take {results['memory_floor_bytes'] / 2**20:.0f} MiB). Read from "
              "VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forked parent, this benchmark;",
              "- latency: encoder on astronaut preprocessed, decoder on one point; runs interleaved across variants.",
              "", f"![size vs fidelity]({rel}/{SIZE_VS_FIDELITY})", "", f"![latency]({rel}/{LATENCY})", ""]
    for model in models:
        lines += model_section(model, backends, notes)
    lines += ["## Why cells are empty", "", notes.text(), ""]
    lines += machine_section(results) + [""]
    lines += ["## Published figures (theirs, not measured here)", "",
              "Other hardware, data and metrics: not comparable number for number with the tables above.", "",
              published_table(), ""]
    return Page(out, "Results: the original model and every variant, side by side",
                "Nothing on this page is typed by hand. Published figures of others are in their own table at the end.",
                "\n".join(lines))
