"""The HyperLinear CUDA kernel: compiles for Jetson and desktop archs (and for the GPU that is
there, SASS + PTX); its parameter checks, M = 0, its pair table and its decode (compiled for
the host too) are checked without a GPU against plugins/hyperlinear/reference.py, bit for bit;
on a GPU every path equals the torch decode + matmul (skipped where there is none).

Encoded layers come from plugins.hyperlinear.kernel_checks.random_layer, which encodes each
(shape, seed, variant) once per session (and once across processes with $SAMEDGE_LAYER_CACHE,
as scripts/gpu_check.sh sets), so the parametrised cases do not re-run the codec."""

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from compress.birkhoff.codec import lattice_side
from compress.birkhoff.hyper_linear import HyperLinear
from plugins.hyperlinear import harness, reference, spec, torch_op
from plugins.hyperlinear.kernel_checks import (BITEXACT_SHAPES, bitexact_case, clamped_weight, damaged_codes,
                                               random_layer)

needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")

# Every Linear shape of vit_b's encoder (in, out), odd widths (one K step; two with a tail of
# one and an N tail), and the demo model's.
SHAPES = [(768, 2304), (768, 768), (768, 3072), (3072, 768), (17, 40), (33, 100), (192, 576)]
# fp16 paths of the kernel (samedge_hyperlinear_forward_path): 1 = CUDA cores, 2 = decode +
# cuBLASLt, else the tensor-core row tile. The automatic choice depends on M and the GPU's SM
# count; these force each.
FP16_PATHS = list(harness.FP16_PATHS)
CUDA_ERROR_INVALID_VALUE = 1
KERNELS = {"hyperlinearKernel<float>", "hyperlinearKernel<__half>", "hyperlinearDecodeKernel"} | {
    f"hyperlinearTensorCoreKernel<{w}, {f}, {v}>" for w, f in ((2, 1), (4, 1), (4, 2)) for v in ("true", "false")}


def _layer(in_features, out_features, seed):
    """Cached: encoded once per session, never modified by the tests."""
    return random_layer(in_features, out_features, seed)


def _reference_weight(layer, words=None):
    """reference.decode_linear of the layer (numpy float32 [N, K])."""
    return reference.decode_linear(
        (layer.codes if words is None else words).numpy(), layer.row_scale.numpy(), in_features=layer.in_features,
        out_features=layer.out_features, codebook_size=layer.codebook_size,
        lattice_side=lattice_side(layer.codebook_size), index_bits=layer.index_bits, side=layer.side,
        center=layer.center, gains=layer.gains)


def _bits(array):
    return np.ascontiguousarray(array, np.float32).view(np.int32)


def _layer_of_indices(in_features, out_features, codebook_size, gains, bits, seed, indices=None):
    """A HyperLinear whose codes are `indices` (default: random ones below its table size) at
    `bits` bits, with random side, center and row scales: any index width the layout allows."""
    rng = np.random.default_rng(seed)
    count = out_features * ((in_features + 1) // 2)
    if indices is None:
        indices = rng.integers(0, codebook_size * len(gains), count)
    return HyperLinear(in_features, out_features, codebook_size=codebook_size, index_bits=bits,
                       side=rng.uniform(0.05, 0.2), center=rng.normal(0, 0.01, 2), gains=gains,
                       codes=torch.from_numpy(reference.pack(indices, bits)),
                       row_scale=torch.from_numpy(rng.uniform(0.5, 2, out_features).astype(np.float32)), bias=None)


# ---- compile-level and host-side checks (nvcc, no GPU) -----------------------------------------

@needs_nvcc
def test_kernel_compiles_for_orin_and_hopper(tmp_path):
    """The CI compile check: sm_87 and sm_90, SASS + PTX, every kernel through ptxas, no spills."""
    out = harness.build(tmp_path / "hyperlinear.o", archs=harness.CI_ARCHS, shared=False, ptxas_verbose=True)
    assert out.stat().st_size > 0
    rows = harness.ptxas_summary(Path(f"{out}.ptxas.txt").read_text())
    for arch in ("sm_87", "sm_90"):
        assert {r["kernel"] for r in rows if r["arch"] == arch} == KERNELS
    assert all(r["registers"] is not None and r["spill_stores"] == 0 for r in rows), harness.format_ptxas(rows)


@needs_nvcc
def test_nvcc_command_embeds_ptx_for_each_arch_and_links_cublaslt():
    include, library = harness.find_cublaslt()
    command = harness.nvcc_command(Path("x.so"), archs=("80", "90"), shared=True, ptxas_verbose=True)
    assert "arch=compute_80,code=[sm_80,compute_80]" in command
    assert "arch=compute_90,code=[sm_90,compute_90]" in command
    assert command[command.index("-Xptxas") + 1] == "-v"
    assert "-ffp-contract=off" in command  # the host table and decode stay free of FMA contraction
    assert f"-I{include}" in command and str(library) in command and f"-rpath={library.parent}" in command
    compile_only = harness.nvcc_command(Path("x.o"), archs=("90",), shared=False)
    assert f"-I{include}" in compile_only and str(library) not in compile_only


def test_cublaslt_root_takes_precedence(tmp_path, monkeypatch):
    (tmp_path / "include").mkdir()
    (tmp_path / "include" / "cublasLt.h").touch()
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "libcublasLt.so.12").touch()
    (tmp_path / "lib" / "libcublasLt.so.12.6.1").touch()
    monkeypatch.setenv("CUBLASLT_ROOT", str(tmp_path))
    harness.find_cublaslt.cache_clear()
    try:
        assert harness.find_cublaslt() == (tmp_path / "include", tmp_path / "lib" / "libcublasLt.so.12")
    finally:
        harness.find_cublaslt.cache_clear()


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
    try:
        harness.find_cublaslt()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    return harness.Kernel(harness.cached_library(tmp_path_factory.mktemp("host-kernel"), archs=("90",)))


def test_cached_library_is_reused_and_keyed_by_source(host_kernel, tmp_path_factory):
    again = harness.cached_library(host_kernel.path.parent, archs=("90",))
    assert again == host_kernel.path
    assert harness.source_digest(("90",)) in again.name and harness.source_digest(("80",)) not in again.name


def _entry_args(params, m, table_size=0):
    """The operands of samedge_hyperlinear_forward[_path] after the dtype (and path): all null."""
    return (None, None, None, table_size, None, None, None, m, ctypes.byref(params), None, None, 0, None)


def test_path_entry_refuses_unknown_paths(host_kernel):
    """Refused before any CUDA call, so this runs without a GPU: fp32 has only the CUDA-core
    kernel, fp16's paths are 1, 2 and the tensor-core tiles 32, 64, 128."""
    entry = host_kernel.library.samedge_hyperlinear_forward_path
    params = harness.params_for(_layer(17, 40, seed=0))
    size = host_kernel.table_size(params)
    for dtype, path in [(0, 2), (0, 32), (0, 128), (1, 48), (1, 3), (1, -1)]:
        assert entry(dtype, path, *_entry_args(params, 4, size)) == CUDA_ERROR_INVALID_VALUE
        assert entry(dtype, path, *_entry_args(params, 0, size)) == CUDA_ERROR_INVALID_VALUE  # even with nothing to do


def test_shared_library_loads_and_refuses_cpu_tensors(host_kernel):
    with pytest.raises(ValueError, match="CUDA tensor"):
        host_kernel(torch.zeros(2, 17), _layer(17, 40, seed=0))
    params = harness.params_for(_layer(17, 40, seed=0))
    assert params.in_features == 17 and params.out_features == 40 and 1 <= params.gain_count <= 4
    assert params.index_bits == _layer(17, 40, seed=0).index_bits


def _bad_params(layer):
    """(what, params, HyperLinearStatus) for every rule of hyperlinearCheck."""
    cases = []
    for field, value, status in [("in_features", 0, 2), ("out_features", -3, 2), ("codebook_size", 0, 3),
                                 ("codebook_size", -1225, 3), ("codebook_size", 65537, 3), ("lattice_side", 0, 4),
                                 ("lattice_side", -40, 4), ("lattice_side", 39, 4), ("lattice_side", 41, 4),
                                 ("gain_count", 0, 5), ("gain_count", 5, 5), ("gain_count", -1, 5),
                                 ("index_bits", 0, 7), ("index_bits", 17, 7), ("index_bits", -12, 7)]:
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
    for bits in (1, spec.MAX_INDEX_BITS):
        params.index_bits = bits
        assert host_kernel.check(1, params) == 0
    names = {host_kernel.status_name(status) for status in range(9)}
    assert len(names) == 9 and not any("unknown" in name for name in names)
    assert set(harness.STATUS_NAMES) == set(range(9))
    assert "codebook_size" in host_kernel.status_name(3) and "lattice_side" in host_kernel.status_name(4)
    assert "index_bits" in host_kernel.status_name(7) and "1..16" in host_kernel.status_name(7)
    assert "unknown" in host_kernel.status_name(99)


def test_forward_refuses_bad_parameters_before_any_cuda_call(host_kernel):
    """Without a GPU any CUDA call would fail with another code (no device / no driver), so
    invalid value here means the call was refused up front; with m = 0 too (params first)."""
    lib = host_kernel.library
    for what, bad, _ in _bad_params(_layer(17, 40, seed=0)):
        for dtype in (0, 1):
            for m in (0, 4):
                assert lib.samedge_hyperlinear_forward(dtype, *_entry_args(bad, m)) == CUDA_ERROR_INVALID_VALUE, \
                    (what, dtype, m)
                assert lib.samedge_hyperlinear_forward_path(dtype, 1, *_entry_args(bad, m)) \
                    == CUDA_ERROR_INVALID_VALUE
    good = harness.params_for(_layer(17, 40, seed=0))
    size = host_kernel.table_size(good)
    fake = ctypes.c_void_p(4096)  # never dereferenced: every call below is refused first
    for dtype in (0, 1):
        assert lib.samedge_hyperlinear_forward(dtype, *_entry_args(good, -1, size)) == CUDA_ERROR_INVALID_VALUE
        operands = list(_entry_args(good, 4, size))
        operands[8] = None  # null params
        assert lib.samedge_hyperlinear_forward(dtype, *operands) == CUDA_ERROR_INVALID_VALUE
        # m > 0 with null operands: refused, not launched
        assert lib.samedge_hyperlinear_forward(dtype, *_entry_args(good, 4, size)) == CUDA_ERROR_INVALID_VALUE
        # A table of the wrong size (the kernel clamps to the size it is given): refused, with m = 0 too.
        for m in (0, 4):
            wrong = (fake, fake, fake, size - 1, fake, None, fake, m, ctypes.byref(good), None, None, 0, None)
            assert lib.samedge_hyperlinear_forward(dtype, *wrong) == CUDA_ERROR_INVALID_VALUE
    # The forced cuBLASLt path without a gemm or a workspace large enough.
    for gemm, workspace, size_bytes in ((None, fake, 1 << 30), (fake, None, 0),
                                        (fake, fake, host_kernel.workspace_size(good, 4096) - 1)):
        operands = (fake, fake, fake, size, fake, None, fake, 4, ctypes.byref(good), gemm, workspace, size_bytes, None)
        assert lib.samedge_hyperlinear_forward_path(1, harness.PATH_GEMM, *operands) == CUDA_ERROR_INVALID_VALUE


def test_zero_rows_is_a_no_op(host_kernel):
    """M = 0 returns success without launching: without a GPU a launch could not succeed."""
    lib = host_kernel.library
    params = harness.params_for(_layer(17, 40, seed=0))
    size = host_kernel.table_size(params)
    for dtype, paths in ((0, (0, 1)), (1, (0,) + harness.FP16_PATHS)):
        assert lib.samedge_hyperlinear_forward(dtype, *_entry_args(params, 0, size)) == 0
        for path in paths:
            assert lib.samedge_hyperlinear_forward_path(dtype, path, *_entry_args(params, 0, size)) == 0


def test_workspace_is_what_the_large_m_path_needs(host_kernel):
    """Nothing below the threshold (the fused kernel needs none); above it the float16 W, the
    half bias and cuBLASLt's scratch, the same for every larger M."""
    params = harness.params_for(_layer(33, 100, seed=133))
    rows = host_kernel.gemm_min_rows
    assert rows > 64  # M = 1 .. 64 stays on the fused kernel
    assert host_kernel.workspace_size(params, 0) == host_kernel.workspace_size(params, rows - 1) == 0
    size = host_kernel.workspace_size(params, rows)
    decoded = 2 * 100 * 40 + 2 * 100  # W [100, 40] (33 rounded up to 8) and the bias, in half
    assert decoded + (32 << 20) <= size <= decoded + (32 << 20) + 4 * 256
    assert host_kernel.workspace_size(params, 1 << 24) == size


@pytest.mark.parametrize("codebook_size, gains", [(1225, [1.0]), (1600, [0.8, 1.25]), (1600, [1.0, 1.3, 1.7, 2.5]),
                                                  (9, [1.0, 0.5]), (65536, [1.0])])
def test_pair_table_equals_the_reference_bit_for_bit(host_kernel, codebook_size, gains):
    """The C++ table (what the plugin uploads) against reference.pair_table, random side and center."""
    for seed in range(3):
        layer = _layer_of_indices(4, 1, codebook_size, gains, 16, seed)
        table = host_kernel.pair_table(harness.params_for(layer)).numpy()
        expected = reference.pair_table(codebook_size, lattice_side(codebook_size), layer.side, layer.center,
                                        layer.gains)
        assert table.shape == expected.shape == (codebook_size * len(gains), 2)
        np.testing.assert_array_equal(_bits(table), _bits(expected))


@pytest.mark.parametrize("variant", ["reference", "scaled"])
@pytest.mark.parametrize("in_features, out_features", [(17, 40), (33, 100), (192, 576), (768, 768)])
def test_host_decode_equals_the_reference_decode_bit_for_bit(host_kernel, variant, in_features, out_features):
    """The kernels' decode function, compiled for the host, against reference.decode_linear (and
    so the torch module); the scaled variant's per-row scales included."""
    layer = random_layer(in_features, out_features, seed=in_features + out_features, variant=variant, bias=False)
    if variant == "scaled":
        assert len(set(layer.row_scale.tolist())) > 1
    got = host_kernel.decode_host(layer).numpy()
    np.testing.assert_array_equal(_bits(got), _bits(_reference_weight(layer)))
    assert torch.equal(torch.from_numpy(got), layer.decoded_weight())
    # The table given rather than computed: the reference's, the same weights.
    np.testing.assert_array_equal(_bits(host_kernel.decode_host(layer, table=layer.table).numpy()), _bits(got))


@pytest.mark.parametrize("bits, codebook_size, gains", [(11, 1225, [1.0]), (12, 1600, [1.0, 1.4]),
                                                        (13, 1600, [1.0, 1.2, 1.5, 2.0]), (16, 1600, [1.0]),
                                                        (1, 1, [1.0, 2.0])])
@pytest.mark.parametrize("in_features", [1, 17, 33, 64])
def test_host_decode_at_every_index_width(host_kernel, bits, codebook_size, gains, in_features):
    """Indices of 11, 12 and 13 bits (what the codec writes), 16 and 1, odd widths and indices
    that straddle two words."""
    out_features = 7
    layer = _layer_of_indices(in_features, out_features, codebook_size, gains, bits, seed=bits * 100 + in_features)
    count = out_features * ((in_features + 1) // 2)
    if 32 % bits:
        assert any((p * bits) % 32 + bits > 32 for p in range(count)), "no index straddles two words"
    got = host_kernel.decode_host(layer).numpy()
    np.testing.assert_array_equal(_bits(got), _bits(_reference_weight(layer)))


def test_host_decode_reads_a_straddling_index_from_both_words(host_kernel):
    """Index 2 of a 12-bit stream is bits 24..35: its low byte in word 0, its high nibble in word 1."""
    indices = np.array([1, 2, 0xABC, 3, 4, 5], np.int64)
    layer = _layer_of_indices(12, 1, 1600, [1.0, 1.2, 1.4], 12, seed=5, indices=indices)
    words = layer.codes.numpy().view(np.uint32)
    assert words[0] >> 24 == 0xBC and words[1] & 0xF == 0xA
    got = host_kernel.decode_host(layer)
    expected = layer.table[torch.from_numpy(indices)].reshape(1, 12) * layer.row_scale[:, None]
    assert torch.equal(got, expected)


def test_damaged_codes_are_clamped_to_the_last_pair(host_kernel):
    """Indices past the table (up to 2^b - 1, the top word's sign bit set) decode to the table's
    last pair times the row scale: finite weights, nothing read past the table. The reference
    decode refuses them instead."""
    layer = _layer(33, 40, seed=33040)
    words, indices = damaged_codes(layer)
    size = layer.table.shape[0]
    assert (indices >= size).any() and (indices < size).any() and (words < 0).any()
    got = host_kernel.decode_host(layer, words)
    assert torch.isfinite(got).all() and torch.equal(got, clamped_weight(layer, indices))
    with pytest.raises(ValueError, match="damaged"):
        _reference_weight(layer, words)
    # Valid codes are unchanged by the clamp, and an index at 2^16 - 1 with the widest indices too.
    assert torch.equal(host_kernel.decode_host(layer), layer.decoded_weight())
    wide = _layer_of_indices(3, 2, 9, [1.0], 16, seed=1, indices=np.array([0, 65535, 8, 9]))
    assert torch.equal(host_kernel.decode_host(wide), clamped_weight(wide, torch.tensor([0, 65535, 8, 9])))


def test_host_decode_refuses_a_wrong_table_or_word_count(host_kernel):
    layer = _layer(17, 40, seed=0)
    with pytest.raises(harness.KernelError, match="pair table") as refused:
        host_kernel.decode_host(layer, table=layer.table[:-1])
    assert refused.value.status == 8
    with pytest.raises(ValueError, match="code words"):
        host_kernel.decode_host(layer, layer.codes[:-1])


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
        assert (first.gains, first.center, first.side, first.index_bits) == \
            (second.gains, second.center, second.side, second.index_bits)
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
    """The automatic choice: fused below the large-M threshold, decode + cuBLASLt above it (fp16)."""
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
@pytest.mark.parametrize("path", FP16_PATHS)
def test_every_fp16_path_equals_torch_decode_and_matmul(gpu_kernel, in_features, out_features, tokens, path):
    """Each fp16 path (CUDA cores; tensor cores with 32/64/128-row tiles; decode + cuBLASLt), M
    and K tails included. The error allowed is what rounding W and Y to half costs: W's
    relative error is at most 2^-11 per weight, with random signs its share of a sum of K
    products grows like sqrt(K), as the sum itself does, so relative to max |Y| it stays near
    2^-11 / sqrt(3) for any K; Y's own rounding adds at most 2^-11 of max |Y|, and the
    cuBLASLt path's half bias as much again of max |b|. Together below 2e-3."""
    layer = _layer(in_features, out_features, seed=in_features + out_features)
    x = torch.randn(tokens, in_features, generator=torch.Generator().manual_seed(1)).half().cuda()
    expected = x.double() @ _weight64(layer).T + layer.bias.detach().cuda().double()
    got = gpu_kernel(x, layer, path=path).double()
    assert ((got - expected).abs().max() / expected.abs().max()).item() <= 2e-3


@needs_gpu
def test_large_m_takes_the_cublaslt_path(gpu_kernel):
    """At and above the threshold the automatic choice is decode + cuBLASLt (the same bits as
    forcing it), below it the fused kernel."""
    layer = _layer(768, 768, seed=1536)
    rows = gpu_kernel.gemm_min_rows
    x = torch.randn(rows, 768, generator=torch.Generator().manual_seed(4)).half().cuda()
    assert torch.equal(gpu_kernel(x, layer), gpu_kernel(x, layer, path=harness.PATH_GEMM))
    fewer = x[:-1].contiguous()
    auto = gpu_kernel(fewer, layer)
    assert any(torch.equal(auto, gpu_kernel(fewer, layer, path=tile)) for tile in harness.TENSOR_CORE_TILES)


@needs_gpu
@pytest.mark.parametrize("path", FP16_PATHS)
def test_fp16_input_not_16_byte_aligned(gpu_kernel, path):
    """K % 8 == 0 but X starts 2 bytes past an aligned address: the tensor-core kernel must
    stage X one half at a time instead of 16 bytes at a time, cuBLASLt pick an algorithm for
    that alignment."""
    tokens, in_features, out_features = 70, 768, 768
    layer = _layer(in_features, out_features, seed=3)
    storage = torch.randn(tokens * in_features + 1, generator=torch.Generator().manual_seed(2)).half().cuda()
    x = storage[1:].view(tokens, in_features)
    assert x.data_ptr() % 16 != 0
    expected = x.double() @ _weight64(layer).T + layer.bias.detach().cuda().double()
    got = gpu_kernel(x, layer, path=path).double()
    assert ((got - expected).abs().max() / expected.abs().max()).item() <= 2e-3
    if path != harness.PATH_GEMM:
        # Same tile, same summation order: the aligned copy (staged 16 bytes at a time) gives the same bits.
        assert torch.equal(got.half(), gpu_kernel(x.clone(), layer, path=path))


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
        codes, table, row_scale, _ = gpu_kernel.operands(layer, xs.device)
        for path in ((None, 1) if dtype == torch.float32 else (None,) + tuple(FP16_PATHS)):
            status = gpu_kernel.launch(0 if dtype == torch.float32 else 1, xs.data_ptr(), codes.data_ptr(),
                                       table.data_ptr(), table.shape[0], row_scale.data_ptr(), None, ys.data_ptr(), 0,
                                       harness.params_for(layer), torch.cuda.current_stream().cuda_stream, path)
            assert status == 0
        torch.cuda.synchronize()
        assert (ys == 7.0).all()
        # Nothing left pending: the next call runs normally.
        assert torch.isfinite(gpu_kernel(xs, layer)).all()


@needs_gpu
def test_bad_parameters_on_the_gpu_are_refused_and_named(gpu_kernel):
    layer = _layer(33, 40, seed=33040)
    codes, table, row_scale, _ = gpu_kernel.operands(layer, torch.device("cuda"))
    x = torch.randn(37, 33, device="cuda")
    y = torch.full((37, 40), 7.0, device="cuda")
    stream = torch.cuda.current_stream().cuda_stream
    for what, bad, status in _bad_params(layer):
        for dtype, xs, ys in ((0, x, y), (1, x.half(), y.half())):
            got = gpu_kernel.launch(dtype, xs.data_ptr(), codes.data_ptr(), table.data_ptr(), table.shape[0],
                                    row_scale.data_ptr(), None, ys.data_ptr(), 37, bad, stream)
            assert got == CUDA_ERROR_INVALID_VALUE, what
            assert gpu_kernel.check(37, bad) == status
    torch.cuda.synchronize()
    assert (y == 7.0).all()
    error = gpu_kernel._failure(CUDA_ERROR_INVALID_VALUE, 37, _bad_params(layer)[2][1], table.shape[0])
    assert isinstance(error, harness.KernelError) and "codebook_size" in str(error)
    assert torch.isfinite(gpu_kernel(x, layer)).all()


@needs_gpu
def test_damaged_codes_are_clamped_on_the_gpu(gpu_kernel):
    """The kernel's clamp equals its host decode (itself the reference table's last pair for
    every index past it): X = I reads the decoded weights out exactly, on every path."""
    base = _layer(33, 40, seed=33040)
    words, _ = damaged_codes(base)
    layer = HyperLinear(base.in_features, base.out_features, codebook_size=base.codebook_size,
                        index_bits=base.index_bits, side=base.side, center=base.center, gains=base.gains, codes=words,
                        row_scale=base.row_scale, bias=None)
    expected = gpu_kernel.decode_host(layer)
    eye = torch.eye(33, device="cuda")
    assert torch.equal(gpu_kernel(eye, layer).cpu(), expected.T)
    for path in (None,) + tuple(FP16_PATHS):
        assert torch.equal(gpu_kernel(eye.half(), layer, path=path).cpu(), expected.half().T)


def tensorrt_include(version: str) -> Path:
    """The public TensorRT headers of `version` (harness.tensorrt_headers_root: shared/trt-headers
    beside the repository on every developer machine and in CI). Skipped only where they are not
    there at all; where they are, a plugin that does not compile fails."""
    include = harness.tensorrt_headers_root() / version / "include"
    if not (include / "NvInfer.h").is_file():
        pytest.skip(f"TensorRT {version} headers not at {include} (shared/trt-headers beside the repository, or "
                    "set SAMEDGE_TRT_HEADERS)")
    return include


@needs_nvcc
@pytest.mark.parametrize("version", harness.TENSORRT_HEADER_VERSIONS)
def test_the_plugin_library_builds_against_tensorrt_headers(tmp_path, version):
    """plugin + the real kernel, linked with cuBLASLt as harness.find_cublaslt finds it; the two
    entry points TensorRT's loadLibrary calls are exported."""
    library = harness.build_plugin_library(tensorrt_include(version), tmp_path / "libsamedge_hyperlinear.so")
    exported = subprocess.run(["nm", "-D", "--defined-only", str(library)], capture_output=True, text=True).stdout
    assert {"getCreators", "setLoggerFinder"} <= {line.split()[-1] for line in exported.splitlines()}


@needs_nvcc
def test_a_plugin_that_does_not_compile_fails_the_check(tmp_path):
    """The check can fail: one wrong override signature and the build stops with nvcc's message."""
    source = harness.PLUGIN_SOURCE.read_text()
    broken = source.replace("getNbOutputs() const noexcept", "getNbOutputs() noexcept", 1)
    assert broken != source, "the plugin no longer declares getNbOutputs() const noexcept; pick another edit"
    (tmp_path / "hyperlinear_plugin.cpp").write_text(broken)
    with pytest.raises(RuntimeError, match="failed:(.|\n)*(override|abstract|getNbOutputs)"):
        harness.build_plugin_library(tensorrt_include("11.1"), tmp_path / "lib.so",
                                     plugin_source=tmp_path / "hyperlinear_plugin.cpp")
