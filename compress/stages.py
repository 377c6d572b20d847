"""`apply`: run a Recipe's stages on a model, each stage's checkpoint written to a folder.

The one compress entry point: export.build calls it inside the bundle's staging directory
(so a compressed model travels in its bundle, and parity's reference is that model), the
benchmarks and the tests through the build. Each stage returns the manifest entry that
records what it did (docs/formats.md, `compression`).
"""

from __future__ import annotations

import datetime
import tempfile
from pathlib import Path
from typing import NamedTuple

from runtime.bundle import sha256_file

from .architectures import parameter_count
from .birkhoff.model import compress_model
from .birkhoff.storage import save_compressed
from .checkpoint import save_checkpoint
from .recipe import MIN_SLIMSAM_IMAGES, Birkhoff, Recipe, SlimSAM
from .slimsam.images import preprocess_images
from .slimsam.pipeline import slim
from .slimsam.targets import target_for


class Compressed(NamedTuple):
    model: object  # the compressed Sam
    checkpoint: Path  # its checkpoint, in the folder apply was given
    entry: dict  # what the manifest records of the compression


def apply(model, recipe: Recipe, source: Path, folder: Path) -> Compressed:
    """Run each stage of `recipe` on `model` (loaded from checkpoint `source`) in order.

    Only the last stage's checkpoint stays in `folder`. A stacked recipe's entry lists
    every stage, and its `ratio` is the source checkpoint's bytes over the final one's."""
    stages, checkpoint = [], Path(source)
    for stage in recipe.stages:
        run = _birkhoff if isinstance(stage, Birkhoff) else _slimsam
        model, compressed, entry = run(stage, model, checkpoint, Path(folder))
        if checkpoint.parent == Path(folder):  # an earlier stage's file: superseded
            checkpoint.unlink()
        checkpoint = compressed
        stages.append(entry)
    if len(stages) == 1:
        return Compressed(model, checkpoint, stages[0])
    entry = {"method": recipe.name, "stages": stages, **_sizes(Path(source), checkpoint),
             "ratio": Path(source).stat().st_size / checkpoint.stat().st_size,
             "seconds": sum(s["seconds"] for s in stages)}
    return Compressed(model, checkpoint, entry)


def _sizes(source: Path, compressed: Path) -> dict:
    return {"source_checkpoint": str(source.resolve()), "source_bytes": source.stat().st_size,
            "compressed_bytes": compressed.stat().st_size}


def _birkhoff(stage: Birkhoff, model, source: Path, folder: Path):
    compressed = compress_model(model, stage.variant)
    path = folder / stage.checkpoint_name
    save_compressed(compressed, path, extra_metadata={"source_checkpoint_sha256": sha256_file(source)})
    entry = {"method": "birkhoff", "variant": stage.variant, **_sizes(source, path),
             "ratio": source.stat().st_size / path.stat().st_size, "seconds": compressed.seconds,
             "parameters": parameter_count(compressed.model)}
    return compressed.model, path, entry


def _slimsam(stage: SlimSAM, model, source: Path, folder: Path):
    if not stage.images or len(stage.images) < MIN_SLIMSAM_IMAGES:
        raise ValueError(f"--compress {stage.name} distils on images: pass --images DIR (or --synthetic N)")
    settings = stage.settings
    tensors = preprocess_images(stage.images, model.config)
    val_count = max(1, len(tensors) // 20)
    began = datetime.datetime.now()
    with tempfile.TemporaryDirectory(dir=folder) as scratch:  # inside the bundle's staging: never left behind
        slimmed = slim(model, tensors[:-val_count], tensors[-val_count:], settings, Path(scratch))
    path = folder / stage.checkpoint_name
    save_checkpoint(slimmed, path, extra_metadata={"slimsam": {"ratio": settings.ratio, "attention": settings.attention,
                                                                "source": str(source)}})
    entry = {"method": "slimsam", "ratio": settings.ratio, "attention": settings.attention,
             "importance": settings.importance,
             **_sizes(source, path), "images": len(tensors) - val_count,
             "epochs": [settings.epochs1, settings.epochs2],
             "widths": target_for(slimmed).describe(slimmed), "parameters_before": parameter_count(model),
             "parameters_after": parameter_count(slimmed),
             "seconds": (datetime.datetime.now() - began).total_seconds()}
    return slimmed, path, entry
