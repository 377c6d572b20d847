"""Tensors and errors across Triton's Python-backend boundary, for the samedge models (triton_model.py,
tracker_model.py).

Tensors cross by DLPack, not the backend's numpy bridge: the stub in the nvidia-pytriton wheel was built
against numpy 1, and its numpy bridge reads numpy 2 arrays as zeros.
"""

from __future__ import annotations

import ctypes

import numpy as np

from .protocol import RequestError


def refusal(err: Exception):
    import triton_python_backend_utils as pb_utils

    known = isinstance(err, RequestError)
    text = str(err) if known else f"samedge could not answer the request ({type(err).__name__}: {err})"
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(text))


class _Exported:
    """A DLPack producer for a capsule the backend gives (numpy takes objects, not bare capsules)."""

    def __init__(self, capsule):
        self.capsule = capsule

    def __dlpack__(self, *args, **kwargs):
        return self.capsule

    def __dlpack_device__(self):
        return (1, 0)  # kDLCPU


def to_numpy(tensor) -> np.ndarray:
    # Copied: the request's memory is the backend's once execute returns.
    if not tensor.is_cpu():
        raise RuntimeError(f"{tensor.name()} is in GPU memory; samedge's model reads CPU tensors (a Triton whose Python "
                           "backend lacks preferred_memory for BLS outputs is too old: use 23.09 or later)")
    return np.array(np.from_dlpack(_Exported(tensor.to_dlpack())), copy=True)


def to_triton(name: str, value: np.ndarray):
    import triton_python_backend_utils as pb_utils

    if value.size == 0:  # no data for the numpy bridge to lose; DLPack's strides of an empty array are refused
        return pb_utils.Tensor(name, np.empty(value.shape, value.dtype))
    capsule = np.ascontiguousarray(value).__dlpack__()  # unversioned, the kind the backend reads
    tensor = pb_utils.Tensor.from_dlpack(name, capsule)
    # The backend now owns the tensor (it calls its deleter) but marks the capsule "used_dlpack", not
    # DLPack's "used_dltensor": so named, numpy's capsule destructor would log an error for every output.
    _set_capsule_name(capsule, _USED_NAME)
    return tensor


_USED_NAME = ctypes.c_char_p(b"used_dltensor")  # kept alive: a capsule keeps a pointer to its name
_set_capsule_name = ctypes.pythonapi.PyCapsule_SetName
_set_capsule_name.argtypes = [ctypes.py_object, ctypes.c_char_p]
