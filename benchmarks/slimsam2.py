"""SlimSAM on SAM 2 (Hiera): widths, parameters, MACs, encoder latency and agreement with the unpruned model.

    python -m benchmarks.run slimsam2                      # hiera_t and hiera_b+ at 50 % and 77 %, 1024 px (hours)
    python -m benchmarks.run slimsam2 --sizes sam2.1_hiera_t --epochs 1   # hiera_t only, one epoch per step
    python -m benchmarks.run slimsam2 --quick              # hiera_t at 256 px, 50 %, one epoch: checks the form

Each SAM 2 is built with seeded weights, pruned with both SlimSAM steps (disturbed Taylor,
compress/slimsam/hiera.py) and distilled with the short CPU schedule on skimage.data photographs; the teacher and each pruned
model are exported (export.build, parity skipped: tests/test_slimsam_hiera.py checks it) and timed: the
encoder in torch on the CPU and in ONNX Runtime. Agreement: mean IoU of the pruned bundle's masks with the
unpruned bundle's for runtime.parity's prompts on held-out photographs (benchmarks/fidelity.py). With
seeded weights this is agreement of a pruned + distilled random model with its random teacher: it says how
much of the teacher's answers the short distillation recovers, not how well real SlimSAM-2 segments.
EfficientTAM / EdgeTAM rows (their families, when present) give parameters, MACs and latency; their seeded
weights share no teacher with SAM 2's, so no agreement is given for them.
Writes docs/benchmarks/slimsam2.md.
"""

from __future__ import annotations

import argparse
import importlib
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from skimage import data

import compress.families.sam2  # noqa: F401 (registers the family)
from compress.checkpoint import save_checkpoint
from compress.families import get_family
from compress.families.sam2 import ImageEncoderPiece
from compress.slimsam.images import preprocess_images
from compress.slimsam.pipeline import slim
from compress.slimsam.settings import SlimSettings
from compress.slimsam.targets import target_for

from .fidelity import agreement
from .model_size import encoder_macs
from .report import DOCS, Page, table

FULL = {"sizes": ("sam2.1_hiera_t", "sam2.1_hiera_b+"), "ratios": (0.5, 0.77), "epochs": 2, "repeats": 5}
QUICK = {"sizes": ("sam2.1_hiera_t_256",), "ratios": (0.5,), "epochs": 1, "repeats": 2}
OTHERS = (("efficient_tam", ("efficienttam_ti", "efficienttam_s")), ("edgetam", ("edgetam",)))
TRAIN = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")
HELD_OUT = ("cat", "retina")


def photographs(names) -> dict[str, np.ndarray]:
    photos = {}
    for name in names:
        image = getattr(data, name)()
        photos[name] = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
    return {name: image[..., :3] for name, image in photos.items()}


class _Sized(torch.nn.Module):
    """The encoder piece with the img_size attribute benchmarks/model_size.py's MAC counter reads."""

    def __init__(self, model):
        super().__init__()
        self.piece, self.img_size = ImageEncoderPiece(model), model.image_size

    def forward(self, image):
        return self.piece(image)


def _torch_latency(model, repeats: int) -> float:
    image = torch.zeros(1, 3, model.image_size, model.image_size)
    piece = ImageEncoderPiece(model).eval()
    with torch.no_grad():
        piece(image)
        times = []
        for _ in range(repeats):
            began = time.perf_counter()
            piece(image)
            times.append(time.perf_counter() - began)
    return float(np.median(times))


def _ort_latency(bundle: Path, size: int, repeats: int) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(bundle / "encoder.onnx"), providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: np.zeros((1, 3, size, size), np.float32)}
    session.run(None, feed)
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - began)
    return float(np.median(times))


def _bundle(model, folder: Path, name: str) -> Path:
    from export.build import build_bundle

    checkpoint = folder / f"{name}.safetensors"
    save_checkpoint(model, checkpoint)
    build_bundle(folder / name, "cpu", checkpoint, run_parity=False, with_clients=False)
    return folder / name


def _row(name: str, model, bundle: Path, repeats: int) -> dict:
    try:
        macs, _ = encoder_macs(_Sized(model))  # Linear + Conv2d layers (Hiera's attention is not hooked)
    except Exception:  # a fork whose encoder the counter cannot run
        macs = None
    widths = model.config.hiera_widths if getattr(model.config, "hiera_widths", None) else None
    described = target_for(model).describe(model) if widths else "as released"
    return {"name": name, "widths": described, "params": sum(p.numel() for p in model.parameters()),
            "encoder_params": sum(p.numel() for p in model.image_encoder.parameters()), "macs": macs,
            "torch_s": _torch_latency(model, repeats), "ort_s": _ort_latency(bundle, model.image_size, repeats)}


def _other_rows(plan: dict, folder: Path, repeats: int) -> tuple[list[dict], list[str]]:
    rows, skipped = [], []
    for module_name, types in OTHERS:
        try:
            module = importlib.import_module(f"compress.families.{module_name}")
        except Exception as err:  # absent, or its upstream fork missing: the row is skipped, with the reason
            skipped.append(f"{module_name}: not importable ({type(err).__name__}: {err})")
            continue
        known = getattr(module, "MODEL_TYPES", {})
        for model_type in types:
            if plan is QUICK:
                model_type = f"{model_type}_256" if f"{model_type}_256" in known else model_type
            if model_type not in known:
                skipped.append(f"{module_name}: no model type {model_type}")
                continue
            try:
                family = next(f for f in _families() if model_type in f.model_types)
                model = family.seeded(model_type, seed=0)
                rows.append(_row(model_type, model, _bundle(model, folder, model_type), repeats))
            except Exception as err:  # another helper's family still being written: say why, keep going
                skipped.append(f"{model_type}: {type(err).__name__}: {err}")
    return rows, skipped


def _families():
    from compress.families import families

    return families()


def measure_rows(plan: dict, work: Path) -> tuple[list[dict], list[str]]:
    torch.manual_seed(0)
    rows = []
    for size in plan["sizes"]:
        teacher = get_family("sam2").seeded(size, seed=0)
        train = preprocess_images(list(photographs(TRAIN).values()), teacher.config)
        held_out = photographs(HELD_OUT)
        teacher_bundle = _bundle(teacher, work, size)
        rows.append(_row(size, teacher, teacher_bundle, plan["repeats"]) | {"miou": None})
        for ratio in plan["ratios"]:
            settings = SlimSettings(ratio=ratio, importance_images=len(train), epochs1=plan["epochs"],
                                    epochs2=plan["epochs"], feature_epochs=1, alpha_epochs=max(plan["epochs"], 1),
                                    show_progress=False)
            with torch.enable_grad():
                pruned = slim(teacher, train[:-1], train[-1:], settings, work / f"{size}-{ratio}.work")
            name = f"{size}-slimsam-{round(ratio * 100)}"
            bundle = _bundle(pruned, work, name)
            from runtime import Session

            with Session(teacher_bundle) as reference, Session(bundle) as candidate:
                fidelity = agreement(reference, {name: candidate}, held_out)[name]
            rows.append(_row(name, pruned, bundle, plan["repeats"]) | {"miou": fidelity["miou"]})
    others, skipped = _other_rows(plan, work, plan["repeats"])
    return rows + [r | {"miou": None} for r in others], skipped


def _cells(r: dict) -> list:
    macs = "n/a" if r["macs"] is None else f"{r['macs'] / 1e9:.2f}G"
    miou = "-" if r["miou"] is None else f"{r['miou']:.3f}"
    return [r["name"], r["widths"], f"{r['params'] / 1e6:.2f}M", f"{r['encoder_params'] / 1e6:.2f}M", macs,
            f"{r['torch_s'] * 1e3:.0f}", f"{r['ort_s'] * 1e3:.0f}", miou]


def add_arguments(parser) -> None:
    parser.add_argument("--quick", action="store_true", help="hiera_t at 256 px, 50 %%, one epoch per step")
    parser.add_argument("--sizes", nargs="+", help=f"SAM 2 model types (default {' '.join(FULL['sizes'])})")
    parser.add_argument("--ratios", nargs="+", type=float, help="pruning ratios (default 0.5 0.77)")
    parser.add_argument("--epochs", type=int, help="distillation epochs per step (default 2)")
    parser.add_argument("--page", type=Path, default=DOCS / "slimsam2.md", help=argparse.SUPPRESS)  # tests


def measure(args) -> Page:
    plan = dict(QUICK if args.quick else FULL)
    for key, value in (("sizes", args.sizes), ("ratios", args.ratios), ("epochs", args.epochs)):
        if value is not None:
            plan[key] = tuple(value) if isinstance(value, list) else value
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        rows, skipped = measure_rows(plan, Path(work))
    body = table(["model", "widths", "params", "encoder params", "encoder MACs (Linear+Conv)", "torch CPU ms",
                  "ORT ms", "agreement mIoU"], [_cells(r) for r in rows])
    if skipped:
        body += "\n\nRows skipped:\n" + "\n".join(f"- {reason}" for reason in skipped)
    intro = (__doc__.split("\n\n", 2)[2].replace("\n", " ").strip()
             + f" This run: {', '.join(plan['sizes'])} at {', '.join(f'{r:.0%}' for r in plan['ratios'])}, "
               f"{plan['epochs']} epoch(s) per step, {plan['repeats']} timed runs each; "
               f"{torch.get_num_threads()} torch threads; {time.perf_counter() - began:.0f} s.")
    return Page(args.page, "SlimSAM on SAM 2 (Hiera): widths, parameters, MACs, latency and agreement", intro, body,
                data={"plan": {k: list(v) if isinstance(v, tuple) else v for k, v in plan.items()}, "rows": rows,
                      "skipped": skipped})
