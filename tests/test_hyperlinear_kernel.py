"""The HyperLinear CUDA kernel: compiles for Jetson and desktop archs (and for the GPU that is
there, SASS + PTX); its parameter checks, M = 0 and its decode (compiled for the host too) are
checked without a GPU; on a GPU it equals the torch decode + matmul (skipped where there is none).

Encoded layers come from plugins.hyperlinear.kernel_checks.random_layer, which encodes each
(shape, seed, variant) once per session (and once across processes with $SAMEDGE_LAYER_CACHE,
as scripts/gpu_check.sh sets), so the parametrised cases do not re-run the codec."""

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from compress.birkhoff.hyper_linear import HyperLinear, decode_weight
from plugins.hyperlinear import harness, torch_op
from plugins.hyperlinear.kernel_checks import (BITEXACT_SHAPES, bitexact_case, extended_gains, out_of_range_codes,
                                               random_layer)
from plugins.hyperlinear.spec import INDEX_BITS

needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")

# Every Linear shape of vit_b's encoder (in, out), odd widths (one K step; two with a tail of
# one and an N tail), and the demo model's.
SHAPES = [(768, 2304), (768, 768), (768, 3072), (3072, 768), (17, 40), (33, 100), (192, 576)]
# fp16 paths of the kernel (samedge_hyperlinear_forward_path's tile_m): 1 = CUDA cores, else the
# tensor-core row tile. The automatic choice depends on the GPU's SM count; these force each.
FP16_PATHS = [1, 32, 64, 128]
CUDA_ERROR_INVALID_VALUE = 1
KERNELS = {"hyperlinearKernel<float>", "hyperlinearKernel<__half>"} | {
    f"hyperlinearTensorCoreKernel<{w}, {f}, {v}>" for w, f in ((2, 1), (4, 1), (4, 2)) for v in ("true", "false")}


def _layer(in_features, out_features, seed):
    """Cached: encoded once per session, never modified by the tests."""
    return random_layer(in_features, out_features, seed)


# ---- compile-level and host-side checks (nvcc, no GPU) -----------------------------------------

@needs_nvcc
def test_kernel_compiles_for_orin_and_hopper(tmp_path):
    """The CI compile check: sm_87 and sm_90, SASS + PTX, every kernel through ptxas."""
    out = harness.build(tmp_path / "hyperlinear.o", archs=harness.CI_ARCHS, shared=False, ptxas_verbose=True)
    assert out.stat().st_size > 0
    rows = harness.ptxas_summary(Path(f"{out}.ptxas.txt").read_text())
    for arch in ("sm_87", "sm_90"):
        assert {r["kernel"] for r in rows if r["arch"] == arch} == KERNELS
    assert all(r["registers"] is not None and r["spill_stores"] is not None for r in rows)


def test_nvcc_command_embeds_ptx_for_each_arch():
    command = harness.nvcc_command(Path("x.so"), archs=("80", "90"), shared=True, ptxas_verbose=True)
    assert "arch=compute_80,code=[sm_80,compute_80]" in command
    assert "arch=compute_90,code=[sm_90,compute_90]" in command
    assert command[command.index("-Xptxas") + 1] == "-v"
    assert "-ffp-contract=off" in command  # the host decode stays free of FMA contraction


def test_archs_follow_the_gpu_and_fall_back_to_ci(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert harness.kernel_archs() == harness.CI_ARCHS
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 6))
    monkeypatch.setattr(harness, "_nvcc_archs", lambda nvcc: (75, 80, 86, 89, 90))
    monkeypatch.setattr(harness, "find_nvcc", lambda: "nvcc")
    assert harness.kernel_archs() == ("86",)
    # A GPU newer than this nvcc: the newest arch it has, whose PTX the driver JIT-compiles.
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (12, 1))
    assert harness.kernel_archs() == ("90",)
    # An nvcc that cannot list its archs: the GPU's own.
    monkeypatch.setattr(harness, "_nvcc_archs", lambda nvcc: ())
    assert harness.kernel_archs() == ("121",)


def test_load_kernel_builds_for_kernel_archs(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(harness, "kernel_archs", lambda device=None: ("75",))
    monkeypatch.setattr(harness, "cached_library", lambda directory=None, archs=None: calls.append(
        (directory, archs)) or tmp_path / "lib.so")
    monkeypatch.setattr(harness, "Kernel", lambda library: ("kernel", library))
    assert torch_op.load_kernel(tmp_path) == ("kernel", tmp_path / "lib.so")
    assert calls == [(tmp_path, ("75",))]


@pytest.fixture(scope="module")
def host_kernel(tmp_path_factory):
    """The library built once for sm_90: loads and answers host-side calls on any machine."""
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc not installed")
    return harness.Kernel(harness.cached_library(tmp_path_factory.mktemp("host-kernel"), archs=("90",)))


def test_cached_library_is_reused_and_keyed_by_source(host_kernel, tmp_path_factory):
    again = harness.cached_library(host_kernel.path.parent, archs=("90",))
    assert again == host_kernel.path
    assert harness.source_digest(("90",)) in again.name and harness.source_digest(("80",)) not in again.name


def test_path_entry_refuses_unknown_paths(host_kernel):
    """Refused before any CUDA call, so this runs without a GPU: fp32 has only the CUDA-core
    kernel, and fp16 tensor-core tiles are 32, 64 or 128 rows."""
    entry = host_kernel.library.samedge_hyperlinear_forward_path
    params = harness.params_for(_layer(17, 40, seed=0))
    for dtype, tile_m in [(0, 32), (0, 128), (1, 48), (1, 2), (1, -1)]:
        assert entry(dtype, tile_m, None, None, None, None, None, 4, ctypes.byref(params), None) \
            == CUDA_ERROR_INVALID_VALUE
        assert entry(dtype, tile_m, None, None, None, None, None, 0, ctypes.byref(params), None) \
            == CUDA_ERROR_INVALID_VALUE  # an unknown path is refused even with nothing to do


def test_shared_library_loads_and_refuses_cpu_tensors(host_kernel):
    with pytest.raises(ValueError, match="CUDA tensor"):
        host_kernel(torch.zeros(2, 17), _layer(17, 40, seed=0))
    params = harness.params_for(_layer(17, 40, seed=0))
    assert params.in_features == 17 and params.out_features == 40 and 1 <= params.gain_count <= 4


def _bad_params(layer):
    """(what, params, HyperLinearStatus) for every rule of hyperlinearCheck."""
    cases = []
    for field, value, status in [("in_features", 0, 2), ("out_features", -3, 2), ("codebook_size", 0, 3),
                                 ("codebook_size", -1225, 3), ("codebook_size", 65537, 3), ("lattice_side", 0, 4),
                                 ("lattice_side", -40, 4), ("lattice_side", 39, 4), ("lattice_side", 41, 4),
                                 ("gain_count", 0, 5), ("gain_count", 5, 5), ("gain_count", -1, 5)]:
        params = harness.params_for(layer)
        setattr(params, field, value)
        cases.append((f"{field}={value}", params, status))
    return cases


def test_check_names_every_bad_parameter(host_kernel):
    layer = _layer(17, 40, seed=0)
    assert layer.codebook_size == 1600
    params = harness.params_for(layer)
    assert host_kernel.check(0, params) == 0 and host_kernel.check(4096, params) == 0
    assert host_kernel.check(-1, params) == 1
    assert host_kernel.check(1, None) == 6
    for what, bad, status in _bad_params(layer):
        assert host_kernel.check(1, bad) == status, what
    names = {host_kernel.status_name(status) for status in range(7)}
    assert len(names) == 7 and not any("unknown" in name for name in names)
    assert "codebook_size" in host_kernel.status_name(3) and "lattice_side" in host_kernel.status_name(4)
    assert "unknown" in host_kernel.status_name(99)


def test_forward_refuses_bad_parameters_before_any_cuda_call(host_kernel):
    """Without a GPU any CUDA call would fail with another code (no device / no driver), so
    invalid value here means the call was refused up front; with m = 0 too (params first)."""
    lib = host_kernel.library
    for what, bad, _ in _bad_params(_layer(17, 40, seed=0)):
        for dtype in (0, 1):
            for m in (0, 4):
                assert lib.samedge_hyperlinear_forward(dtype, None, None, None, None, None, m, ctypes.byref(bad),
                                                       None) == CUDA_ERROR_INVALID_VALUE, (what, dtype, m)
                assert lib.samedge_hyperlinear_forward_path(dtype, 1, None, None, None, None, None, m,
                                                            ctypes.byref(bad), None) == CUDA_ERROR_INVALID_VALUE
    good = harness.params_for(_layer(17, 40, seed=0))
    for dtype in (0, 1):
        assert lib.samedge_hyperlinear_forward(dtype, None, None, None, None, None, -1, ctypes.byref(good),
                                               None) == CUDA_ERROR_INVALID_VALUE
        assert lib.samedge_hyperlinear_forward(dtype, None, None, None, None, None, 4, None, None) \
            == CUDA_ERROR_INVALID_VALUE  # null params
        # m > 0 with null operands: refused, not launched
        assert lib.samedge_hyperlinear_forward(dtype, None, None, None, None, None, 4, ctypes.byref(good),
                                               None) == CUDA_ERROR_INVALID_VALUE


def test_zero_rows_is_a_no_op(host_kernel):
    """M = 0 returns success without launching: without a GPU a launch could not succeed."""
    lib = host_kernel.library
    params = harness.params_for(_layer(17, 40, seed=0))
    for dtype, paths in ((0, (0, 1)), (1, (0, 1, 32, 64, 128))):
        assert lib.samedge_hyperlinear_forward(dtype, None, None, None, None, None, 0, ctypes.byref(params),
                                               None) == 0
        for tile_m in paths:
            assert lib.samedge_hyperlinear_forward_path(dtype, tile_m, None, None, None, None, None, 0,
                                                        ctypes.byref(params), None) == 0


@pytest.mark.parametrize("variant", ["reference", "scaled"])
@pytest.mark.parametrize("in_features, out_features", [(17, 40), (33, 100), (192, 576), (768, 768)])
def test_host_decode_equals_torch_decode_bit_for_bit(host_kernel, variant, in_features, out_features):
    """The kernel's decode function, compiled for the host, against decode_weight (float32 torch)."""
    layer = random_layer(in_features, out_features, seed=in_features + out_features, variant=variant, bias=False)
    assert torch.equal(host_kernel.decode_host(layer), layer.decoded_weight())


def test_out_of_range_rings_are_clamped_to_the_last_gain(host_kernel):
    """Indices past the gains (and words with the high bit set) decode as the torch reference
    does with the last gain repeated: finite weights, no read past the gains."""
    layer = _layer(33, 40, seed=33040)
    signed, unsigned = out_of_range_codes(layer)
    assert (signed < 0).any() and (unsigned // (1 << INDEX_BITS) // layer.codebook_size >= len(layer.gains)).any()
    got = host_kernel.decode_host(layer, signed)
    expected = decode_weight(unsigned, layer.row_scale, in_features=layer.in_features,
                             codebook_size=layer.codebook_size, side=layer.side, center=layer.center,
                             gains=extended_gains(layer))
    assert torch.isfinite(got).all() and torch.equal(got, expected)
    # Valid codes are unchanged by the clamp.
    assert torch.equal(host_kernel.decode_host(layer), layer.decoded_weight())


def test_random_layer_cache_round_trips_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMEDGE_LAYER_CACHE", str(tmp_path))
    random_layer.cache_clear()
    try:
        first = random_layer(17, 40, seed=123)
        files = list(tmp_path.glob("*.pt"))
        assert len(files) == 1
        random_layer.cache_clear()
        second = random_layer(17, 40, seed=123)  # read back, not encoded
        assert torch.equal(first.codes, second.codes) and torch.equal(first.bias, second.bias)
        assert (first.gains, first.center, first.side) == (second.gains, second.center, second.side)
    finally:
        random_layer.cache_clear()


# ---- on a GPU ------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def gpu_kernel(tmp_path_factory):
    """Built once for this GPU (harness.kernel_archs()); in $SAMEDGE_KERNEL_CACHE when set, as
    gpu_check.sh does, so its build step's library is reused."""
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc not installed")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU on this machine")
    directory = None if os.environ.get("SAMEDGE_KERNEL_CACHE") else tmp_path_factory.mktemp("kernel")
    return harness.Kernel(harness.cached_library(directory))


_weights = {}


def _weight64(layer):
    """layer.decoded_weight() as float64 on the GPU, once per layer."""
    if id(layer) not in _weights:
        _weights[id(layer)] = layer.decoded_weight().cuda().double()
    return _weights[id(layer)]


@needs_gpu
@pytest.mark.parametrize("in_features, out_features", SHAPES)
@pytest.mark.parametrize("tokens", [1, 8, 64, 130, 4096])
def test_kernel_equals_torch_decode_and_matmul(gpu_kernel, in_features, out_features, tokens):
    layer = _layer(in_features, out_features, seed=in_features + out_features)
    x = torch.randn(tokens, in_features, generator=torch.Generator().manual_seed(0)).cuda()
    expected = x.double() @ _weight64(layer).T + layer.bias.detach().cuda().double()
    got = gpu_kernel(x, layer).double()
    assert ((got - expected).abs().max() / expected.abs().max()).item() <= 1e-5
    got16 = gpu_kernel(x.half(), layer).double()
    assert ((got16 - expected).abs().max() / expected.abs().max()).item() <= 2e-3


@needs_gpu
@pytest.mark.parametrize("in_features, out_features", [(768, 2304), (3072, 768), (33, 100), (17, 40)])
@pytest.mark.parametrize("tokens", [1, 37, 4096])
@pytest.mark.parametrize("tile_m", FP16_PATHS)
def test_every_fp16_path_equals_torch_decode_and_matmul(gpu_kernel, in_features, out_features, tokens, tile_m):
    """Each fp16 kernel (CUDA cores; tensor cores with 32/64/128-row tiles), M and K tails
    included. The error allowed is what rounding W and Y to half costs: W's relative error is
    at most 2^-11 per weight, with random signs its share of a sum of K products grows like
    sqrt(K), as the sum itself does, so relative to max |Y| it stays near 2^-11 / sqrt(3) for
    any K; Y's own rounding adds at most 2^-11 of max |Y|. Together below 1e-3 < 2e-3."""
    layer = _layer(in_features, out_features, seed=in_features + out_features)
    x = torch.randn(tokens, in_features, generator=torch.Generator().manual_seed(1)).half().cuda()
    expected = x.double() @ _weight64(layer).T + layer.bias.detach().cuda().double()
    got = gpu_kernel(x, layer, tile_m=tile_m).double()
    assert ((got - expected).abs().max() / expected.abs().max()).item() <= 2e-3


@needs_gpu
@pytest.mark.parametrize("tile_m", FP16_PATHS)
def test_fp16_input_not_16_byte_aligned(gpu_kernel, tile_m):
    """K % 8 == 0 but X starts 2 bytes past an aligned address: the tensor-core kernel must
    stage X one half at a time instead of 16 bytes at a time."""
    tokens, in_features, out_features = 70, 768, 768
    layer = _layer(in_features, out_features, seed=3)
    storage = torch.randn(tokens * in_features + 1, generator=torch.Generator().manual_seed(2)).half().cuda()
    x = storage[1:].view(tokens, in_features)
    assert x.data_ptr() % 16 != 0
    expected = x.double() @ _weight64(layer).T + layer.bias.detach().cuda().double()
    got = gpu_kernel(x, layer, tile_m=tile_m).double()
    assert ((got - expected).abs().max() / expected.abs().max()).item() <= 2e-3
    # Same tile, same summation order: the aligned copy (staged 16 bytes at a time) gives the same bits.
    assert torch.equal(got.half(), gpu_kernel(x.clone(), layer, tile_m=tile_m))


@needs_gpu
@pytest.mark.parametrize("variant", ["reference", "scaled"])
@pytest.mark.parametrize("in_features, out_features", BITEXACT_SHAPES)
def test_identity_input_gives_the_decoded_weight_bit_for_bit(gpu_kernel, variant, in_features, out_features):
    """X = I (M = K), no bias: Y = W^T exactly in fp32, and W^T rounded to half in every fp16 path."""
    layer = random_layer(in_features, out_features, seed=in_features + out_features, variant=variant, bias=False)
    rows = bitexact_case(gpu_kernel, layer)
    assert all(row["equal"] for row in rows), [row for row in rows if not row["equal"]]


@needs_gpu
def test_zero_rows_on_the_gpu(gpu_kernel):
    layer = _layer(17, 40, seed=0)
    for dtype in (torch.float32, torch.float16):
        x = torch.randn(2, 0, 17, device="cuda", dtype=dtype)
        y = gpu_kernel(x, layer)
        assert y.shape == (2, 0, 40) and y.dtype == dtype
        # Real pointers, m = 0: success and nothing written.
        xs = torch.randn(8, 17, device="cuda", dtype=dtype)
        ys = torch.full((8, 40), 7.0, device="cuda", dtype=dtype)
        codes, row_scale = layer.codes.cuda(), layer.row_scale.cuda()
        for tile_m in ((None, 1) if dtype == torch.float32 else (None,) + tuple(FP16_PATHS)):
            status = gpu_kernel.launch(0 if dtype == torch.float32 else 1, xs.data_ptr(), codes.data_ptr(),
                                       row_scale.data_ptr(), None, ys.data_ptr(), 0, harness.params_for(layer),
                                       torch.cuda.current_stream().cuda_stream, tile_m)
            assert status == 0
        torch.cuda.synchronize()
        assert (ys == 7.0).all()
        # Nothing left pending: the next call runs normally.
        assert torch.isfinite(gpu_kernel(xs, layer)).all()


@needs_gpu
def test_bad_parameters_on_the_gpu_are_refused_and_named(gpu_kernel):
    layer = _layer(33, 40, seed=33040)
    codes, row_scale = layer.codes.cuda(), layer.row_scale.cuda()
    x = torch.randn(37, 33, device="cuda")
    y = torch.full((37, 40), 7.0, device="cuda")
    stream = torch.cuda.current_stream().cuda_stream
    for what, bad, status in _bad_params(layer):
        for dtype, xs, ys in ((0, x, y), (1, x.half(), y.half())):
            got = gpu_kernel.launch(dtype, xs.data_ptr(), codes.data_ptr(), row_scale.data_ptr(), None, ys.data_ptr(),
                                    37, bad, stream)
            assert got == CUDA_ERROR_INVALID_VALUE, what
            assert gpu_kernel.check(37, bad) == status
    torch.cuda.synchronize()
    assert (y == 7.0).all()
    error = gpu_kernel._failure(CUDA_ERROR_INVALID_VALUE, 37, _bad_params(layer)[2][1])
    assert isinstance(error, harness.KernelError) and "codebook_size" in str(error)
    assert torch.isfinite(gpu_kernel(x, layer)).all()


@needs_gpu
def test_out_of_range_rings_are_clamped_on_the_gpu(gpu_kernel):
    """The kernel's clamp equals its host decode (itself the torch decode with the last gain
    repeated): X = I reads the decoded weights out exactly."""
    base = _layer(33, 40, seed=33040)
    signed, _ = out_of_range_codes(base)
    layer = HyperLinear(base.in_features, base.out_features, codebook_size=base.codebook_size, side=base.side,
                        center=base.center, gains=base.gains, codes=signed, row_scale=base.row_scale, bias=None)
    expected = gpu_kernel.decode_host(layer)
    eye = torch.eye(33, device="cuda")
    assert torch.equal(gpu_kernel(eye, layer).cpu(), expected.T)
    for tile_m in (None,) + tuple(FP16_PATHS):
        assert torch.equal(gpu_kernel(eye.half(), layer, tile_m=tile_m).cpu(), expected.half().T)


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
