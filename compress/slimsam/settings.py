"""SlimSAM's settings: the pruning ratio and the distillation schedule, with the paper's defaults.

Stated once, here: the command line (python -m compress.slimsam, export.build's
--slim-epochs) takes its defaults from this class.

`attention` chooses what step 2 prunes in SAM 1's attention: "head-dims" (the paper's: the
same head-dim positions in every head, the head count stays) or "heads" (fewer, whole heads
at the same total q/k/v width; compress/slimsam/prune.py states the rule).
"""

from __future__ import annotations

from dataclasses import dataclass, field

HEAD_DIMS, HEADS = "head-dims", "heads"
STEP2_ATTENTION = (HEAD_DIMS, HEADS)


@dataclass
class SlimSettings:
    ratio: float = 0.5
    importance: str = "disturbed-taylor"
    importance_images: int = 1000  # the paper accumulates over the first 1000 images
    global_pruning: bool = False
    step2_normalizer: str = "gaussian"
    attention: str = HEAD_DIMS  # step 2 in SAM 1's attention: "head-dims" or "heads"
    # The paper's schedule (10k images): 40 + 80 epochs.
    epochs1: int = 40
    epochs2: int = 80
    feature_epochs: int = 20  # step 1: epochs with the q/k/v + MLP terms
    alpha_epochs: int = 10  # step 2: N of the dynamic weight
    lr: float = 1e-4
    batch_size: int = 1
    accumulate: int = 4
    patience: int = 3
    seed: int = 0
    show_progress: bool = True
    log: dict = field(default_factory=dict)

    def __post_init__(self):
        check_attention(self.attention, self.global_pruning)


def check_attention(attention: str, global_pruning: bool) -> None:
    """Refuse an unknown step-2 attention setting, and whole heads with global pruning."""
    if attention not in STEP2_ATTENTION:
        raise ValueError(f"unknown step-2 attention pruning {attention!r}; choose one of {STEP2_ATTENTION}")
    if attention == HEADS and global_pruning:
        raise ValueError("whole-head pruning (--heads, slimsam-R-heads) keeps one head count in every block, "
                         "which SamConfig records once; global pruning (--global-pruning) gives each block its "
                         "own: use one or the other")
