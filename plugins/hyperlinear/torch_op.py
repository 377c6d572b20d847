"""HyperLinear layers of a torch model running the fused CUDA kernel (torch CUDA latency).

`use_fused_kernel(model, kernel)` replaces every `compress.birkhoff.hyper_linear.HyperLinear`
in `model` by `FusedHyperLinear`, which hands CUDA inputs to the kernel that
`harness.Kernel` wraps and anything else to the original layer, so a model stays usable on
the CPU. The kernel picks its path as the TensorRT plugin does: the fused decode + GEMM (no
dense weight), or, for float16 inputs of at least its threshold of rows, W decoded into a
workspace for that call and cuBLASLt.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn


class FusedHyperLinear(nn.Module):
    def __init__(self, layer: nn.Module, kernel):
        super().__init__()
        self.layer = layer  # keeps the codes, scales and bias (moved with the model by .to())
        self.kernel = kernel

    def forward(self, x):
        if x.is_cuda:
            return self.kernel(x, self.layer)
        return self.layer(x)


def use_fused_kernel(model: nn.Module, kernel) -> int:
    """Swap every HyperLinear of `model` for a FusedHyperLinear in place; how many were swapped."""
    from compress.birkhoff.hyper_linear import HyperLinear

    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, HyperLinear):
                setattr(parent, name, FusedHyperLinear(child, kernel))
                swapped += 1
    return swapped


def load_kernel(work: Path):
    """The kernel compiled with nvcc for this machine's GPU (harness.kernel_archs(): its own
    compute capability, SASS + PTX), cached in `work` per source version and arch."""
    from . import harness

    return harness.Kernel(harness.cached_library(Path(work), harness.kernel_archs()))
