"""The PyTorch reference backend: the checkpoint itself, run by segment_anything.

Imports torch: runtime.backends opens this module only for backend="torch".
"""

from __future__ import annotations

import numpy as np
import torch
from segment_anything.utils.onnx import SamOnnxModel

from ..reference import load_reference_model
from ..signature import DECODER_INPUTS
from ..bundle import BundleError
from .base import BackendOptions, BaseBackend


class TorchBackend(BaseBackend):
    name = "torch"
    takes_options = frozenset({"device"})
    batch_decoding = "loop"  # segment_anything has no batch decoder: Session calls decode per prompt set

    @classmethod
    def _open(cls, bundle, options: BackendOptions) -> "TorchBackend":
        if bundle.checkpoint is None:
            raise BundleError(f"the torch backend needs the checkpoint the bundle at {bundle.root} "
                              "was built from, and the manifest names none that exists")
        return cls.from_checkpoint(bundle.checkpoint, options.device)

    def __init__(self, model, device: str = "cpu"):
        self.device = device
        self.model = model.to(device).eval()
        self.decoder = SamOnnxModel(self.model, return_single_mask=False).eval()
        self.img_size = int(self.model.image_encoder.img_size)
        self.embedding_size = int(self.model.prompt_encoder.image_embedding_size[-1])

    @classmethod
    def from_checkpoint(cls, checkpoint, device: str = "cpu"):
        return cls(load_reference_model(checkpoint), device)

    def encode(self, pixels: np.ndarray) -> np.ndarray:
        encoder = self._held(self.model).image_encoder
        with torch.no_grad():
            return encoder(torch.from_numpy(pixels).to(self.device)).cpu().numpy()

    def decode(self, inputs):
        decoder = self._held(self.decoder)
        with torch.no_grad():
            args = [torch.from_numpy(np.asarray(inputs[name])).to(self.device) for name in DECODER_INPUTS]
            return tuple(t.cpu().numpy() for t in decoder(*args))

    def _release(self) -> None:
        # The decoder wraps the model: both references go, so the weights are freed with them.
        self.model = self.decoder = None
