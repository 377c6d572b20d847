"""samedge.compress: model loading, samedge's checkpoint format, and compression methods."""

from .architectures import ARCHITECTURES, SamConfig, build_sam, get_config
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint

__all__ = [
    "ARCHITECTURES",
    "CheckpointError",
    "SamConfig",
    "build_sam",
    "get_config",
    "load_checkpoint",
    "save_checkpoint",
]
