"""The backends samedge can open by name: one table, each entry imported only when used.

A backend enters by one `register` call; Session(bundle, backend=NAME), the CLIs' --backend
choices (runtime.predict, runtime.parity, runtime.everything) and the benchmarks' take it
from here. "auto" is resolved once, by `resolve` (policy: runtime.backends.choice.choose).

    register("onnxruntime", "runtime.backends.ort_backend:OnnxRuntimeBackend", "ONNX Runtime")

The class opens itself for a bundle with `for_bundle(bundle, options)`, refusing a bundle that
lacks what it runs and options it does not take (base.BaseBackend).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from ..bundle import Bundle, BundleError
from .base import BackendOptions
from .choice import Choice, choose

AUTO = "auto"


@dataclass(frozen=True)
class Entry:
    name: str
    target: str | type  # "module:Class" (imported on first use: each backend's library is an extra) or the class
    summary: str

    def load(self) -> type:
        if isinstance(self.target, type):
            return self.target
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)


_ENTRIES: dict[str, Entry] = {}


def register(name: str, target: str | type, summary: str) -> None:
    """Make `target` (a base.BaseBackend subclass, or its "module:Class") openable as `name`."""
    if name == AUTO or not name.isidentifier():
        raise ValueError(f"backend name {name!r}: use an identifier other than {AUTO!r}")
    _ENTRIES[name] = Entry(name, target, summary)


def unregister(name: str) -> None:
    _ENTRIES.pop(name, None)


def names() -> tuple[str, ...]:
    """The registered backends, in registration order."""
    return tuple(_ENTRIES)


def choices() -> tuple[str, ...]:
    """What a --backend option takes: auto and every registered backend."""
    return (AUTO, *_ENTRIES)


def backend_class(name: str) -> type:
    if name not in _ENTRIES:
        raise ValueError(f"unknown backend {name!r}; choose one of {choices()}")
    return _ENTRIES[name].load()


def resolve(bundle: Bundle, name: str, providers=None, low_memory: bool = False) -> Choice:
    """The backend `name` stands for on this bundle here, and why: auto's pick, or the name itself."""
    if name == AUTO:
        return choose(bundle, providers, low_memory)
    if bundle.url is not None and name != "triton":
        raise BundleError(f"{bundle.url} is a model on a Triton server: open it with backend triton (or auto), not {name}")
    backend_class(name)  # an unknown name is refused before any work
    return Choice(name, "asked for by name", named=True)


def open_backend(bundle: Bundle, choice: Choice, options: BackendOptions):
    """The chosen backend, opened for `bundle`. Options the backend does not take are refused when
    it was named; auto's pick already weighed them (TensorRT engines are used with low_memory)."""
    cls = backend_class(choice.name)
    return cls.for_bundle(bundle, options if choice.named else options.kept(cls.takes_options))


register("onnxruntime", "runtime.backends.ort_backend:OnnxRuntimeBackend", "ONNX Runtime (every bundle; CPU or CUDA)")
register("openvino", "runtime.backends.openvino_backend:OpenVINOBackend", "OpenVINO on the CPU (the cpu extra)")
register("tensorrt", "runtime.backends.tensorrt_backend:TensorRTBackend", "TensorRT engines built on the device")
register("torch", "runtime.backends.torch_backend:TorchBackend", "the PyTorch reference (the checkpoint itself)")
register("triton", "runtime.backends.triton_backend:TritonBackend",
         "a samedge model on a Triton server (grpc://host:8001/samedge; the serve extra)")
