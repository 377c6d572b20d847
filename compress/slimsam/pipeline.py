"""SlimSAM's alternate slimming of a SAM image encoder, end to end.

    prune embedding (step 1) -> distil (bottleneck aligning)
    -> prune bottleneck (step 2) -> distil (embedding aligning)

Only the image encoder changes; the prompt encoder and mask decoder are kept. Every
intermediate model's config records its widths (so it saves in our checkpoint format), and
a work directory holds the state of a run so that rerunning resumes it. What is pruned in
each family (SAM 1's ViT, SAM 2's Hiera) is its target's business (targets.py).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from torch import nn

from runtime.atomic import atomic_write

from ..checkpoint import load_checkpoint, save_checkpoint
from .distill import LoopSettings, distributed, embedding_mse, run_loop, step1_loss, step2_loss
from .importance import accumulate_gradients, make_importance
from .settings import SlimSettings
from .targets import check_target_settings
from .targets import config_for, target_for, with_encoder  # noqa: F401 (SAM 1's, where they were)


def _frozen(module: nn.Module) -> nn.Module:
    module = copy.deepcopy(module).eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def _trainable(module: nn.Module) -> nn.Module:
    module = copy.deepcopy(module)
    for p in module.parameters():
        p.requires_grad_(True)
    return module


class _Stages:
    """Calls `stage_end(name, model)` with the Sam a stage produced, keeping its answer."""

    def __init__(self, sam, settings: SlimSettings, stage_end):
        self.sam, self.settings, self.stage_end = sam, settings, stage_end
        self.target = target_for(sam)
        check_target_settings(self.target, settings)  # before step 1's hours, not after

    def __call__(self, name: str, encoder: nn.Module) -> nn.Module:
        model = self.target.model(self.sam, encoder, f"{self.sam.config.name}-{name}")
        if self.stage_end is not None:
            self.settings.log[name] = self.stage_end(name, model)
        return model


def _teacher(sam) -> nn.Module:
    if any(hasattr(m, "codes") for m in sam.image_encoder.modules()):  # HyperLinear: no dense weight to prune
        raise ValueError("SlimSAM prunes dense models and this one is Birkhoff-compressed: start from the "
                         "original checkpoint (--compress slimsam-R+birkhoff prunes first, then compresses)")
    return _frozen(target_for(sam).encoder(sam))


def _pruned_student(path: Path, source: nn.Module, images, settings: SlimSettings, stages, name: str,
                    prune) -> nn.Module:
    """A pruned trainable copy of `source` (importance against `source` itself), or the one
    an earlier run saved at `path`."""
    if path.is_file():
        return stages.target.encoder(load_checkpoint(path)).to(images[0].device)
    student = _trainable(source)
    if settings.importance != "random":
        accumulate_gradients(student, source, images[: settings.importance_images],
                             settings.importance == "disturbed-taylor", settings.seed, settings.show_progress)
    prune(student)
    student.zero_grad(set_to_none=True)
    save_checkpoint(stages(name, student), path)
    return student


def _loop(settings: SlimSettings, epochs: int, state_path: Path) -> LoopSettings:
    return LoopSettings(epochs, settings.lr, settings.batch_size, settings.accumulate, settings.patience,
                        settings.seed, settings.show_progress, state_path)


def run_step1(sam, images, val_images, settings: SlimSettings, work: Path, stage_end=None) -> nn.Module:
    """Embedding pruning + bottleneck aligning; returns the distilled step-1 Sam."""
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(settings.seed)
    stages, teacher = _Stages(sam, settings, stage_end), _teacher(sam)
    student = _pruned_student(
        work / "pruned1.safetensors", teacher, images, settings, stages, "pruned-1",
        lambda s: stages.target.prune_embedding(s, settings.ratio, make_importance(settings.importance, "mean"),
                                                images[0]))
    loop = _loop(settings, settings.epochs1, work / "step1-state.pt")
    settings.log["step1_log"] = run_loop(student, images, step1_loss(teacher, settings.feature_epochs),
                                         lambda: embedding_mse(student, teacher, val_images), loop)
    model = stages("distilled-1", student)
    save_checkpoint(model, work / "step1.safetensors")
    return model


def run_step2(sam, step1: nn.Module, images, val_images, settings: SlimSettings, work: Path,
              stage_end=None) -> nn.Module:
    """Bottleneck pruning against the step-1 model + embedding aligning; returns the slim Sam.

    `sam` is the original model (the embedding teacher), `step1` the step-1 Sam."""
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(settings.seed)
    stages, teacher = _Stages(sam, settings, stage_end), _teacher(sam)
    step1_encoder = _frozen(stages.target.encoder(step1))
    importance = make_importance(settings.importance, settings.step2_normalizer)
    student = _pruned_student(
        work / "pruned2.safetensors", step1_encoder, images, settings, stages, "pruned-2",
        lambda s: stages.target.prune_bottleneck(s, settings.ratio, importance, images[0],
                                                 global_pruning=settings.global_pruning,
                                                 attention=settings.attention))
    loop = _loop(settings, settings.epochs2, work / "step2-state.pt")
    settings.log["step2_log"] = run_loop(student, images, step2_loss(teacher, step1_encoder, settings.alpha_epochs),
                                         lambda: embedding_mse(student, teacher, val_images), loop)
    model = stages("distilled-2", student)
    if distributed()[0] == 0:  # under torchrun the ranks hold the same log: one writer
        atomic_write(work / "report.json",
                     lambda tmp: Path(tmp).write_text(json.dumps(settings.log, indent=2, default=float)))
    return model


def slim(sam, images, val_images, settings: SlimSettings, work: Path, stage_end=None) -> nn.Module:
    """Both steps. `images`: preprocessed [1, 3, S, S] tensors. `stage_end(name, model)` is
    called after each of pruned-1, distilled-1, pruned-2, distilled-2."""
    step1_path = work / "step1.safetensors"
    if step1_path.is_file():  # step 1 finished in an earlier run
        step1 = load_checkpoint(step1_path).to(images[0].device)
    else:
        step1 = run_step1(sam, images, val_images, settings, work, stage_end)
    return run_step2(sam, step1, images, val_images, settings, work, stage_end)
