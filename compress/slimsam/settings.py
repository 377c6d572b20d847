"""SlimSAM's settings: the pruning ratio and the distillation schedule, with the paper's defaults.

Stated once, here: the command line (python -m compress.slimsam, export.build's
--slim-epochs) takes its defaults from this class.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SlimSettings:
    ratio: float = 0.5
    importance: str = "disturbed-taylor"
    importance_images: int = 1000  # the paper accumulates over the first 1000 images
    global_pruning: bool = False
    step2_normalizer: str = "gaussian"
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
