"""The HyperLinear CUDA kernel: compiles for Jetson and desktop archs; equals the torch decode
+ matmul on a GPU (skipped where there is none)."""

import ctypes
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

# Every Linear shape of vit_b's encoder (in, out), odd widths (one K step; two with a tail of
# one and an N tail), and the demo model's.
SHAPES = [(768, 2304), (768, 768), (768, 3072), (3072, 768), (17, 40), (33, 100), (192, 576)]
# fp16 paths of the kernel (samedge_hyperlinear_forward_path's tile_m): 1 = CUDA cores, else the
# tensor-core row tile. The automatic choice depends on the GPU's SM count; these force each.
FP16_PATHS = [1, 32, 64, 128]
CUDA_ERROR_INVALID_VALUE = 1


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
@pytest.mark.parametrize("tokens", [1, 8, 64, 130, 4096])
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


def _forward_path(kernel, x, layer, tile_m):
    """kernel(x, layer) through samedge_hyperlinear_forward_path; x: a contiguous [M, K] CUDA tensor."""
    entry = kernel.library.samedge_hyperlinear_forward_path
    entry.argtypes = [ctypes.c_int, ctypes.c_int] + [ctypes.c_void_p] * 5 + [
        ctypes.c_int32, ctypes.POINTER(harness.Params), ctypes.c_void_p]
    entry.restype = ctypes.c_int
    codes = layer.codes.to(device=x.device, dtype=torch.int32).contiguous()
    row_scale = layer.row_scale.to(device=x.device, dtype=torch.float32).contiguous()
    bias = layer.bias.detach().to(device=x.device, dtype=torch.float32).contiguous()
    y = torch.empty(x.shape[0], layer.out_features, device=x.device, dtype=x.dtype)
    status = entry(0 if x.dtype == torch.float32 else 1, tile_m, x.data_ptr(), codes.data_ptr(),
                   row_scale.data_ptr(), bias.data_ptr(), y.data_ptr(), x.shape[0],
                   ctypes.byref(harness.params_for(layer)), torch.cuda.current_stream(x.device).cuda_stream)
    assert status == 0, f"CUDA error {status}"
    return y


@needs_nvcc
@needs_gpu
@pytest.mark.parametrize("in_features, out_features", [(768, 2304), (3072, 768), (33, 100), (17, 40)])
@pytest.mark.parametrize("tokens", [1, 37, 4096])
@pytest.mark.parametrize("tile_m", FP16_PATHS)
def test_every_fp16_path_equals_torch_decode_and_matmul(tmp_path_factory, in_features, out_features, tokens,
                                                        tile_m):
    """Each fp16 kernel (CUDA cores; tensor cores with 32/64/128-row tiles), M and K tails
    included. The error allowed is what rounding W and Y to half costs: W's relative error is
    at most 2^-11 per weight, with random signs its share of a sum of K products grows like
    sqrt(K), as the sum itself does, so relative to max |Y| it stays near 2^-11 / sqrt(3) for
    any K; Y's own rounding adds at most 2^-11 of max |Y|. Together below 1e-3 < 2e-3."""
    library = tmp_path_factory.getbasetemp() / "libhyperlinear.so"
    if not library.exists():
        harness.build(library)
    kernel = harness.Kernel(library)
    layer = _layer(in_features, out_features, seed=in_features + out_features)
    x = torch.randn(tokens, in_features, generator=torch.Generator().manual_seed(1)).half().cuda()
    weight = layer.decoded_weight().cuda()
    expected = x.double() @ weight.double().T + layer.bias.detach().cuda().double()
    got = _forward_path(kernel, x, layer, tile_m).double()
    assert ((got - expected).abs().max() / expected.abs().max()).item() <= 2e-3


@needs_nvcc
@needs_gpu
@pytest.mark.parametrize("tile_m", FP16_PATHS)
def test_fp16_input_not_16_byte_aligned(tmp_path_factory, tile_m):
    """K % 8 == 0 but X starts 2 bytes past an aligned address: the tensor-core kernel must
    stage X one half at a time instead of 16 bytes at a time."""
    library = tmp_path_factory.getbasetemp() / "libhyperlinear.so"
    if not library.exists():
        harness.build(library)
    kernel = harness.Kernel(library)
    tokens, in_features, out_features = 70, 768, 768
    layer = _layer(in_features, out_features, seed=3)
    storage = torch.randn(tokens * in_features + 1, generator=torch.Generator().manual_seed(2)).half().cuda()
    x = storage[1:].view(tokens, in_features)
    assert x.data_ptr() % 16 != 0
    expected = x.double() @ layer.decoded_weight().cuda().double().T + layer.bias.detach().cuda().double()
    got = _forward_path(kernel, x, layer, tile_m).double()
    assert ((got - expected).abs().max() / expected.abs().max()).item() <= 2e-3
    # Same tile, same summation order: the aligned copy (staged 16 bytes at a time) gives the same bits.
    assert torch.equal(got.half(), _forward_path(kernel, x.clone(), layer, tile_m))


@needs_nvcc
def test_path_entry_refuses_unknown_paths(tmp_path):
    """Refused before any CUDA call, so this runs without a GPU: fp32 has only the CUDA-core
    kernel, and fp16 tensor-core tiles are 32, 64 or 128 rows."""
    kernel = harness.Kernel(harness.build(tmp_path / "libhyperlinear.so", archs=("90",)))
    entry = kernel.library.samedge_hyperlinear_forward_path
    entry.argtypes = [ctypes.c_int, ctypes.c_int] + [ctypes.c_void_p] * 5 + [
        ctypes.c_int32, ctypes.POINTER(harness.Params), ctypes.c_void_p]
    params = harness.params_for(_layer(17, 40, seed=0))
    for dtype, tile_m in [(0, 32), (0, 128), (1, 48), (1, 2), (1, -1)]:
        assert entry(dtype, tile_m, None, None, None, None, None, 4, ctypes.byref(params), None) \
            == CUDA_ERROR_INVALID_VALUE


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
