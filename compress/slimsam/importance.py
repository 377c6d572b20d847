"""Channel importance for SlimSAM: disturbed Taylor, plain Taylor, random.

Right after distillation there are no hard labels, and the soft-label loss between a
student and the teacher it was copied from has zero gradient, so plain Taylor scores
are all zero. SlimSAM disturbs the target: loss = MSE(teacher embedding + N(0, sigma^2),
student embedding), back-propagated over a set of images (batch 1) with the gradients
accumulated. The score of a channel group is then torch-pruning's group Taylor score,
sum |W * dL/dW| over the group's Conv/Linear members.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn
from tqdm import tqdm

IMPORTANCE_KINDS = ("disturbed-taylor", "taylor", "random")
NOISE_STD = 0.01  # sigma of the disturbance (the paper's N(0, 0.01))


def accumulate_gradients(student: nn.Module, teacher: Callable[[torch.Tensor], torch.Tensor],
                         images: Iterable[torch.Tensor], disturb: bool, seed: int = 0,
                         show_progress: bool = True) -> None:
    """Fill `.grad` of the student's parameters with the (disturbed) distillation loss summed
    over `images` (each [1, 3, S, S], normalised and padded)."""
    generator = torch.Generator().manual_seed(seed)
    student.zero_grad(set_to_none=True)
    for image in tqdm(list(images), desc="importance", unit="image", disable=not show_progress):
        with torch.no_grad():
            target = teacher(image)
            if disturb:
                noise = torch.randn(target.shape, generator=generator)  # CPU generator: same draws on any device
                target = target + NOISE_STD * noise.to(target.device, target.dtype)
        F.mse_loss(student(image), target).backward()


def make_importance(kind: str, normalizer: str):
    """The torch-pruning importance object; gradients must already be accumulated for Taylor."""
    if kind not in IMPORTANCE_KINDS:
        raise ValueError(f"unknown importance {kind!r}; choose one of {IMPORTANCE_KINDS}")
    if kind == "random":
        return tp.importance.RandomImportance()
    # LayerNorm and biases are left out of the score, as in SlimSAM.
    return tp.importance.GroupTaylorImportance(normalizer=normalizer, target_types=[nn.Conv2d, nn.Linear])
