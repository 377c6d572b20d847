"""What backend="auto" opens for a bundle, and why.

On a CPU the choice is the engine `python -m benchmarks.run openvino-cpu` measured faster for
the bundle's kind (docs/benchmarks/openvino-cpu.md; that page checks this table against its
own figures and says where they disagree).
"""

from __future__ import annotations

import importlib.util
from typing import NamedTuple

import onnxruntime as ort

from ..bundle import PREPROCESS_ENCODER_FILE, Bundle

# Bundle kind -> the faster CPU engine, and the measurement behind it (vit_b, 2-core EPYC).
CPU_CHOICE = {
    "fp32": ("openvino", "OpenVINO's encoder took 0.86x ONNX Runtime's time on vit_b, 0.65x on SlimSAM-77"),
    "birkhoff": ("openvino", "both decode the codes at start into a dense graph; OpenVINO runs it faster"),
    "int8": ("onnxruntime", "ONNX Runtime's own dynamic int8 quantisation runs fastest on ONNX Runtime"),
    "int4": ("onnxruntime", "MatMulNBits is an ONNX Runtime operator"),
}


class Choice(NamedTuple):
    name: str  # a runtime.backends.BACKENDS name
    reason: str


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
    else ONNX Runtime where asked for its providers or low_memory; else CPU_CHOICE's engine
    for the bundle's kind, where it is installed."""
    # Opened by its encoder_preprocess.onnx: the file named is the file run, not the engines.
    named_onnx = bundle.encoder is not None and bundle.encoder.name == PREPROCESS_ENCODER_FILE
    if bundle.engines and not named_onnx and (bundle.encoder is None or importable("tensorrt")):
        return Choice("tensorrt", "the bundle has TensorRT engines and tensorrt is installed")
    if bundle.encoder is None:
        return Choice("tensorrt", "the bundle holds TensorRT engines only")
    if providers:
        return Choice("onnxruntime", f"ONNX Runtime providers were given ({', '.join(providers)})")
    if low_memory:
        return Choice("onnxruntime", "low_memory is ONNX Runtime's mode (it keeps Birkhoff codes, not weights)")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        return Choice("onnxruntime", "onnxruntime-gpu is installed: ONNX Runtime on the CUDA GPU")
    kind = bundle_kind(bundle)
    name, measured = CPU_CHOICE[kind]
    if name == "openvino" and not importable("openvino"):
        return Choice("onnxruntime", f"{kind} bundle on the CPU; OpenVINO would be faster ({measured}) but is "
                                     'not installed: pip install "samedge[cpu]"')
    return Choice(name, f"{kind} bundle on the CPU: {measured}")
