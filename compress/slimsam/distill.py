"""Distillation after each SlimSAM pruning step, and the training loop both use.

Step 1, bottleneck aligning: for the first `feature_epochs` epochs
    0.5 * MSE(embedding, teacher) + 0.5 * mean over blocks of MSE(q, k, v, MLP hidden)
then the embedding term alone. (SlimSAM's code compares the global blocks' q/k/v of the
student with itself there, so that term is zero in it; here it is the teacher's.)
Step 2, embedding aligning, with alpha = (N - n - 1) / N at epoch n < N, 0 after:
    (1 - alpha) * MSE(embedding, SAM) + alpha * [mean MSE(block outputs, step-1 model)
                                                 + MSE(embedding, step-1 model)]

The loop: Adam, gradient accumulation, the learning rate halved when the validation
loss (embedding MSE against the original teacher) stops improving, a resumable state
saved atomically after every epoch, tqdm with the loss terms. Under `torchrun` it runs
DistributedDataParallel (each rank takes every world_size-th image).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from runtime.atomic import atomic_write


class Taps:
    """Forward hooks that keep the latest output of named modules."""

    def __init__(self, modules: dict[str, nn.Module]):
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles = [m.register_forward_hook(self._keeper(name)) for name, m in modules.items()]

    def _keeper(self, name):
        def keep(module, inputs, output):
            self.outputs[name] = output
        return keep

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def bottleneck_modules(encoder: nn.Module) -> dict[str, nn.Module]:
    """q, k, v outputs and the MLP hidden activation of every (split-attention) block."""
    modules = {}
    for i, block in enumerate(encoder.blocks):
        modules.update({f"{i}.q": block.attn.q, f"{i}.k": block.attn.k, f"{i}.v": block.attn.v,
                        f"{i}.mlp": block.mlp.act})
    return modules


def block_modules(encoder: nn.Module) -> dict[str, nn.Module]:
    return {str(i): block for i, block in enumerate(encoder.blocks)}


def mean_mse(student: dict, teacher: dict) -> torch.Tensor:
    return torch.stack([F.mse_loss(student[k], teacher[k]) for k in teacher]).mean()


def alpha_at(epoch: int, alpha_epochs: int) -> float:
    """SlimSAM's dynamic weight: (N - n - 1) / N for epoch n < N, then 0."""
    return (alpha_epochs - epoch - 1) / alpha_epochs if epoch < alpha_epochs else 0.0


@dataclass
class LoopSettings:
    """One distillation loop's share of SlimSettings (whose defaults are the only ones)."""

    epochs: int
    lr: float
    batch_size: int
    accumulate: int
    patience: int
    seed: int
    show_progress: bool
    state_path: Path | None  # resumable state, written after every epoch
    log: list = field(default_factory=list)  # per-epoch {"epoch", "loss", "val", "lr", terms...}


def distributed() -> tuple[int, int]:
    """(rank, world size); joins the process group when started by torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def run_loop(student: nn.Module, images: list[torch.Tensor], loss_fn: Callable, val_fn: Callable[[], float],
             settings: LoopSettings, epoch_end: Callable[[int], None] | None = None) -> list[dict]:
    """Train `student` on `images` with `loss_fn(batch, epoch) -> (loss, terms)`; returns the log.

    `val_fn()` gives the validation loss (lower is better) after each epoch; the student
    ends with the weights of its best epoch. With a state file that holds a finished
    epoch, training continues after it (same seed, same order).
    """
    rank, world = distributed()
    trainable = student
    if world > 1:
        device = [torch.cuda.current_device()] if torch.cuda.is_available() else None
        trainable = nn.parallel.DistributedDataParallel(student, device_ids=device)
    optimizer = torch.optim.Adam(student.parameters(), lr=settings.lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.5,
                                                           patience=settings.patience)
    start = 0
    if settings.state_path is not None and settings.state_path.is_file():
        state = torch.load(settings.state_path, map_location="cpu", weights_only=True)
        student.load_state_dict(state["student"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        settings.log[:] = state["log"]
        start = state["epoch"] + 1
    best = min(settings.log, key=lambda e: e["val"])["val"] if settings.log else float("inf")
    best_state = state["best"] if start and "best" in state else None
    usable = len(images) // world * world  # equal shards: an extra batch on one rank would hang DDP
    if usable == 0:
        raise ValueError(f"{len(images)} images cannot be shared by {world} processes")
    mine = images[rank:usable:world]
    for epoch in range(start, settings.epochs):
        student.train()
        order = torch.randperm(len(mine), generator=torch.Generator().manual_seed(settings.seed * 1000 + epoch))
        batches = [order[i:i + settings.batch_size] for i in range(0, len(order), settings.batch_size)]
        totals: dict[str, float] = {}
        optimizer.zero_grad(set_to_none=True)
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{settings.epochs}", unit="batch",
                   disable=not settings.show_progress or rank != 0)
        for step, batch_index in enumerate(bar):
            batch = torch.cat([mine[i] for i in batch_index.tolist()])
            loss, terms = loss_fn(trainable, batch, epoch)
            (loss / settings.accumulate).backward()
            if (step + 1) % settings.accumulate == 0 or step + 1 == len(batches):
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            for key, value in {"loss": loss.item(), **terms}.items():
                totals[key] = totals.get(key, 0.0) + float(value)
            bar.set_postfix({k: f"{v / (step + 1):.4g}" for k, v in totals.items()})
        student.eval()
        val = val_fn()
        scheduler.step(val)
        entry = {"epoch": epoch, "val": val, "lr": optimizer.param_groups[0]["lr"],
                 **{k: v / max(len(batches), 1) for k, v in totals.items()}}
        settings.log.append(entry)
        if val < best:  # keep the best weights by validation loss, as SlimSAM keeps its best model
            best = val
            best_state = {k: v.detach().clone() for k, v in student.state_dict().items()}
        if epoch_end is not None:
            epoch_end(epoch)
        if settings.state_path is not None and rank == 0:
            state = {"epoch": epoch, "student": student.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "log": settings.log, "best": best_state}
            atomic_write(settings.state_path, lambda tmp: torch.save(state, tmp))
    if best_state is not None:
        student.load_state_dict(best_state)
    return settings.log


def step1_loss(teacher: nn.Module, feature_epochs: int):
    """Bottleneck aligning; `teacher` is the original encoder with split attention."""
    def loss_fn(student, batch, epoch):
        encoder = student.module if hasattr(student, "module") else student
        use_features = epoch < feature_epochs
        student_taps = Taps(bottleneck_modules(encoder)) if use_features else None
        teacher_taps = Taps(bottleneck_modules(teacher)) if use_features else None
        try:
            with torch.no_grad():
                target = teacher(batch)
            output = student(batch)
            embedding = F.mse_loss(output, target)
            if not use_features:
                return embedding, {"embedding": embedding.item()}
            features = mean_mse(student_taps.outputs, {k: v.detach() for k, v in teacher_taps.outputs.items()})
            return 0.5 * embedding + 0.5 * features, {"embedding": embedding.item(), "features": features.item()}
        finally:
            for taps in (student_taps, teacher_taps):
                if taps is not None:
                    taps.remove()
    return loss_fn


def step2_loss(sam: nn.Module, step1: nn.Module, alpha_epochs: int):
    """Embedding aligning against SAM, with the step-1 model's blocks and embedding weighted by alpha."""
    def loss_fn(student, batch, epoch):
        encoder = student.module if hasattr(student, "module") else student
        alpha = alpha_at(epoch, alpha_epochs)
        student_taps, step1_taps = Taps(block_modules(encoder)), Taps(block_modules(step1))
        try:
            with torch.no_grad():
                sam_target = sam(batch)
                step1_target = step1(batch) if alpha > 0 else None
            output = student(batch)
            to_sam = F.mse_loss(output, sam_target)
            if alpha == 0:
                return to_sam, {"to_sam": to_sam.item(), "alpha": 0.0}
            blocks = mean_mse(student_taps.outputs, step1_taps.outputs)
            to_step1 = F.mse_loss(output, step1_target)
            loss = (1 - alpha) * to_sam + alpha * (blocks + to_step1)
            return loss, {"to_sam": to_sam.item(), "blocks": blocks.item(), "to_step1": to_step1.item(),
                          "alpha": alpha}
        finally:
            student_taps.remove()
            step1_taps.remove()
    return loss_fn


def embedding_mse(student: nn.Module, teacher: nn.Module, images: list[torch.Tensor]) -> float:
    """Validation loss: mean embedding MSE against the teacher."""
    with torch.no_grad():
        return float(torch.stack([F.mse_loss(student(x), teacher(x)) for x in images]).mean())
