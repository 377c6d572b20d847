"""The plugin's CMake project as a device configures it, and the wheel an installed samedge comes from.

The configure runs need cmake and a CUDA compiler but neither TensorRT nor cuBLASLt:
find_path/find_library only look for the files, so empty stand-ins satisfy them (nothing is
compiled against them). cuBLASLt's is given as CUBLASLT_ROOT, which wins over the toolkit's.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from export.tensorrt_build import PLUGIN_SOURCES

REPO = Path(__file__).resolve().parent.parent
PLUGIN = REPO / "plugins" / "hyperlinear"
JETPACK_NVCC = Path("/usr/local/cuda/bin/nvcc")  # where JetPack puts it, off PATH
CMAKE = shutil.which("cmake")
# What a checkout holds that is not the project (the .gitignore's list): never copied.
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "bundles", "build", "*.egg-info", ".cache", "__pycache__",
                                    ".pytest_cache", ".hypothesis", "*.partial")

needs_cmake = pytest.mark.skipif(CMAKE is None, reason="cmake is not installed")
needs_jetpack_nvcc = pytest.mark.skipif(not JETPACK_NVCC.is_file(), reason=f"no nvcc at {JETPACK_NVCC}")


def _path_without_nvcc() -> str:
    """PATH less every folder holding an nvcc, as on a stock Jetson."""
    folders = os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep)
    return os.pathsep.join(f for f in folders if f and not (Path(f) / "nvcc").exists())


def stand_in(root: Path, *files: str) -> Path:
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).touch()
    return root


def configure(tmp_path: Path, *args: str, env: dict | None = None,
              cublaslt: bool = True) -> subprocess.CompletedProcess:
    """cmake-configure the plugin into tmp_path/build, nvcc off PATH and no CUDA variables set;
    cuBLASLt a stand-in under CUBLASLT_ROOT unless `cublaslt` is False (then the toolkit's, if any)."""
    tensorrt = stand_in(tmp_path / "tensorrt", "include/NvInfer.h", "lib/libnvinfer.so")
    if cublaslt:
        root = stand_in(tmp_path / "cublaslt", "include/cublasLt.h", "lib/libcublasLt.so.13")
        args = (f"-DCUBLASLT_ROOT={root}", *args)
    clean = {k: v for k, v in os.environ.items() if k not in ("CUDACXX", "CUDAARCHS", "CUDA_PATH", "CUBLASLT_ROOT")}
    clean["PATH"] = _path_without_nvcc()
    return subprocess.run([CMAKE, "-S", str(PLUGIN), "-B", str(tmp_path / "build"), f"-DTENSORRT_ROOT={tensorrt}",
                           *args], env={**clean, **(env or {})}, capture_output=True, text=True)


def cache_value(build: Path, name: str) -> str:
    match = re.search(rf"^{name}:[A-Z]+=(.*)$", (build / "CMakeCache.txt").read_text(), re.MULTILINE)
    assert match, f"{name} is not in {build / 'CMakeCache.txt'}"
    return match.group(1)


@pytest.fixture(scope="module")
def default_configure(tmp_path_factory) -> Path:
    """A hand-run `cmake -S plugins/hyperlinear -B build`: no compiler and no architectures given."""
    tmp_path = tmp_path_factory.mktemp("cmake-default")
    result = configure(tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return tmp_path / "build"


@needs_cmake
@needs_jetpack_nvcc
def test_configure_finds_jetpack_nvcc_off_path(default_configure):
    assert cache_value(default_configure, "CMAKE_CUDA_COMPILER") == str(JETPACK_NVCC)


@needs_cmake
@needs_jetpack_nvcc
def test_default_architectures_are_orin_and_desktops_with_ptx(default_configure):
    architectures = cache_value(default_configure, "CMAKE_CUDA_ARCHITECTURES").split(";")
    assert {a.split("-")[0] for a in architectures} == {"80", "86", "87", "89", "90"}
    # What nvcc is actually told: SASS for Orin, and PTX (code=compute_NN) for GPUs not listed.
    flags = (default_configure / "CMakeFiles" / "samedge_hyperlinear.dir" / "flags.make").read_text()
    assert "sm_87" in flags
    assert re.search(r"code=\[[^\]]*compute_\d+", flags), flags


@needs_cmake
@needs_jetpack_nvcc
def test_host_code_is_compiled_without_fp_contraction(default_configure):
    """The pair table is host code that must equal the numpy reference bit for bit."""
    flags = (default_configure / "CMakeFiles" / "samedge_hyperlinear.dir" / "flags.make").read_text()
    assert re.search(r"^CXX_FLAGS = .*-ffp-contract=off", flags, re.MULTILINE), flags
    assert re.search(r"^CUDA_FLAGS = .*-Xcompiler=-ffp-contract=off", flags, re.MULTILINE), flags


@needs_cmake
@needs_jetpack_nvcc
def test_cublaslt_root_is_used_and_checked(default_configure, tmp_path):
    library = Path(cache_value(default_configure, "CUBLASLT_LIBRARY"))
    assert library.name == "libcublasLt.so.13" and library.parent.parent.name == "cublaslt"
    (tmp_path / "empty").mkdir()
    result = configure(tmp_path, f"-DCUBLASLT_ROOT={tmp_path / 'empty'}", "-DCMAKE_CUDA_ARCHITECTURES=87",
                       cublaslt=False)
    assert result.returncode != 0
    message = " ".join(result.stderr.split())  # CMake wraps its messages
    assert "cuBLASLt not found under CUBLASLT_ROOT" in message and "include/cublasLt.h" in message


@needs_cmake
@needs_jetpack_nvcc
def test_cublaslt_root_may_come_from_the_environment(tmp_path):
    """build_engines.sh and the Python build run export/tensorrt_build.py's CMake line unchanged."""
    root = stand_in(tmp_path / "wheel", "include/cublasLt.h", "lib/libcublasLt.so.12")
    result = configure(tmp_path, "-DCMAKE_CUDA_ARCHITECTURES=87", env={"CUBLASLT_ROOT": str(root)}, cublaslt=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert cache_value(tmp_path / "build", "CUBLASLT_LIBRARY") == str(root / "lib" / "libcublasLt.so.12")


@needs_cmake
@needs_jetpack_nvcc
def test_cublaslt_comes_from_the_toolkit_or_is_asked_for(tmp_path):
    result = configure(tmp_path, "-DCMAKE_CUDA_ARCHITECTURES=87", cublaslt=False)
    if result.returncode == 0:  # the toolkit has cuBLAS
        assert Path(cache_value(tmp_path / "build", "CUDA_cublasLt_LIBRARY")).is_file()
    else:
        message = " ".join(result.stderr.split())
        assert "cuBLASLt not found in the CUDA toolkit" in message and "-DCUBLASLT_ROOT=" in message


@needs_cmake
@needs_jetpack_nvcc
def test_architectures_given_on_the_command_line_are_kept(tmp_path):
    result = configure(tmp_path, "-DCMAKE_CUDA_ARCHITECTURES=87")
    assert result.returncode == 0, result.stderr[-3000:]
    assert cache_value(tmp_path / "build", "CMAKE_CUDA_ARCHITECTURES") == "87"


@needs_cmake
@needs_jetpack_nvcc
def test_cudacxx_takes_precedence_over_the_search(tmp_path):
    # A wrapper elsewhere (a symlink would not do: CMake finds the toolkit beside the real
    # nvcc); were the search to run, it would pick /usr/local/cuda/bin/nvcc instead.
    (tmp_path / "bin").mkdir()
    wrapper = tmp_path / "bin" / "nvcc"
    wrapper.write_text(f'#!/bin/sh\nexec {JETPACK_NVCC} "$@"\n')
    wrapper.chmod(0o755)
    result = configure(tmp_path, "-DCMAKE_CUDA_ARCHITECTURES=87", env={"CUDACXX": str(wrapper)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert cache_value(tmp_path / "build", "CMAKE_CUDA_COMPILER") == str(wrapper)


@needs_cmake
def test_missing_nvcc_is_reported_with_the_fix(tmp_path):
    # Re-rooting every program search into an empty folder hides nvcc wherever it is
    # installed, as on a machine without the CUDA toolkit.
    (tmp_path / "empty").mkdir()
    result = configure(tmp_path, f"-DCMAKE_FIND_ROOT_PATH={tmp_path / 'empty'}",
                       "-DCMAKE_FIND_ROOT_PATH_MODE_PROGRAM=ONLY")
    assert result.returncode != 0
    assert "nvcc not found" in result.stderr
    assert "CUDACXX" in result.stderr and "-DCMAKE_CUDA_COMPILER" in result.stderr


def build_wheel(tmp_path: Path) -> Path:
    """samedge's wheel, built from a copy of the tree so no build/ or egg-info lands in the checkout."""
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=NOT_SOURCE, symlinks=True)
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                             "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("samedge-*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


def test_wheel_holds_what_bundles_copy(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [f"plugins/hyperlinear/{n}" for n in PLUGIN_SOURCES if f"plugins/hyperlinear/{n}" not in names]
    assert not missing, f"{wheel.name} lacks {missing}: prepare_folder would fail in an installed samedge"
    assert "plugins/hyperlinear/spec.py" in names  # the node's names, which the runtime reads too
    assert "compress/weights/demo_sam.safetensors" in names


def test_wheel_requires_only_the_runtime(wheel):
    with zipfile.ZipFile(wheel) as archive:
        (metadata,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        requires = [line.split(":", 1)[1].strip() for line in archive.read(metadata).decode().splitlines()
                    if line.startswith("Requires-Dist:")]
    base = {re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower() for r in requires if "extra ==" not in r}
    # onnx: the ORT backend decodes Birkhoff nodes; safetensors: SAM 2 tracking's constants (runtime/tracker.py)
    assert base == {"numpy", "pillow", "onnxruntime", "onnx", "safetensors"}
    assert any("torch" in r and "extra == \"compress\"" in r for r in requires), requires
