"""What backend="auto" opens for a bundle, and why.

On a CPU the choice is the engine `python -m benchmarks.run openvino-cpu` measured faster for
the bundle's kind (docs/benchmarks/openvino-cpu.md; that page checks this table against its
own figures and says where they disagree).
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import NamedTuple

import onnxruntime as ort

from ..bundle import PREPROCESS_ENCODER_FILE, Bundle

# Bundle kind -> the faster CPU engine, by the encoder's time on vit_b (seeded weights, 2-core
# EPYC with AVX-512, docs/benchmarks/openvino-cpu.md); OpenVINO's decoder is 1.1-1.3x slower.
CPU_CHOICE = {
    "fp32": ("openvino", "OpenVINO's encoder took 0.88x ONNX Runtime's time on vit_b (SlimSAM-77: 0.70x), "
                         "at 0.74x the peak memory"),
    "birkhoff": ("openvino", "OpenVINO's encoder took 0.90x ONNX Runtime's time on vit_b; both decode the codes "
                             "at start into the dense graph"),
    "int8": ("onnxruntime", "OpenVINO's encoder took 1.86x ONNX Runtime's time on vit_b's ONNX Runtime int8 "
                            "quantisation"),
    "int4": ("openvino", "OpenVINO's encoder took 0.60x ONNX Runtime's time on vit_b's MatMulNBits (it quantises "
                         "the activations per group on the fly)"),
}

# Every model family's table (a manifest's model.family), each from its own page; a kind not measured
# for its family gets ONNX Runtime, which runs every bundle.
FAMILY_CPU_CHOICE: dict[str, dict[str, tuple[str, str]]] = {
    "sam": CPU_CHOICE,
    "sam2": {"fp32": ("openvino", "OpenVINO's encoder took 0.88x ONNX Runtime's time on SAM 2.1 hiera-t and "
                                  "hiera-b+ (docs/benchmarks/sam2.md), at no more peak memory")},
}


class Choice(NamedTuple):
    name: str  # a registered backend's name (runtime/backends/registry.py)
    reason: str
    named: bool = False  # asked for by name (its options are then checked), not auto's pick


def importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def bundle_kind(bundle: Bundle) -> str:
    """fp32 (SlimSAM's pruned models too: a dense graph), birkhoff (samedge nodes), int8 or int4
    (export.quantize)."""
    quantization = bundle.manifest.get("quantization")
    if quantization:
        return quantization.get("method", "int8")
    return "birkhoff" if bundle.samedge_nodes else "fp32"


def choose(bundle: Bundle, providers=None, low_memory: bool = False) -> Choice:
    """The backend auto opens: TensorRT where the bundle has engines and tensorrt is installed;
    else ONNX Runtime where asked for its providers or low_memory, or where onnxruntime-gpu has a
    GPU; else CPU_CHOICE's engine for the bundle's kind, where it is installed and imports."""
    # Opened by its encoder_preprocess.onnx: the file named is the file run, not the engines.
    if bundle.url is not None:
        return Choice("triton", f"{bundle.url} is a model on a Triton server")
    named_onnx = bundle.encoder is not None and bundle.encoder.name == PREPROCESS_ENCODER_FILE
    if bundle.engines and not named_onnx and (bundle.encoder is None or importable("tensorrt")):
        return Choice("tensorrt", "the bundle has TensorRT engines and tensorrt is installed")
    if providers:
        return Choice("onnxruntime", f"ONNX Runtime providers were given ({', '.join(providers)})")
    if low_memory:
        return Choice("onnxruntime", "low_memory is ONNX Runtime's mode (it keeps Birkhoff codes, not weights)")
    if onnxruntime_cuda():
        return Choice("onnxruntime", "onnxruntime-gpu is installed and an NVIDIA GPU is present: ONNX Runtime on CUDA")
    kind = bundle_kind(bundle)
    family = bundle.manifest.get("model", {}).get("family", "sam") if bundle.manifest else "sam"
    name, measured = FAMILY_CPU_CHOICE.get(family, {}).get(kind, ("onnxruntime", "not measured: ONNX Runtime, which runs every bundle"))
    kind = kind if family == "sam" else f"{family} {kind}"
    if name == "openvino":
        try:
            importlib.import_module("openvino")
        except ImportError as err:  # absent (find_spec would do), or installed but broken
            missing = "not installed" if not importable("openvino") else f"broken ({err})"
            return Choice("onnxruntime", f"{kind} bundle on the CPU; OpenVINO would be faster ({measured}) but is "
                                         f'{missing}: pip install "samedge[cpu]"')
    return Choice(name, f"{kind} bundle on the CPU: {measured}")


def onnxruntime_cuda() -> bool:
    """onnxruntime-gpu installed (it lists CUDA with or without a GPU) and an NVIDIA GPU present:
    a desktop's driver lists it in /proc, a Jetson's integrated GPU has its own device node."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    gpus = Path("/proc/driver/nvidia/gpus")
    return (gpus.is_dir() and any(gpus.iterdir())) or Path("/dev/nvhost-ctrl-gpu").exists()
