"""Inference backends behind one small interface (`base.Backend`), opened by name from one
registry (`registry`): ONNX Runtime, OpenVINO, TensorRT and the torch reference."""

from __future__ import annotations

from ..bundle import Bundle
from . import registry
from .base import Backend, BackendOptions, BaseBackend, Closable, ClosedError, abilities
from .choice import Choice, choose
from .ort_backend import OnnxRuntimeBackend
from .registry import AUTO, register, unregister

__all__ = ["AUTO", "BACKENDS", "Backend", "BackendOptions", "BaseBackend", "Choice", "Closable", "ClosedError",
           "OnnxRuntimeBackend", "abilities", "choose", "make_backend", "register", "unregister"]


def __getattr__(name: str):
    # BACKENDS: "auto" and the registered names as they are when read (`from ... import BACKENDS`
    # keeps that moment's; registry.choices() is always current).
    if name == "BACKENDS":
        return registry.choices()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_backend(bundle: Bundle, name: str = AUTO, providers=None, device: str = "cpu", low_memory: bool = False):
    """The backend `name` (auto: runtime.backends.choice.choose's pick) opened for `bundle`."""
    choice = registry.resolve(bundle, name, providers, low_memory)
    options = BackendOptions(None if providers is None else tuple(providers), device, low_memory)
    return registry.open_backend(bundle, choice, options)
