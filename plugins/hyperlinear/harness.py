"""Build and call the HyperLinear CUDA kernel without TensorRT (tests and benchmarks).

The kernel source is compiled with nvcc into a shared library and called through its C
entry point with ctypes on torch CUDA tensors, so it is checked against the torch decode
+ matmul (compress.birkhoff.hyper_linear) on any machine with a GPU and nvcc.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

SOURCE = Path(__file__).resolve().parent / "hyperlinear_kernel.cu"
DEFAULT_ARCHS = ("87", "90")  # Jetson Orin, Hopper; CI compiles these
MAX_GAINS = 4


class Params(ctypes.Structure):
    """samedge::HyperLinearParams (hyperlinear_kernel.cuh), field for field."""

    _fields_ = [("in_features", ctypes.c_int32), ("out_features", ctypes.c_int32),
                ("codebook_size", ctypes.c_int32), ("lattice_side", ctypes.c_int32), ("side", ctypes.c_float),
                ("center", ctypes.c_float * 2), ("gains", ctypes.c_float * MAX_GAINS),
                ("gain_count", ctypes.c_int32)]


def nvcc_command(output: Path, archs=DEFAULT_ARCHS, shared: bool = False) -> list[str]:
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        raise FileNotFoundError("nvcc is not on PATH; install the CUDA toolkit to build the HyperLinear kernel")
    command = [nvcc, "-std=c++17", "-O3"]
    for arch in archs:
        command += ["-gencode", f"arch=compute_{arch},code=sm_{arch}"]
    command += ["-shared", "-Xcompiler", "-fPIC"] if shared else ["-c"]
    return command + [str(SOURCE), "-o", str(output)]


def build(output: Path, archs=DEFAULT_ARCHS, shared: bool = True) -> Path:
    result = subprocess.run(nvcc_command(output, archs, shared), capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"nvcc failed:\n{result.stderr[-4000:]}")
    return output


def params_for(layer) -> Params:
    """Params of a compress.birkhoff.hyper_linear.HyperLinear layer."""
    from compress.birkhoff.codec import lattice_side

    if len(layer.gains) > MAX_GAINS:
        raise ValueError(f"{len(layer.gains)} ring gains; the kernel takes at most {MAX_GAINS}")
    gains = list(layer.gains) + [0.0] * (MAX_GAINS - len(layer.gains))
    return Params(layer.in_features, layer.out_features, layer.codebook_size, lattice_side(layer.codebook_size),
                  layer.side, (ctypes.c_float * 2)(*layer.center), (ctypes.c_float * MAX_GAINS)(*gains),
                  len(layer.gains))


class Kernel:
    """The compiled kernel: `kernel(x, layer)` = layer(x) computed on the GPU by the fused kernel."""

    def __init__(self, library: Path):
        self.library = ctypes.CDLL(str(library))
        entry = self.library.samedge_hyperlinear_forward
        entry.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                          ctypes.c_void_p, ctypes.c_int32, ctypes.POINTER(Params), ctypes.c_void_p]
        entry.restype = ctypes.c_int
        self._entry = entry

    def __call__(self, x, layer):
        import torch

        if x.dtype not in (torch.float32, torch.float16) or not x.is_cuda:
            raise ValueError("x must be a float32 or float16 CUDA tensor")
        flat = x.reshape(-1, layer.in_features).contiguous()
        codes = layer.codes.to(device=x.device, dtype=torch.int32).contiguous()
        row_scale = layer.row_scale.to(device=x.device, dtype=torch.float32).contiguous()
        bias = None if layer.bias is None else layer.bias.detach().to(device=x.device, dtype=torch.float32)
        y = torch.empty(flat.shape[0], layer.out_features, device=x.device, dtype=x.dtype)
        params = params_for(layer)
        stream = torch.cuda.current_stream(x.device).cuda_stream
        status = self._entry(0 if x.dtype == torch.float32 else 1, flat.data_ptr(), codes.data_ptr(),
                             row_scale.data_ptr(), None if bias is None else bias.data_ptr(), y.data_ptr(),
                             flat.shape[0], ctypes.byref(params), stream)
        if status != 0:
            raise RuntimeError(f"HyperLinear kernel launch failed with CUDA error {status}")
        return y.reshape(*x.shape[:-1], layer.out_features)
