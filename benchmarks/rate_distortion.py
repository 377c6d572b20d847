"""Rate-distortion of Birkhoff's settings: the authors', the scaled variant, samedge's
index-filling codebooks, the relative-error fall-back, and what entropy coding would save.

    python -m benchmarks.run rate-distortion [--models demo vit_b] [--points NAME ...] [--agreement]

Each point is one codec.Settings (and variant) run by compress_model on the whole model and
saved with save_compressed, as `python -m compress.birkhoff` does. Rate: bits per weight of
the saved checkpoint, 8 x file bytes / the model's weights (raw fall-backs, buffers and the
header included: the ratio's figure, 32 / ratio), and of the codes alone (code words and
row scales over the coded weights). Distortion:

- weight error, every model (no forward pass), over all encodable tensors (every parameter
  of 10 or more elements; a raw one adds no error): ||W - W'|| / ||W|| of them together
  (large-norm tensors weigh most), the size-weighted RMS of each tensor's own relative error
  (what each layer's output moves by, relative to itself), and the worst tensor's error
  relative to its bulk (codec.robust_relative_error);
- demo model: one-point and box mIoU against ground truth on the held-out synthetic shapes
  (benchmarks.fidelity.ground_truth, i.e. compress.demo.evaluate), run on the saved
  checkpoint with its HyperLinear layers made dense (the same F.linear on the same decoded
  weight: the same numbers, without decoding on every call);
- vit_b (seeded weights: no ground truth), with --agreement only: mIoU of each point's masks
  with the uncompressed model's on runtime.parity's photographs (benchmarks.fidelity.agreement,
  its prompts); torch on the CPU, about 13 s per photograph and point on 2 cores.

Entropy coding, a measurement only: the order-0 entropy of each tensor's indices (what a
per-tensor static entropy coder approaches, its tables not counted) against their fixed
width, and for the key points the stdlib's lzma on the indices as uint16. A table of
synthetic heavy-tailed tensors (Student-t, a few large outliers) shows what the fall-back
catches. Writes docs/benchmarks/rate-distortion.md, .json and .png beside it.
"""

from __future__ import annotations

import lzma
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from compress import build_sam, load_checkpoint, save_checkpoint, seeded_checkpoint
from compress.birkhoff import codec
from compress.birkhoff.hyper_linear import HyperLinear
from compress.birkhoff.model import MIN_ELEMENTS, SETTINGS_KEY, compress_model, encode_tensor, replace_module
from compress.birkhoff.storage import save_compressed
from compress.demo import DEFAULT_CHECKPOINT
from plugins.hyperlinear import reference
from runtime.reference import ReferencePredictor

from . import fidelity
from .report import CACHE, DOCS, Page, fmt, table

PAGE = DOCS / "rate-distortion.md"
MODELS = ("demo", "vit_b", "tiny")
AUTHORS = "authors"  # the authors' settings: the reference variant, without samedge's relative fall-back
DEFAULT = "samedge default"  # codec.DEFAULT_SETTINGS, where no other point has them
FAMILIES = {
    "authors": "the authors' codec (U in {1225, 1600}), target MAE or codebooks varied",
    "scaled": "scaled variant (units of each row's RMS), UNIT_RMS varied",
    "fill": "samedge's index-filling codebooks (fill_bits 8..13), target MAE varied",
    "scaled+fill": "scaled variant with index-filling codebooks",
    "fall-back": "relative-error fall-back (fallback_rel_rmse) on top",
}


@dataclass(frozen=True)
class Point:
    name: str
    family: str
    variant: str
    settings: codec.Settings
    key: bool = False  # lzma is measured on key points only (about a minute on vit_b)


def _points() -> list[Point]:
    def s(**changes):  # each family alone: no relative fall-back unless the point says so
        return codec.Settings(**{"fallback_rel_rmse": None, **changes})

    fill = (8, 13)
    points = [
        Point(AUTHORS, "authors", "reference", s(), key=True),
        Point("authors t=5e-4", "authors", "reference", s(target_mae=5e-4)),
        Point("authors t=2e-3", "authors", "reference", s(target_mae=2e-3)),
        Point("authors U=784,1225,1600", "authors", "reference", s(codebook_sizes=(784, 1225, 1600))),
        Point("authors U=2025", "authors", "reference", s(codebook_sizes=(2025,))),
    ]
    points += [Point(f"scaled u={unit:g}", "scaled", "scaled", s(unit_rms=unit), key=unit == codec.UNIT_RMS)
               for unit in (0.02, 0.03, 0.05, 0.07, 0.1)]
    points += [Point(f"fill t={target:g}", "fill", "reference", s(fill_bits=fill, target_mae=target),
                     key=target == 1e-3)
               for target in (5e-4, 7e-4, 1e-3, 1.5e-3, 2.5e-3)]
    points += [Point(f"fill t={target:g}", "fill", "reference", s(fill_bits=(5, 13), target_mae=target))
               for target in (4e-3, 6e-3)]  # fill_bits from 5: the coarse end, where mIoU starts to go
    points += [Point(f"scaled+fill u=0.03 t={target:g}", "scaled+fill", "scaled",
                     s(fill_bits=fill, target_mae=target)) for target in (7e-4, 1e-3, 1.5e-3)]
    points += [Point(f"authors + fall-back {limit:g}", "fall-back", "reference", s(fallback_rel_rmse=limit))
               for limit in (0.1, 0.2)]
    points += [Point("fill t=1e-3 + fall-back 0.2", "fall-back", "reference",
                     s(fill_bits=fill, target_mae=1e-3, fallback_rel_rmse=0.2))]
    default = codec.DEFAULT_SETTINGS
    if not any(p.variant == "reference" and p.settings == default for p in points):
        points.append(Point(DEFAULT, "fall-back" if default.fallback_rel_rmse else "fill", "reference", default,
                            key=True))
    return points


def default_point() -> str:
    """The name of the point that is samedge's default (the reference variant, codec.DEFAULT_SETTINGS)."""
    return next(p.name for p in POINTS.values() if p.variant == "reference" and p.settings == codec.DEFAULT_SETTINGS)


POINTS = {point.name: point for point in _points()}


def add_arguments(parser) -> None:
    parser.add_argument("--models", nargs="+", default=["demo", "vit_b"], choices=MODELS,
                        help="demo (mIoU and weight error), vit_b (seeded: weight error), tiny (tests)")
    parser.add_argument("--points", nargs="+", default=list(POINTS), choices=list(POINTS), metavar="POINT",
                        help=f"settings to measure (default: all): {', '.join(POINTS)}")
    parser.add_argument("--count", type=int, default=200, help="held-out synthetic images for the demo mIoU")
    parser.add_argument("--agreement", action="store_true",
                        help="vit_b (and tiny): agreement with the original on photographs "
                             "(vit_b: 13 s per photo and point on 2 cores)")
    parser.add_argument("--photos", nargs="+", default=["astronaut", "coffee", "chelsea"])
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for the mIoU runs (figures, not timings; 1 is fastest on a busy machine)")
    parser.add_argument("--out", type=Path, default=PAGE, help="the page (.json and .png beside it)")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--skip-synthetic", action="store_true", help="leave out the heavy-tailed tensors table")


# --- models -------------------------------------------------------------------------------

def source_checkpoint(model: str, work: Path) -> Path:
    if model == "demo":
        return DEFAULT_CHECKPOINT
    if model == "vit_b":
        return seeded_checkpoint("vit_b", CACHE / "vit_b")
    path = work / "tiny.safetensors"  # tests: seconds
    if not path.exists():
        save_checkpoint(build_sam("tiny", seed=0), path)
    return path


def densified(model: nn.Module) -> nn.Module:
    """The model with each HyperLinear swapped for an nn.Linear holding its decoded weight:
    HyperLinear.forward is F.linear on that weight, so the outputs are the same numbers."""
    for name, module in list(model.named_modules()):
        if isinstance(module, HyperLinear):
            dense = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None)
            with torch.no_grad():
                dense.weight.copy_(module.decoded_weight())
                if module.bias is not None:
                    dense.bias.copy_(module.bias)
            replace_module(model, name, dense)
    return model.eval()


class TorchSession:
    """A torch model behind the `set_image` / `predict(...).masks` calls benchmarks.fidelity makes."""

    def __init__(self, model: nn.Module):
        self.predictor = ReferencePredictor(model)

    def set_image(self, image: np.ndarray) -> None:
        self.predictor.set_image(image)

    def predict(self, **prompt):
        masks, scores, low_res = self.predictor.predict(**prompt)
        return SimpleNamespace(masks=masks, scores=scores, low_res_logits=low_res)


class CachedSession(TorchSession):
    """The reference of the agreement: its answers per photograph and prompt computed once,
    whatever number of points are compared with it one at a time."""

    def __init__(self, model: nn.Module):
        super().__init__(model)
        self.answers, self.image_key = {}, None
        self._image, self._encoded = None, None  # the photograph asked about, the one encoded

    def set_image(self, image: np.ndarray) -> None:
        self.image_key = hash(np.ascontiguousarray(image).tobytes())
        self._image = image

    def predict(self, **prompt):
        key = (self.image_key, repr(sorted((k, np.asarray(v).tolist() if v is not None else None)
                                           for k, v in prompt.items())))
        if key not in self.answers:
            if self._encoded != self.image_key:
                super().set_image(self._image)
                self._encoded = self.image_key
            self.answers[key] = super().predict(**prompt)
        return self.answers[key]


# --- one point ------------------------------------------------------------------------------

def weight_error(entries: dict, values: dict[str, np.ndarray]) -> dict:
    """Over all encodable parameters (>= MIN_ELEMENTS elements; a raw one adds no error):

    - rel_rmse: ||W - W'|| / ||W|| of all of them together (large-norm tensors dominate);
    - tensor_rel_rmse: the size-weighted RMS of each tensor's own ||W - W'|| / ||W|| (what a
      layer's output moves by, relative to itself, for inputs of no particular direction);
    - the worst tensor's error relative to its bulk (codec.robust_relative_error).
    """
    sq_err = sq_ref = sq_err_enc = sq_ref_enc = tensor_sq = weights = 0.0
    worst = None
    for name, entry in entries.items():
        if name not in values or entry.numel < MIN_ELEMENTS:
            continue
        norm2 = float(np.square(values[name], dtype=np.float64).sum())
        sq_ref += norm2
        weights += entry.numel
        if name.startswith("image_encoder."):
            sq_ref_enc += norm2
        if entry.encoded is None:
            continue
        rel = entry.rel_rmse or 0.0
        sq_err += rel**2 * norm2
        tensor_sq += rel**2 * entry.numel
        if name.startswith("image_encoder."):
            sq_err_enc += rel**2 * norm2
        if entry.robust_rel_rmse is not None and (worst is None or entry.robust_rel_rmse > worst[1]):
            worst = (name, entry.robust_rel_rmse)
    return {"rel_rmse": math.sqrt(sq_err / sq_ref) if sq_ref else None,
            "tensor_rel_rmse": math.sqrt(tensor_sq / weights) if weights else None,
            "encoder_rel_rmse": math.sqrt(sq_err_enc / sq_ref_enc) if sq_ref_enc else None,
            "worst_robust_rel": None if worst is None else worst[1],
            "worst_tensor": None if worst is None else worst[0]}


def entropy(entries: dict, with_lzma: bool) -> dict:
    """Bits per coded weight: fixed width, order-0 entropy per tensor, and lzma (uint16 indices)."""
    weights = fixed = h0 = 0.0
    lz = 0 if with_lzma else None
    for entry in entries.values():
        e = entry.encoded
        if e is None:
            continue
        weights += entry.numel
        fixed += e.bits * e.indices.size
        counts = np.bincount(e.indices)
        p = counts[counts > 0] / e.indices.size
        h0 += e.indices.size * float(-(p * np.log2(p)).sum())
        if with_lzma:
            lz += 8 * len(lzma.compress(e.indices.astype("<u2").tobytes(), preset=6))
    return {"fixed_bits": fixed / weights, "entropy_bits": h0 / weights,
            "lzma_bits": None if lz is None else lz / weights}


def code_bits(entries: dict) -> float:
    """Bits per coded weight the checkpoint spends on codes: int32 words and float32 row scales."""
    bits = weights = 0
    for entry in entries.values():
        e = entry.encoded
        if e is None:
            continue
        weights += entry.numel
        bits += 32 * reference.word_count(e.indices.size, e.bits) + (0 if e.scale is None else 32 * np.size(e.scale))
    return bits / weights


def measure_point(point: Point, source: Path, work: Path, values: dict[str, np.ndarray]) -> tuple[dict, Path]:
    compressed = compress_model(load_checkpoint(source), point.variant, show_progress=False, settings=point.settings)
    path = work / f"{source.stem}.{abs(hash(point.name))}.safetensors"
    save_compressed(compressed, path, extra_metadata={SETTINGS_KEY: point.settings.to_dict()})
    entries = compressed.entries
    weights = sum(e.numel for e in entries.values())
    coded = sum(e.numel for e in entries.values() if e.encoded is not None)
    row = {"point": point.name, "family": point.family, "variant": point.variant,
           "settings": point.settings.to_dict(), "bytes": path.stat().st_size, "weights": weights,
           "bits_per_weight": 8 * path.stat().st_size / weights, "ratio": source.stat().st_size / path.stat().st_size,
           "coded_fraction": coded / weights, "code_bits": code_bits(entries),
           "raw_tensors": sum(e.fell_back for e in entries.values()),
           # the reference variant's tensors that the relative fall-back coded in their own unit
           "in_units": sum(e.encoded is not None and e.encoded.scale is not None for e in entries.values())
           if point.variant == "reference" else 0,
           "raw_by_rel": sorted(n for n, e in entries.items() if e.fall_back_reason == "rel_rmse"),
           "seconds": compressed.seconds,
           **weight_error(entries, values), **entropy(entries, point.key)}
    return row, path


def original_row(source: Path, weights: int) -> dict:
    return {"point": "original (float32)", "family": "original", "bytes": source.stat().st_size,
            "weights": weights, "bits_per_weight": 8 * source.stat().st_size / weights, "ratio": 1.0,
            "rel_rmse": 0.0, "tensor_rel_rmse": 0.0, "encoder_rel_rmse": 0.0}


def measure_model(model: str, points: list[Point], args, work: Path) -> list[dict]:
    source = source_checkpoint(model, work)
    dense = load_checkpoint(source)
    # Parameters only: buffers (the prompt encoder's Gaussian matrix) are never coded.
    values = {name: tensor.detach().double().numpy() for name, tensor in dense.named_parameters()}
    rows = [original_row(source, sum(t.numel() for t in dense.state_dict().values()))]
    evaluate = model == "demo"
    agree = args.agreement and model != "demo"  # the demo model has ground truth instead
    reference_session = CachedSession(dense.eval()) if agree else None
    photos = fidelity.photographs(args.photos) if agree else None
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        if evaluate:
            rows[0].update(fidelity.ground_truth(dense.eval(), args.count))
        for point in points:
            print(f"{model}: {point.name}")
            row, path = measure_point(point, source, work, values)
            if evaluate or agree:
                candidate = densified(load_checkpoint(path))  # what the saved file holds
                if evaluate:
                    row.update(fidelity.ground_truth(candidate, args.count))
                if agree:
                    row["agreement_miou"] = fidelity.agreement(
                        reference_session, {point.name: TorchSession(candidate)}, photos)[point.name]["miou"]
                del candidate
            path.unlink()  # a vit_b one is 60 MB
            rows.append({"model": model, **row})
    finally:
        torch.set_num_threads(threads)
    rows[0]["model"] = model
    return rows


# --- heavy tails ------------------------------------------------------------------------------

def synthetic_tensors(seed: int = 0) -> dict[str, np.ndarray]:
    """[256, 512] Linear weights of RMS about 0.02 (0.005 for the small-bulk ones)."""
    rng = np.random.default_rng(seed)
    shape = (256, 512)

    def student(df, scale):
        return rng.standard_t(df, shape) * scale * (math.sqrt((df - 2) / df) if df > 2 else 1.0)

    def outliers(count, magnitude, scale=0.02):
        w = rng.normal(0, scale, shape)
        flat = w.reshape(-1)
        flat[rng.choice(flat.size, count, replace=False)] = magnitude * rng.choice([-1, 1], count)
        return w

    return {"Gaussian, std 0.02": rng.normal(0, 0.02, shape), "Gaussian, std 0.005": rng.normal(0, 0.005, shape),
            "Student-t df 4": student(4, 0.02), "Student-t df 3": student(3, 0.02),
            "Student-t df 2": student(2, 0.02), "Student-t df 2, scale 0.005": student(2, 0.005),
            "10 outliers of 3.0": outliers(10, 3.0), "100 outliers of 0.5": outliers(100, 0.5),
            "10 outliers of 3.0, std 0.01": outliers(10, 3.0, 0.01),
            "0.2 % outliers of 3.0, std 0.01": outliers(262, 3.0, 0.01)}


def synthetic_rows(points: list[Point]) -> list[dict]:
    rows = []
    for name, weight in synthetic_tensors().items():
        row = {"tensor": name}
        for point in points:
            no_limit = point.settings.replace(fallback_rel_rmse=None)
            encoded = encode_tensor(weight, row_pairs=True, variant=point.variant, settings=no_limit)
            if encoded is None:
                row[point.name] = None
                continue
            decoded = codec.decode(encoded)
            row[point.name] = {"rel_rmse": float(np.linalg.norm(decoded - weight) / np.linalg.norm(weight)),
                               "robust_rel": codec.robust_relative_error(weight, decoded),
                               "bits_per_weight": encoded.bits * encoded.indices.size / weight.size}
        rows.append(row)
    return rows


# --- comparisons, tables, plot ----------------------------------------------------------------

ERRORS = {"rel_rmse": "rel. RMS error", "tensor_rel_rmse": "per-tensor rel. RMS"}


def _mixed(a: dict, b: dict, key: str, bits: float | None = None, error: float | None = None) -> float:
    """Between two points of one family, tensors coded some one way and some the other (a
    per-tensor choice): bits and squared error both add up over tensors, so squared error
    is linear in bits along the segment. The error at `bits`, or the bits at `error`."""
    (x0, e0), (x1, e1) = ((r["bits_per_weight"], r[key] ** 2) for r in (a, b))
    if bits is not None:
        return math.sqrt(e0 + (e1 - e0) * (bits - x0) / (x1 - x0))
    return x0 + (x1 - x0) * (error**2 - e0) / (e1 - e0)


def comparisons(rows: list[dict], key: str = "rel_rmse") -> list[str]:
    """Where samedge's settings beat the authors' at equal size or at equal error `key`: the
    best measured point, then the best mix of two neighbouring points of one family."""
    authors = next((r for r in rows if r["point"] == AUTHORS), None)
    if authors is None or authors.get(key) is None:
        return []
    bits, error, label = authors["bits_per_weight"], authors[key], ERRORS.get(key, key)
    ours = [r for r in rows if r["family"] not in ("authors", "original") and r.get(key) is not None]
    lines, gains = [], {"equal size": 0.0, "equal error": 0.0}
    smaller = [r for r in ours if r["bits_per_weight"] <= bits * 1.001]
    best = min(smaller, key=lambda r: r[key], default=None)
    if best and best[key] < error * 0.995:
        gains["equal size"] = 1 - best[key] / error
        lines.append(f"equal size ({label}): `{best['point']}` at {best['bits_per_weight']:.2f} bits per weight "
                     f"(authors {bits:.2f}) has {best[key]:.4f} against {error:.4f} "
                     f"({100 * (1 - best[key] / error):.0f} % less)")
    within = [r for r in ours if r[key] <= error * 1.001]
    best = min(within, key=lambda r: r["bits_per_weight"], default=None)
    if best and best["bits_per_weight"] < bits * 0.995:
        gains["equal error"] = 1 - best["bits_per_weight"] / bits
        lines.append(f"equal error ({label}): `{best['point']}` reaches {best[key]:.4f} (authors {error:.4f}) "
                     f"at {best['bits_per_weight']:.2f} bits per weight against {bits:.2f} "
                     f"({100 * (1 - best['bits_per_weight'] / bits):.0f} % smaller)")
    mixes = []  # (gain, line)
    for family in sorted({r["family"] for r in ours}):
        curve = sorted((r for r in ours if r["family"] == family), key=lambda r: r["bits_per_weight"])
        for a, b in zip(curve, curve[1:]):
            if a["bits_per_weight"] < bits < b["bits_per_weight"]:
                mixed = _mixed(a, b, key, bits=bits)
                if mixed < error * 0.995:
                    mixes.append((1 - mixed / error, f"equal size ({label}), mixing `{a['point']}` and "
                                  f"`{b['point']}` per tensor: {mixed:.4f} at {bits:.2f} bits per weight "
                                  f"({100 * (1 - mixed / error):.0f} % less)"))
            if min(a[key], b[key]) < error < max(a[key], b[key]):
                mixed = _mixed(a, b, key, error=error)
                if mixed < bits * 0.995:
                    mixes.append((1 - mixed / bits, f"equal error ({label}), mixing `{a['point']}` and "
                                  f"`{b['point']}` per tensor: {error:.4f} at {mixed:.2f} bits per weight "
                                  f"({100 * (1 - mixed / bits):.0f} % smaller)"))
    for prefix in ("equal size", "equal error"):  # a mix only where it does better than a measured point
        best_mix = max((m for m in mixes if m[1].startswith(prefix)), default=None)
        if best_mix and best_mix[0] > gains[prefix] + 0.005:
            lines.append(best_mix[1])
    return lines


def _model_table(model: str, rows: list[dict]) -> str:
    demo = any("box_miou" in r for r in rows)
    agree = any("agreement_miou" in r for r in rows)
    headers = ["point", "bits/weight (file)", "ratio", "code bits/coded weight", "order-0 entropy", "lzma",
               "rel. RMS error", "per-tensor rel. RMS", "encoder rel. RMS", "worst tensor (robust rel.)",
               "raw tensors"]
    if demo:
        headers += ["one-point mIoU", "box mIoU"]
    if agree:
        headers += ["agreement mIoU"]
    lines = []
    for r in rows:
        name = r["point"] + (" (samedge default)" if r["point"] == default_point() else "")
        cells = [name, f"{r['bits_per_weight']:.2f}", f"{r['ratio']:.2f}", fmt(r.get("code_bits"), ".2f"),
                 fmt(r.get("entropy_bits"), ".2f"), fmt(r.get("lzma_bits"), ".2f"), fmt(r.get("rel_rmse"), ".4f"),
                 fmt(r.get("tensor_rel_rmse"), ".4f"), fmt(r.get("encoder_rel_rmse"), ".4f"),
                 fmt(r.get("worst_robust_rel"), ".3f"),
                 fmt(r.get("raw_tensors"), "d") + (f" (+{r['in_units']} in units)" if r.get("in_units") else "")]
        if demo:
            cells += [fmt(r.get("point_miou"), ".4f"), fmt(r.get("box_miou"), ".4f")]
        if agree:
            cells += [fmt(r.get("agreement_miou"), ".4f")]
        lines.append(cells)
    return f"### {model}\n\n" + table(headers, lines)


def _synthetic_table(rows: list[dict], points: list[Point]) -> str:
    headers = ["tensor [256, 512]"] + [f"{p.name}: rel / robust rel / bits" for p in points]
    limit = codec.FALLBACK_REL_RMSE

    def cell(result):
        if result is None:
            return "raw (MAE fall-back)"
        raw = " **raw**" if limit is not None and result["robust_rel"] > limit else ""
        return f"{result['rel_rmse']:.3f} / {result['robust_rel']:.3f}{raw} / {result['bits_per_weight']:.1f}"

    cells = [[r["tensor"]] + [cell(r[p.name]) for p in points] for r in rows]
    return table(headers, cells)


PANELS = (("rel_rmse", "rel. RMS weight error (log)"), ("tensor_rel_rmse", "per-tensor rel. RMS error (log)"),
          ("point_miou", "one-point mIoU vs ground truth"), ("box_miou", "box mIoU vs ground truth"),
          ("agreement_miou", "agreement mIoU with the original"))


def plot(results: dict[str, list[dict]], path: Path) -> None:
    """One row per model: each figure it has against bits per weight, one curve per family."""
    import matplotlib  # here: the backend must be chosen before pyplot is imported

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = {model: [(k, label) for k, label in PANELS if any(r.get(k) is not None for r in rows[1:])]
            for model, rows in results.items()}
    columns = max(len(panels) for panels in grid.values())
    fig, axes = plt.subplots(len(grid), columns, figsize=(4.6 * columns, 3.8 * len(grid)), squeeze=False)
    colours = dict(zip(FAMILIES, ("black", "tab:blue", "tab:orange", "tab:green", "tab:red")))
    for row_axes, (model, panels) in zip(axes, grid.items()):
        for ax in row_axes[len(panels):]:
            ax.axis("off")
        for ax, (key, label) in zip(row_axes, panels):
            rows = [r for r in results[model] if r["family"] != "original" and r.get(key) is not None]
            for family, colour in colours.items():
                mine = sorted((r for r in rows if r["family"] == family), key=lambda r: r["bits_per_weight"])
                if mine:
                    # authors' and fall-back points are separate choices, not one knob's curve: no line
                    style = {"authors": "s", "fall-back": "D"}.get(family, "o-")
                    ax.plot([r["bits_per_weight"] for r in mine], [r[key] for r in mine], style, color=colour,
                            label=family, markersize=4, linewidth=1)
            authors = next((r for r in rows if r["point"] == AUTHORS), None)
            if authors:
                ax.plot([authors["bits_per_weight"]], [authors[key]], "*", color="black", markersize=13,
                        label="authors' settings")
            original = results[model][0]
            if original.get(key) and key.endswith("miou"):
                ax.axhline(original[key], color="grey", linestyle=":", label="original")
            if key.endswith("rel_rmse"):
                ax.set_yscale("log")
            ax.set_xlabel("bits per weight (saved checkpoint)")
            ax.set_ylabel(label)
            ax.set_title(model)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def measure(args) -> Page:
    points = [POINTS[name] for name in args.points]
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for model in args.models:
            results[model] = measure_model(model, points, args, Path(folder))
    shown = (AUTHORS, f"scaled u={codec.UNIT_RMS:g}", "fill t=0.001")
    synthetic_points = [p for p in points if p.name in shown] or points[:3]
    synthetic = [] if args.skip_synthetic else synthetic_rows(synthetic_points)
    parts = []
    for model, rows in results.items():
        parts.append(_model_table(model, rows))
        lines = comparisons(rows) + comparisons(rows, "tensor_rel_rmse")
        if lines:
            parts.append("\n".join(f"- {line}" for line in lines))
    if synthetic:
        parts.append("### Heavy tails and outliers (synthetic [256, 512] Linear weights)\n\n"
                     "Plain relative RMS error / robust relative error (codec.robust_relative_error: the error "
                     "against the norm of the tensor's bulk, its RMS taken as sqrt(median^2 + (1.4826 MAD)^2) "
                     "where that is smaller) / bits per weight, each encoded without the relative fall-back; "
                     f"**raw**: above the default limit fallback_rel_rmse = {codec.FALLBACK_REL_RMSE}, so stored "
                     "raw by default.\n\n" + _synthetic_table(synthetic, synthetic_points))
    out = Path(args.out)
    if not args.no_plot:
        plot(results, out.with_suffix(".png"))
        parts.append(f"![rate-distortion curves]({out.with_suffix('.png').name})")
    point_lines = "\n".join(f"- `{p.name}` ({p.variant}): {_describe(p.settings)}" for p in points)
    intro = (__doc__.split("\n\n", 2)[2].strip() + "\n\nFamilies: " +
             "; ".join(f"{k}: {v}" for k, v in FAMILIES.items()) + ". Points (what differs from the authors' "
             "settings):\n\n" + point_lines)
    return Page(out, "Birkhoff: rate against distortion", intro, "\n\n".join(parts),
                data={"models": results, "synthetic": synthetic})


def _describe(settings: codec.Settings) -> str:
    default = codec.DEFAULT_SETTINGS.to_dict()
    changed = {k: v for k, v in settings.to_dict().items() if v != default[k]}
    return ", ".join(f"{k} = {v}" for k, v in changed.items()) or "the authors' settings"
