"""What `python -m benchmarks.run` measures, per model, in its quick and full forms.

Three models: the bundled demo model (trained: mIoU against ground truth), the
full-size vit_b architecture with seeded random weights (no real weights can be
downloaded here: agreement with the uncompressed model on photographs), and `tiny`
(tests only). On a 2-core CPU vit_b's encoder takes 10 to 30 s a run and SlimSAM's
distillation 56 s per image-step, so vit_b's SlimSAM schedule is tiny and stated, and
--quick builds and times fewer vit_b variants, saying so in every cell it leaves out.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from skimage import data

from compress import seeded_checkpoint
from compress.demo import DEFAULT_CHECKPOINT
from compress.slimsam.images import synthetic_images
from compress.slimsam.settings import SlimSettings

from .variants import VARIANTS, ModelSource

QUICK_VIT_B = ("original", "slimsam-77", "slimsam-77+birkhoff")  # what the issue insists on, and its base
NOT_IN_QUICK = "not built with --quick (one vit_b export takes about a minute here); run without --quick"
TIMED_NOT_IN_QUICK = "not measured with --quick; run without --quick"
# Photographs SlimSAM distils vit_b on: none of them is used for the agreement figures.
VIT_B_DISTILL_PHOTOS = ("rocket", "immunohistochemistry", "hubble_deep_field", "retina")


@dataclass
class ModelPlan:
    source: ModelSource
    label: str
    fidelity: tuple[str, ...]  # "ground-truth" and/or "agreement"
    variants: tuple[str, ...] = VARIANTS  # built and measured
    not_built: str = NOT_IN_QUICK  # the reason shown for the other variants
    ground_truth_count: int = 200
    agreement_photos: tuple[str, ...] = ("astronaut", "coffee", "chelsea")
    latency_backends: tuple[str, ...] = ("torch CPU", "ONNX Runtime CPU", "ONNX Runtime CUDA", "torch CUDA")
    repeats: int = 5
    schedule: str = ""  # the SlimSAM schedule, in words, for the page


def _tag(settings, images: str) -> str:
    fields = {k: v for k, v in asdict(settings).items() if k not in ("log", "show_progress")}
    return hashlib.sha1(json.dumps([fields, images], sort_keys=True).encode()).hexdigest()[:10]


# ModelSource's callables are module-level functions or partials of them: they pickle, for the
# build's child process (benchmarks/variants.py).

def _settings(**values):
    return functools.partial(SlimSettings, show_progress=True, **values)


def _synthetic(count: int):
    return functools.partial(synthetic_images, count)


def _photo_arrays(names: tuple[str, ...]) -> list:
    # scikit-image's, by name: the distillation photographs are not among runtime.parity's standard images.
    return [getattr(data, name)() for name in names]


def _photos(names):
    return functools.partial(_photo_arrays, tuple(names))


def _seeded(work: Path, model_type: str):
    return functools.partial(seeded_checkpoint, model_type, work / model_type)


def _bundled_demo() -> Path:
    return DEFAULT_CHECKPOINT


def demo_plan(quick: bool) -> ModelPlan:
    # Disturbed-Taylor importance costs about 3 s per image here, distillation about 0.07 s per image-step.
    images, epochs, importance_images = (64, 2, 4) if quick else (192, 4, 16)
    values = dict(importance="disturbed-taylor", importance_images=importance_images, epochs1=epochs,
                  epochs2=epochs, feature_epochs=epochs // 2, alpha_epochs=epochs // 2, batch_size=4, accumulate=1)
    source = ModelSource("demo", _bundled_demo, _synthetic(images), _settings(**values),
                         _tag(_settings(**values)(), f"synthetic-{images}"))
    val = max(1, images // 20)
    schedule = (f"SlimSAM on the demo model: {images - val} synthetic shape images (+{val} for validation), "
                f"disturbed-Taylor importance from {importance_images} images, {epochs} + {epochs} epochs "
                "(batch 4); the paper's schedule is 10k images and 40 + 80 epochs.")
    return ModelPlan(source, "demo model (bundled, trained on synthetic shapes, 256 px)", ("ground-truth",),
                     ground_truth_count=50 if quick else 200, repeats=5 if quick else 15, schedule=schedule)


def vit_b_plan(quick: bool, work: Path) -> ModelPlan:
    if quick:  # random importance needs no backward pass; no distillation at all
        values = dict(importance="random", importance_images=0, epochs1=0, epochs2=0, feature_epochs=0,
                      alpha_epochs=0, batch_size=1, accumulate=1)
        schedule = ("SlimSAM on vit_b with --quick: random importance, no distillation (0 + 0 epochs): "
                    "pruning alone, so its agreement shows what pruning loses before any training.")
    else:
        values = dict(importance="disturbed-taylor", importance_images=1, epochs1=1, epochs2=1, feature_epochs=1,
                      alpha_epochs=1, batch_size=1, accumulate=1)
        schedule = ("SlimSAM on vit_b: disturbed-Taylor importance from 1 photograph, 1 + 1 epochs on 3 "
                    f"photographs ({', '.join(VIT_B_DISTILL_PHOTOS[:3])}; {VIT_B_DISTILL_PHOTOS[3]} for "
                    "validation). A token schedule: one image-step takes 56 s here, the paper's 10k images x "
                    "(40 + 80) epochs would take about 18.5k hours (docs/slimsam.md).")
    source = ModelSource("vit_b", _seeded(work, "vit_b"), _photos(VIT_B_DISTILL_PHOTOS), _settings(**values),
                         _tag(_settings(**values)(), "photos-" + "-".join(VIT_B_DISTILL_PHOTOS)))
    plan = ModelPlan(source, "vit_b architecture (1024 px, seeded random weights)", ("agreement",),
                     repeats=1 if quick else 3, schedule=schedule)
    if quick:
        plan.variants = QUICK_VIT_B
        plan.agreement_photos = ("astronaut",)
        plan.latency_backends = ("ONNX Runtime CPU", "ONNX Runtime CUDA", "torch CUDA")
    return plan


TINY_VARIANTS = ("original", "birkhoff-reference", "slimsam-77", "slimsam-77+birkhoff", "int8")


def tiny_plan(work: Path) -> ModelPlan:
    """The test configuration: the smallest SAM, every measurement, one repeat, and one variant
    per build path (Birkhoff, SlimSAM, the two stacked, quantisation) to stay under a minute."""
    # 0 epochs: the schedule --quick uses for vit_b (pruning only), checked here; distillation has its own tests.
    values = dict(importance="random", importance_images=0, epochs1=0, epochs2=0, feature_epochs=0,
                  alpha_epochs=0, batch_size=4, accumulate=1)
    source = ModelSource("tiny", _seeded(work, "tiny"), _synthetic(12), _settings(**values),
                         _tag(_settings(**values)(), "synthetic-12"))
    return ModelPlan(source, "tiny (tests)", ("ground-truth", "agreement"), variants=TINY_VARIANTS,
                     not_built="not built in the test configuration (its build path is another row's)",
                     ground_truth_count=3, agreement_photos=("astronaut",), repeats=1,
                     schedule="SlimSAM on tiny: random importance, 0 + 0 epochs.")


def plans(kind: str, work: Path) -> list[ModelPlan]:
    if kind == "tiny":
        return [tiny_plan(work)]
    quick = kind == "quick"
    return [demo_plan(quick), vit_b_plan(quick, work)]
