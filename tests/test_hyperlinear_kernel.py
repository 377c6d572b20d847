"""The HyperLinear CUDA kernel: compiles for Jetson and desktop archs; equals the torch decode
+ matmul on a GPU (skipped where there is none)."""

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from plugins.hyperlinear import harness

needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")

# Every Linear shape of vit_b's encoder (in, out), an odd width, and the demo model's.
SHAPES = [(768, 2304), (768, 768), (768, 3072), (3072, 768), (17, 40), (192, 576)]


@needs_nvcc
def test_kernel_compiles_for_orin_and_hopper(tmp_path):
    out = harness.build(tmp_path / "hyperlinear.o", archs=("87", "90"), shared=False)
    assert out.stat().st_size > 0


def _layer(in_features, out_features, seed):
    from compress.birkhoff import codec
    from compress.birkhoff.hyper_linear import HyperLinear

    rng = np.random.default_rng(seed)
    weight = rng.standard_t(4, (out_features, in_features)) * 0.03  # tails: outer rings in use
    encoded = codec.encode(weight, row_pairs=True)
    return HyperLinear.from_encoded(encoded, bias=torch.from_numpy(rng.normal(0, 0.1, out_features)).float())


@needs_nvcc
@needs_gpu
@pytest.mark.parametrize("in_features, out_features", SHAPES)
@pytest.mark.parametrize("tokens", [1, 8, 64, 4096])
def test_kernel_equals_torch_decode_and_matmul(tmp_path_factory, in_features, out_features, tokens):
    library = tmp_path_factory.getbasetemp() / "libhyperlinear.so"
    if not library.exists():
        harness.build(library)
    kernel = harness.Kernel(library)
    layer = _layer(in_features, out_features, seed=in_features + out_features)
    x = torch.randn(tokens, in_features, generator=torch.Generator().manual_seed(0)).cuda()
    weight = layer.decoded_weight().cuda()
    expected = x.double() @ weight.double().T + layer.bias.detach().cuda().double()
    got = kernel(x, layer).double()
    assert ((got - expected).abs().max() / expected.abs().max()).item() <= 1e-5
    got16 = kernel(x.half(), layer).double()
    assert ((got16 - expected).abs().max() / expected.abs().max()).item() <= 2e-3


@needs_nvcc
def test_shared_library_loads_and_refuses_cpu_tensors(tmp_path):
    kernel = harness.Kernel(harness.build(tmp_path / "libhyperlinear.so", archs=("90",)))
    with pytest.raises(ValueError, match="CUDA tensor"):
        kernel(torch.zeros(2, 17), _layer(17, 40, seed=0))
    params = harness.params_for(_layer(17, 40, seed=0))
    assert params.in_features == 17 and params.out_features == 40 and 1 <= params.gain_count <= 4


TRT_HEADERS = Path(os.environ.get("SAMEDGE_TRT_HEADERS", "/tmp/trt-headers"))


@needs_nvcc
@pytest.mark.parametrize("version", ["10.3", "11.1"])
def test_plugin_compiles_against_tensorrt_headers(tmp_path, version):
    """Needs the public TensorRT headers (never committed): ../shared/scripts/trt-headers.sh
    GIT_DIR extracts them to /tmp/trt-headers/<version>/include (or set SAMEDGE_TRT_HEADERS)."""
    include = TRT_HEADERS / version / "include"
    if not (include / "NvInfer.h").is_file():
        pytest.skip(f"TensorRT {version} headers not at {include}; see this test's docstring")
    source = harness.SOURCE.with_name("hyperlinear_plugin.cpp")
    result = subprocess.run([shutil.which("nvcc"), "-std=c++17", "-Xcompiler", "-Wno-deprecated-declarations",
                             f"-I{include}", "-c", str(source), "-o", str(tmp_path / "plugin.o")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
