"""samedge.compress: model loading, samedge's checkpoint format, and compression methods.

A Recipe (compress.recipe) says which methods to run; compress.stages.apply runs it."""

from .architectures import ARCHITECTURES, SamConfig, build_sam, get_config, parameter_count
from .checkpoint import load_checkpoint, save_checkpoint, seeded_checkpoint
from .checkpoint_file import CheckpointError

__all__ = [
    "ARCHITECTURES",
    "CheckpointError",
    "SamConfig",
    "build_sam",
    "get_config",
    "load_checkpoint",
    "parameter_count",
    "save_checkpoint",
    "seeded_checkpoint",
]
