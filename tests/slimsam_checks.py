"""Checks the SlimSAM tests share."""

import numpy as np
import onnxruntime as ort
import torch

from compress import load_checkpoint, save_checkpoint
from export.onnx_export import export_encoder


def assert_saves_loads_and_exports(model, folder, name: str):
    """A pruned model's checkpoint loads back to the same encoder (bit for bit), and its exported encoder
    answers as PyTorch; returns the reloaded model."""
    path = folder / f"{name}.safetensors"
    save_checkpoint(model, path)
    reloaded = load_checkpoint(path)
    size = model.config.img_size
    image = torch.randn(1, 3, size, size)
    with torch.no_grad():
        expected = model.image_encoder(image)
        torch.testing.assert_close(reloaded.image_encoder(image), expected, rtol=0, atol=0)
    export_encoder(reloaded, folder / "encoder.onnx")
    session = ort.InferenceSession(str(folder / "encoder.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"image": image.numpy()})[0], expected.numpy(), atol=1e-4)
    return reloaded
