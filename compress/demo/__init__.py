"""The demo model: a small SAM trained on synthetic shapes and bundled with samedge
(docs/demo-model.md)."""

from pathlib import Path

# What every command uses when it is given no checkpoint.
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "weights" / "demo_sam.safetensors"
