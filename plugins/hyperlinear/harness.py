"""Build and call the HyperLinear CUDA kernel without TensorRT (tests, benchmarks, GPU checks).

The kernel source is compiled with nvcc into a shared library and called through its C
entry points with ctypes on torch CUDA tensors, so it is checked against the torch decode
+ matmul (compress.birkhoff.hyper_linear) on any machine with a GPU and nvcc. The library
links cuBLASLt (the large-M path), found by `find_cublaslt()`: $CUBLASLT_ROOT, the CUDA
toolkit beside nvcc, or the NVIDIA wheels a CUDA build of torch installs.

Which GPUs a build targets is decided in one place, `kernel_archs()`: the visible GPU's own
compute capability where torch sees one (SASS for it plus its PTX, so a build is never
refused with error 209 "no kernel image"), else `CI_ARCHS` (Jetson Orin and Hopper), which
is what a machine without a GPU can only compile-check.

    python -m plugins.hyperlinear.harness [--arch 90 ...] [--out lib.so] [--ptxas]

builds the library (for `kernel_archs()` unless --arch is given) and, with --ptxas, prints
ptxas's registers / spills / shared memory per kernel.

torch and compress are imported where a kernel is called, not at the top: building the
library (CI's compile check) needs only nvcc.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

from .spec import MAX_GAINS

SOURCE = Path(__file__).resolve().parent / "hyperlinear_kernel.cu"
HEADER = SOURCE.with_suffix(".cuh")
PLUGIN_SOURCE = SOURCE.with_name("hyperlinear_plugin.cpp")
# The public TensorRT headers the plugin is compiled against where TensorRT is not installed
# (CI, developers): the versions JetPack 6 and desktops ship.
TENSORRT_HEADER_VERSIONS = ("10.3", "11.1")
CI_ARCHS = ("87", "90")  # Jetson Orin, Hopper: the compile-only check where there is no GPU
DEFAULT_ARCHS = CI_ARCHS  # the former name
CUDA_ERROR_INVALID_VALUE = 1
CUDA_ERROR_NOT_SUPPORTED = 801
# samedge::HyperLinearStatus (hyperlinear_kernel.cuh)
STATUS_NAMES = {0: "ok", 1: "bad rows", 2: "bad features", 3: "bad codebook_size", 4: "bad lattice_side",
                5: "bad gain_count", 6: "null params", 7: "bad index_bits", 8: "bad table"}
# samedge_hyperlinear_forward_path's paths: the CUDA-core kernel, decode + cuBLASLt, and the
# tensor-core row tiles of the fused kernel.
PATH_CUDA_CORES = 1
PATH_GEMM = 2
TENSOR_CORE_TILES = (32, 64, 128)
FP16_PATHS = (PATH_CUDA_CORES, PATH_GEMM) + TENSOR_CORE_TILES


class Params(ctypes.Structure):
    """samedge::HyperLinearParams (hyperlinear_kernel.cuh), field for field."""

    _fields_ = [("in_features", ctypes.c_int32), ("out_features", ctypes.c_int32),
                ("codebook_size", ctypes.c_int32), ("lattice_side", ctypes.c_int32),
                ("index_bits", ctypes.c_int32), ("side", ctypes.c_float),
                ("center", ctypes.c_float * 2), ("gains", ctypes.c_float * MAX_GAINS),
                ("gain_count", ctypes.c_int32)]


def find_nvcc() -> str:
    nvcc = shutil.which("nvcc")
    if nvcc is None and Path("/usr/local/cuda/bin/nvcc").is_file():
        nvcc = "/usr/local/cuda/bin/nvcc"
    if nvcc is None:
        raise FileNotFoundError("nvcc is not on PATH; install the CUDA toolkit to build the HyperLinear kernel")
    return nvcc


def _cublaslt_in(root: Path) -> tuple[Path, Path] | None:
    """(include dir, library file) of a cuBLASLt under `root` (include/ and lib/ or lib64/)."""
    include = next((d for d in (root / "include", *sorted(root.glob("targets/*/include")))
                    if (d / "cublasLt.h").is_file()), None)
    if include is None:
        return None
    for folder in (root / "lib64", root / "lib", *sorted(root.glob("targets/*/lib"))):
        # The unversioned name where a toolkit has it, else the wheel's libcublasLt.so.NN.
        candidates = sorted(folder.glob("libcublasLt.so*"), key=lambda f: (len(f.name), f.name))
        if candidates:
            return include, candidates[0]
    return None


@lru_cache(maxsize=None)
def find_cublaslt() -> tuple[Path, Path]:
    """(include dir, library file) of the cuBLASLt to build against: $CUBLASLT_ROOT (as CMake
    takes it), else the CUDA toolkit of nvcc, /usr/local/cuda, $CUDA_HOME / $CUDA_PATH, else the
    NVIDIA wheels on sys.path (nvidia/cu13, nvidia/cublas: what a CUDA build of torch installs)."""
    roots = []
    if os.environ.get("CUBLASLT_ROOT"):
        roots.append(Path(os.environ["CUBLASLT_ROOT"]))
    try:
        roots.append(Path(find_nvcc()).resolve().parent.parent)
    except FileNotFoundError:
        pass
    roots.append(Path("/usr/local/cuda"))
    roots += [Path(os.environ[v]) for v in ("CUDA_HOME", "CUDA_PATH") if os.environ.get(v)]
    for entry in sys.path:
        nvidia = Path(entry or ".") / "nvidia"
        if nvidia.is_dir():
            roots += sorted(nvidia.iterdir(), reverse=True)  # cu13 before cublas (cu12)
    for root in roots:
        found = _cublaslt_in(root)
        if found:
            return found
    raise FileNotFoundError("cuBLASLt (cublasLt.h and libcublasLt.so) not found in $CUBLASLT_ROOT, the CUDA toolkit "
                            "or the nvidia wheels on sys.path: install the toolkit's cuBLAS (or a CUDA build of "
                            "torch), or set CUBLASLT_ROOT to a folder with include/cublasLt.h and lib/libcublasLt.so*")


@lru_cache(maxsize=None)
def _nvcc_archs(nvcc: str) -> tuple[int, ...]:
    """The compute_XY this nvcc can generate (empty when it cannot say: nvcc < 11)."""
    try:
        out = subprocess.run([nvcc, "--list-gpu-arch"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(sorted({int(v) for v in re.findall(r"compute_(\d+)\b", out)}))


def kernel_archs(device=None) -> tuple[str, ...]:
    """The archs to build for: the GPU's compute capability ("86", "90", ...) where torch sees a
    CUDA GPU (`device`, default the current one), else CI_ARCHS. Where this nvcc cannot
    generate code for the GPU's own capability, the newest arch below it that it can (its
    PTX is then JIT-compiled by the driver)."""
    try:
        import torch
    except ImportError:
        return CI_ARCHS
    if not torch.cuda.is_available():
        return CI_ARCHS
    major, minor = torch.cuda.get_device_capability(device)
    wanted = 10 * major + minor
    try:
        supported = _nvcc_archs(find_nvcc())
    except FileNotFoundError:
        supported = ()
    if supported and wanted not in supported:
        below = [arch for arch in supported if arch <= wanted and arch >= 70]
        if below:
            wanted = below[-1]
    return (str(wanted),)


def nvcc_command(output: Path, archs=None, shared: bool = False, ptxas_verbose: bool = False) -> list[str]:
    """nvcc for `archs` (None: kernel_archs()), each as SASS plus PTX (code=[sm_XY,compute_XY]).
    -ffp-contract=off keeps the host code (the pair table, samedge_hyperlinear_decode_host)
    free of FMA contraction, as the device code is by its intrinsics. A shared library links
    cuBLASLt by its file, with an rpath to its folder (a wheel's is on no loader path)."""
    archs = tuple(kernel_archs() if archs is None else archs)
    include, library = find_cublaslt()
    command = [find_nvcc(), "-std=c++17", "-O3", "-Xcompiler", "-ffp-contract=off", f"-I{include}"]
    for arch in archs:
        command += ["-gencode", f"arch=compute_{arch},code=[sm_{arch},compute_{arch}]"]
    if ptxas_verbose:
        command += ["-Xptxas", "-v"]
    command += ["-shared", "-Xcompiler", "-fPIC"] if shared else ["-c", "-Xcompiler", "-fPIC"]
    command += [str(SOURCE), "-o", str(output)]
    if shared:
        command += ["-Xlinker", str(library), "-Xlinker", f"-rpath={library.parent}"]
    return command


def tensorrt_headers_root() -> Path:
    """Where <version>/include holds TensorRT's public headers: $SAMEDGE_TRT_HEADERS, else the
    shared/trt-headers folder beside the repository (every developer machine and CI have it),
    else /tmp/trt-headers (../shared/scripts/trt-headers.sh extracts them there)."""
    explicit = os.environ.get("SAMEDGE_TRT_HEADERS")
    if explicit:
        return Path(explicit)
    beside = Path(__file__).resolve().parents[3] / "shared" / "trt-headers"
    return beside if beside.is_dir() else Path("/tmp/trt-headers")


def build_plugin_library(tensorrt_include: Path, output: Path, archs=CI_ARCHS,
                         plugin_source: Path = PLUGIN_SOURCE) -> Path:
    """The whole plugin library (plugin + kernel, cuBLASLt linked as the kernel's own build links
    it), as tensorrt/build_engines.sh's CMake build makes it, against TensorRT's headers only:
    loadLibrary needs no TensorRT symbol from it (getCreators, setLoggerFinder), so it links
    without TensorRT. -Werror on the plugin's code; TensorRT's headers are -isystem. RuntimeError
    with nvcc's message where a step fails."""
    output = Path(output)
    kernel, plugin = output.with_suffix(".kernel.o"), output.with_suffix(".plugin.o")
    include, library = find_cublaslt()
    steps = [
        nvcc_command(kernel, archs),
        [find_nvcc(), "-std=c++17", "-O3", "-c", "-Xcompiler", "-fPIC,-fvisibility=hidden,-Wall,-Wextra,-Werror",
         "-isystem", str(tensorrt_include), f"-I{include}", f"-I{SOURCE.parent}", str(plugin_source),
         "-o", str(plugin)],
        [find_nvcc(), "-shared", str(plugin), str(kernel), "-o", str(output), "-Xlinker", str(library),
         "-Xlinker", f"-rpath={library.parent}"],
    ]
    for command in steps:
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command[:1] + command[-3:])} failed:\n{result.stderr[-4000:]}")
    return output


def build(output: Path, archs=None, shared: bool = True, ptxas_verbose: bool = False) -> Path:
    """Compile to `output` (archs None: kernel_archs()). With ptxas_verbose, ptxas's report
    is written next to it as `<output>.ptxas.txt`."""
    output = Path(output)
    result = subprocess.run(nvcc_command(output, archs, shared, ptxas_verbose), capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"nvcc failed:\n{result.stderr[-4000:]}")
    if ptxas_verbose:
        Path(f"{output}.ptxas.txt").write_text(result.stderr)
    return output


def source_digest(archs) -> str:
    """What a cached library depends on: the kernel sources, the archs, nvcc's flags."""
    digest = hashlib.sha256()
    for path in (SOURCE, HEADER):
        digest.update(path.read_bytes())
    digest.update(" ".join(nvcc_command(Path("x"), archs, shared=True)[1:]).encode())
    return digest.hexdigest()[:12]


def default_cache_dir() -> Path:
    """$SAMEDGE_KERNEL_CACHE, else a per-user folder in the temporary directory."""
    explicit = os.environ.get("SAMEDGE_KERNEL_CACHE")
    if explicit:
        return Path(explicit)
    return Path(tempfile.gettempdir()) / f"samedge-hyperlinear-{os.getuid() if hasattr(os, 'getuid') else 'user'}"


def cached_library(directory=None, archs=None) -> Path:
    """The shared library for `archs` (None: kernel_archs()), built once per source version
    into `directory` (None: default_cache_dir()); built under a temporary name and renamed, so
    concurrent callers never load a half-written file."""
    archs = tuple(kernel_archs() if archs is None else archs)
    directory = Path(directory) if directory is not None else default_cache_dir()
    library = directory / f"libhyperlinear-{source_digest(archs)}-sm{'_'.join(archs)}.so"
    if not library.is_file():
        directory.mkdir(parents=True, exist_ok=True)
        partial = directory / f".{library.name}.{os.getpid()}.partial"
        try:
            build(partial, archs, shared=True)
            os.replace(partial, library)
        finally:
            partial.unlink(missing_ok=True)
    return library


# ---- ptxas -v -----------------------------------------------------------------------------

_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(sm_\d+\w*)'")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?")


def _demangle(names: list[str]) -> dict[str, str]:
    """Short names: 'hyperlinearTensorCoreKernel<4, 2, true>' (c++filt where it exists)."""
    out = {}
    cxxfilt = shutil.which("c++filt")
    if cxxfilt and names:
        try:
            lines = subprocess.run([cxxfilt], input="\n".join(names), capture_output=True, text=True,
                                   timeout=30).stdout.splitlines()
            for name, line in zip(names, lines):
                match = re.search(r"(\w+<[^()]*>)\(", line) or re.search(r"(\w+)\(", line)
                out[name] = match.group(1) if match else line
        except (OSError, subprocess.SubprocessError):
            pass
    for name in names:
        if name not in out:
            match = re.search(r"\d+(hyperlinear\w*?Kernel)I(.*?)EEvP", name)
            if not match:
                out[name] = name
                continue
            pretty = []
            for number, flag, half, _ in re.findall(r"Li(\d+)E|Lb([01])E|(6__half)|(f)", match.group(2) + "E"):
                if number:
                    pretty.append(number)
                elif flag:
                    pretty.append("true" if flag == "1" else "false")
                else:
                    pretty.append("__half" if half else "float")
            out[name] = f"{match.group(1)}<{', '.join(pretty)}>"
    return out


def ptxas_summary(report: str) -> list[dict]:
    """[{'arch', 'kernel', 'registers', 'stack', 'spill_stores', 'spill_loads', 'smem'}] per
    entry function of a `-Xptxas -v` report."""
    rows, current = [], None
    for line in report.splitlines():
        entry = _ENTRY.search(line)
        if entry:
            current = {"arch": entry.group(2), "mangled": entry.group(1), "registers": None, "stack": None,
                       "spill_stores": None, "spill_loads": None, "smem": 0}
            rows.append(current)
            continue
        if current is None:
            continue
        frame = _FRAME.search(line)
        if frame and current["stack"] is None:
            current["stack"], current["spill_stores"], current["spill_loads"] = map(int, frame.groups())
        used = _USED.search(line)
        if used and current["registers"] is None:
            current["registers"] = int(used.group(1))
            current["smem"] = int(used.group(2) or 0)
    names = _demangle(sorted({row["mangled"] for row in rows}))
    for row in rows:
        row["kernel"] = names[row.pop("mangled")]
    return rows


def format_ptxas(rows: list[dict]) -> str:
    return "\n".join(f"{r['arch']} {r['kernel']}: {r['registers']} registers, {r['spill_stores']} B spill stores, "
                     f"{r['spill_loads']} B spill loads, {r['stack']} B stack, {r['smem']} B smem" for r in rows)


# ---- calling the kernel -------------------------------------------------------------------

def params_for(layer) -> Params:
    """Params of a compress.birkhoff.hyper_linear.HyperLinear layer."""
    from compress.birkhoff.codec import lattice_side

    if len(layer.gains) > MAX_GAINS:
        raise ValueError(f"{len(layer.gains)} ring gains; the kernel takes at most {MAX_GAINS}")
    gains = list(layer.gains) + [0.0] * (MAX_GAINS - len(layer.gains))
    return Params(layer.in_features, layer.out_features, layer.codebook_size, lattice_side(layer.codebook_size),
                  layer.index_bits, layer.side, (ctypes.c_float * 2)(*layer.center),
                  (ctypes.c_float * MAX_GAINS)(*gains), len(layer.gains))


def _key(params: Params) -> tuple:
    """Params by value (the tables are cached by what they are computed from)."""
    return tuple(tuple(value) if isinstance(value, ctypes.Array) else value
                 for value in (getattr(params, name) for name, _ in Params._fields_))


class KernelError(RuntimeError):
    """The kernel refused a call or its launch failed; `status` is the CUDA error code (or, for
    the host-side calls, the HyperLinearStatus)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class Kernel:
    """The compiled kernel: `kernel(x, layer)` = layer(x) computed on the GPU by the kernel,
    with the pair table the kernel's own host code computes (as the TensorRT plugin does)."""

    def __init__(self, library: Path):
        self.path = Path(library)
        self.library = ctypes.CDLL(str(library))
        lib = self.library
        p, i32, size = ctypes.c_void_p, ctypes.c_int32, ctypes.c_size_t
        params = ctypes.POINTER(Params)
        # x, codes, table, table_size, row_scale, bias, y, m, params, gemm, workspace, workspace_bytes, stream
        operands = [p, p, p, i32, p, p, p, i32, params, p, p, size, p]
        signatures = {
            "forward": ([ctypes.c_int] + operands, ctypes.c_int),
            "forward_path": ([ctypes.c_int, ctypes.c_int] + operands, ctypes.c_int),
            "check": ([i32, params], ctypes.c_int),
            "status_name": ([ctypes.c_int], ctypes.c_char_p),
            "word_count": ([params], ctypes.c_int64),
            "table_size": ([params], i32),
            "workspace_size": ([params, ctypes.c_int64], size),
            "gemm_min_rows": ([], i32),
            "pair_table": ([params, p], ctypes.c_int),
            "gemm_create": ([ctypes.POINTER(ctypes.c_void_p)], ctypes.c_int),
            "gemm_destroy": ([p], None),
            "gemm_last_status": ([p], ctypes.c_char_p),
            "decode_host": ([p, p, i32, p, params, p], ctypes.c_int),
        }
        for name, (argtypes, restype) in signatures.items():
            function = getattr(lib, f"samedge_hyperlinear_{name}")
            function.argtypes, function.restype = argtypes, restype
        self.gemm_min_rows = lib.samedge_hyperlinear_gemm_min_rows()
        self._tables = {}  # _key(params) -> the host table
        self._device_tables = {}  # (_key(params), device) -> its copy there
        self._gemm = None  # the cuBLASLt state, made on first use (it needs a GPU)

    def __del__(self):
        if getattr(self, "_gemm", None):
            self.library.samedge_hyperlinear_gemm_destroy(self._gemm)
            self._gemm = None

    # -- host-side calls (no GPU)
    def check(self, m: int, params: Params | None) -> int:
        """samedge::HyperLinearStatus of (m, params): 0 when the kernel would take them."""
        return self.library.samedge_hyperlinear_check(m, None if params is None else ctypes.byref(params))

    def status_name(self, status: int) -> str:
        return self.library.samedge_hyperlinear_status_name(status).decode()

    def word_count(self, params: Params) -> int:
        return self.library.samedge_hyperlinear_word_count(ctypes.byref(params))

    def table_size(self, params: Params) -> int:
        return self.library.samedge_hyperlinear_table_size(ctypes.byref(params))

    def workspace_size(self, params: Params, m: int) -> int:
        """Bytes of workspace a float16 call of m rows takes (0 below gemm_min_rows)."""
        return self.library.samedge_hyperlinear_workspace_size(ctypes.byref(params), m)

    def pair_table(self, params: Params):
        """float32 [U * gain_count, 2] on the CPU: the kernel's host table (cached, do not modify)."""
        import torch

        key = _key(params)
        if key not in self._tables:
            size = max(self.table_size(params), 0)
            table = torch.empty(size, 2, dtype=torch.float32)
            status = self.library.samedge_hyperlinear_pair_table(ctypes.byref(params), table.data_ptr())
            if status != 0:
                raise KernelError(f"the kernel refuses these parameters: {self.status_name(status)}", status)
            self._tables[key] = table
        return self._tables[key]

    def decode_host(self, layer, codes=None, table=None):
        """[N, K] float32 weight decoded on the CPU by the kernel's own decode function; `codes`
        (int32 words, default the layer's) may replace the layer's codes, `table` (float32
        [pairs, 2]) the table the kernel computes itself."""
        import torch

        params = params_for(layer)
        codes = (layer.codes if codes is None else codes).detach().cpu().to(torch.int32).reshape(-1).contiguous()
        if codes.numel() != self.word_count(params):  # the C side reads as many as the layout says
            raise ValueError(f"{codes.numel()} code words; the layer's layout has {self.word_count(params)}")
        row_scale = layer.row_scale.detach().cpu().to(torch.float32).contiguous()
        if table is not None:
            table = table.detach().cpu().to(torch.float32).contiguous()
        weight = torch.empty(layer.out_features, layer.in_features, dtype=torch.float32)
        status = self.library.samedge_hyperlinear_decode_host(
            codes.data_ptr(), None if table is None else table.data_ptr(), 0 if table is None else table.shape[0],
            row_scale.data_ptr(), ctypes.byref(params), weight.data_ptr())
        if status != 0:
            raise KernelError(f"the kernel refuses these parameters: {self.status_name(status)}", status)
        return weight

    # -- GPU calls
    def gemm(self):
        """The cuBLASLt state the large-M path needs (one per Kernel, made on first use)."""
        if self._gemm is None:
            handle = ctypes.c_void_p()
            status = self.library.samedge_hyperlinear_gemm_create(ctypes.byref(handle))
            if status != 0:
                raise KernelError(f"cuBLASLt could not be initialised: CUDA error {status}", status)
            self._gemm = handle.value
        return self._gemm

    def gemm_last_status(self) -> str:
        return self.library.samedge_hyperlinear_gemm_last_status(self._gemm).decode()

    def launch(self, dtype_code: int, x_ptr, codes_ptr, table_ptr, table_size: int, row_scale_ptr, bias_ptr, y_ptr,
               m: int, params: Params, stream, path: int | None = None, gemm=None, workspace_ptr=None,
               workspace_bytes: int = 0) -> int:
        """The raw C call (device pointers as ints or None); returns the CUDA error code. path
        None is the automatic choice (samedge_hyperlinear_forward), else the forced one."""
        operands = (x_ptr, codes_ptr, table_ptr, table_size, row_scale_ptr, bias_ptr, y_ptr, m,
                    ctypes.byref(params), gemm, workspace_ptr, workspace_bytes, stream)
        if path is None:
            return self.library.samedge_hyperlinear_forward(dtype_code, *operands)
        return self.library.samedge_hyperlinear_forward_path(dtype_code, path, *operands)

    def operands(self, layer, device):
        """(codes, table, row_scale, bias or None) of `layer` on `device`, contiguous as the kernel reads them."""
        import torch

        params = params_for(layer)
        key = (_key(params), str(device))
        if key not in self._device_tables:
            self._device_tables[key] = self.pair_table(params).to(device)
        codes = layer.codes.to(device=device, dtype=torch.int32).reshape(-1).contiguous()
        row_scale = layer.row_scale.to(device=device, dtype=torch.float32).contiguous()
        bias = None if layer.bias is None else layer.bias.detach().to(device=device, dtype=torch.float32).contiguous()
        return codes, self._device_tables[key], row_scale, bias

    def workspace(self, params: Params, m: int, dtype, path, device, fused_only: bool = False):
        """(gemm, workspace tensor, bytes) for a call: what the large-M path takes where it may
        run, else (None, None, 0)."""
        import torch

        if fused_only or dtype != torch.float16 or path not in (None, 0, PATH_GEMM):
            return None, None, 0
        size = self.workspace_size(params, max(m, self.gemm_min_rows) if path == PATH_GEMM else m)
        if size == 0:
            return None, None, 0
        return self.gemm(), torch.empty(size, dtype=torch.uint8, device=device), size

    def _failure(self, status: int, m: int, params: Params, table_size: int) -> KernelError:
        reason = self.check(m, params)
        if reason:
            why = self.status_name(reason)
        elif table_size != self.table_size(params):
            why = self.status_name(8)
        elif status == CUDA_ERROR_INVALID_VALUE:
            why = "invalid value (a null operand, an unknown path, too little workspace, or too many rows for the grid)"
        elif status == CUDA_ERROR_NOT_SUPPORTED or self._gemm is not None and "SUCCESS" not in self.gemm_last_status():
            why = f"cuBLASLt: {self.gemm_last_status()}"
        else:
            why = "launch failed"
        return KernelError(f"HyperLinear kernel call failed with CUDA error {status}: {why}", status)

    def bind(self, x, layer, y=None, path: int | None = None, fused_only: bool = False):
        """A zero-argument callable launching the kernel on these tensors (x [M, K] contiguous
        on the GPU, the layer's tensors and the workspace there once), for timing without
        Python overhead; path as `launch` takes it. fused_only: no gemm and no workspace, so
        the automatic choice keeps to the fused kernel (its own row tile) at any M."""
        import torch

        if x.dtype not in (torch.float32, torch.float16) or not x.is_cuda:
            raise ValueError("x must be a float32 or float16 CUDA tensor")
        codes, table, row_scale, bias = self.operands(layer, x.device)
        y = torch.empty(x.shape[0], layer.out_features, device=x.device, dtype=x.dtype) if y is None else y
        params = params_for(layer)
        gemm, workspace, workspace_bytes = self.workspace(params, x.shape[0], x.dtype, path, x.device, fused_only)
        stream = torch.cuda.current_stream(x.device).cuda_stream
        args = (0 if x.dtype == torch.float32 else 1, x.data_ptr(), codes.data_ptr(), table.data_ptr(), table.shape[0],
                row_scale.data_ptr(), None if bias is None else bias.data_ptr(), y.data_ptr(), x.shape[0], params,
                stream, path, gemm, None if workspace is None else workspace.data_ptr(), workspace_bytes)
        keep = (x, codes, table, row_scale, bias, workspace, y)  # alive as long as the callable

        def run():
            status = self.launch(*args)
            if status != 0:
                raise self._failure(status, x.shape[0], params, table.shape[0])
            return keep[-1]

        return run

    def __call__(self, x, layer, path: int | None = None):
        """y = layer(x) on x's GPU; path forces a kernel (samedge_hyperlinear_forward_path)."""
        if not x.is_cuda:
            raise ValueError("x must be a float32 or float16 CUDA tensor")
        flat = x.reshape(-1, layer.in_features).contiguous()
        y = self.bind(flat, layer, path=path)()
        return y.reshape(*x.shape[:-1], layer.out_features)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", action="append", help="compute capability as XY (repeatable); "
                        "default: this machine's GPU, else " + "/".join(CI_ARCHS))
    parser.add_argument("--out", type=Path, help="library path (default: the kernel cache)")
    parser.add_argument("--ptxas", action="store_true", help="print ptxas -v per kernel")
    parser.add_argument("--json", type=Path, help="also write {archs, library, kernels} as JSON")
    parser.add_argument("--object", action="store_true", help="compile only (-c), no shared library")
    args = parser.parse_args(argv)
    archs = tuple(args.arch) if args.arch else kernel_archs()
    print(f"archs: {', '.join('sm_' + a for a in archs)} (SASS + PTX); nvcc: {find_nvcc()}")
    rows = []
    if args.object:
        library = build(args.out or Path(tempfile.mkdtemp()) / "hyperlinear.o", archs, shared=False,
                        ptxas_verbose=args.ptxas)
        report = Path(f"{library}.ptxas.txt") if args.ptxas else None
    else:
        # Into the kernel cache by default, where later cached_library() calls find it.
        library = args.out or default_cache_dir() / f"libhyperlinear-{source_digest(archs)}-sm{'_'.join(archs)}.so"
        library.parent.mkdir(parents=True, exist_ok=True)
        partial = library.with_name(f".{library.name}.{os.getpid()}.partial")
        report = Path(f"{partial}.ptxas.txt") if args.ptxas else None
        try:
            build(partial, archs, shared=True, ptxas_verbose=args.ptxas)
            os.replace(partial, library)
            if report is not None:
                report = report.replace(Path(f"{library}.ptxas.txt"))
        finally:
            partial.unlink(missing_ok=True)
    if report is not None:
        rows = ptxas_summary(report.read_text())
        print(format_ptxas(rows))
    print(f"built {library}")
    if args.json:
        args.json.write_text(json.dumps({"archs": list(archs), "library": str(library), "kernels": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
