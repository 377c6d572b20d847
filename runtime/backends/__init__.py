"""Inference backends behind one small interface (`base.Backend`)."""

from __future__ import annotations

from ..bundle import Bundle, BundleError

BACKENDS = ("auto", "onnxruntime", "torch")


def make_backend(bundle: Bundle, name: str = "auto", providers=None, device: str = "cpu"):
    if name in ("auto", "onnxruntime"):
        from .ort_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(bundle.encoder, bundle.decoder, providers)
    if name == "torch":
        from .torch_backend import TorchBackend

        if bundle.checkpoint is None:
            raise BundleError(f"the torch backend needs the checkpoint the bundle at {bundle.root} "
                              "was built from, and the manifest names none that exists")
        return TorchBackend.from_checkpoint(bundle.checkpoint, device)
    raise ValueError(f"unknown backend {name!r}; choose one of {BACKENDS}")
