"""The PyTorch reference backend: the checkpoint itself, run by segment_anything.

Only this module (and the parity check) imports torch, and only when used.
"""

from __future__ import annotations

import numpy as np


class TorchBackend:
    name = "torch"

    def __init__(self, model, device: str = "cpu"):
        from segment_anything.utils.onnx import SamOnnxModel

        self.device = device
        self.model = model.to(device).eval()
        self.decoder = SamOnnxModel(self.model, return_single_mask=False).eval()

    @classmethod
    def from_checkpoint(cls, checkpoint, device: str = "cpu"):
        from compress import load_checkpoint

        return cls(load_checkpoint(checkpoint), device)

    @property
    def img_size(self) -> int:
        return int(self.model.image_encoder.img_size)

    @property
    def embedding_size(self) -> int:
        return int(self.model.prompt_encoder.image_embedding_size[-1])

    def encode(self, pixels: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.model.image_encoder(torch.from_numpy(pixels).to(self.device)).cpu().numpy()

    def decode(self, inputs):
        import torch

        with torch.no_grad():
            args = [torch.from_numpy(np.asarray(inputs[name])).to(self.device) for name in (
                "image_embeddings", "point_coords", "point_labels", "mask_input",
                "has_mask_input", "orig_im_size")]
            return tuple(t.cpu().numpy() for t in self.decoder(*args))
