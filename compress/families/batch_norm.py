"""BatchNorm's step counters in the families that have BatchNorm (MobileSAM and SAM-HQ's TinyViT,
EfficientViT-SAM).

`num_batches_tracked` counts training steps in a 0-d int64 that eval mode never reads. samedge's
checkpoints hold floating-point tensors only (compress.checkpoint_file.check_weights: no weight is
loaded truncated), and the weights' digest (export/provenance.py) reads every tensor as bytes. So these
families' models hold the counters as float32 [1], and an official file's counters are converted the
same way in `detect`, before the loader checks the state dict. (EdgeTAM's model holds no counters at
all and ignores them on load: compress/families/edgetam.py's without_batch_counters; two ways to one end,
left as they are until one is chosen for every family.)
"""

from __future__ import annotations

from torch import nn

COUNTER = "num_batches_tracked"


def float_step_counters(model: nn.Module) -> None:
    """Every BatchNorm's step counter in `model` as float32 [1], in place."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.num_batches_tracked is not None:
            module.num_batches_tracked = module.num_batches_tracked.float().reshape(1)


def float_step_counters_in_state(state: dict) -> None:
    """A state dict's BatchNorm step counters as the models hold them (float32 [1]), in place."""
    for key in [key for key in state if key.endswith("." + COUNTER)]:
        state[key] = state[key].float().reshape(1)
