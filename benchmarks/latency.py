"""Encoder and decoder latency of every variant, per backend, interleaved.

For one backend all variants' runners are open at once; each repeat visits every variant
(the order rotated from repeat to repeat), so machine noise (other jobs on a shared
CPU, thermal changes) hits all variants alike, and each median is divided by the
original model's median from the same backend in the same run. Input: one real
photograph, preprocessed like the runtime does; decoder: one foreground point.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

NO_GPU = "no GPU on this machine"


@dataclass
class BackendSpec:
    name: str
    runtime_backend: str  # runtime.Session's backend argument
    device: str = "cpu"  # torch device
    providers: tuple = ()  # ONNX Runtime execution providers
    missing: str | None = None  # why it cannot run here


def backends() -> list[BackendSpec]:
    """Every backend of the results page, each with why it is missing where it is."""
    import onnxruntime as ort
    import torch

    gpu = torch.cuda.is_available()
    ort_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    return [
        BackendSpec("torch CPU", "torch"),
        BackendSpec("ONNX Runtime CPU", "onnxruntime", providers=("CPUExecutionProvider",)),
        BackendSpec("ONNX Runtime CUDA", "onnxruntime", providers=("CUDAExecutionProvider", "CPUExecutionProvider"),
                    missing=None if gpu and ort_cuda else NO_GPU if not gpu else
                    "onnxruntime has no CUDAExecutionProvider here (install onnxruntime-gpu)"),
        BackendSpec("torch CUDA", "torch", device="cuda", missing=None if gpu else NO_GPU),
        BackendSpec("TensorRT", "tensorrt", missing=_tensorrt_missing()),
    ]


def _tensorrt_missing() -> str:
    try:
        import tensorrt
    except ImportError:
        return "not installed"
    # Engines come with --target desktop|jetson bundles; this benchmark builds cpu-target bundles.
    return (f"TensorRT {tensorrt.__version__} is installed, but this benchmark builds cpu-target bundles "
            "without engines: not timed yet")


class Runner:
    """One variant on one backend, with its fixed encoder and decoder inputs."""

    def __init__(self, session, image: np.ndarray):
        from runtime.prompts import prompt_inputs
        from runtime.transforms import preprocess

        self.session, self.warm = session, False
        bundle = session.bundle
        self.pixels = preprocess(image, session.img_size, bundle.pixel_mean, bundle.pixel_std)
        height, width = image.shape[:2]
        self.prompt = prompt_inputs((height, width), session.img_size, session.low_res_size,
                                    points=[[width / 2, height / 2]], labels=[1])
        self.embedding = None

    def encode(self):
        self.embedding = self.session.backend.encode(self.pixels)

    def decode(self):
        self.session.backend.decode({"image_embeddings": self.embedding, **self.prompt})

    def adopt_session_embedding(self):
        """After the session encoded a photograph itself (set_image): that was the warm-up."""
        self.embedding = self.session.image_embedding
        self.warm = True

    def warm_up(self):
        if not self.warm:  # the first runs allocate; they are not what a user waits for afterwards
            self.encode()
            self.decode()
            self.warm = True


def open_runner(spec: BackendSpec, built, image: np.ndarray, kernel=None) -> Runner | str:
    """A Runner, or why this variant cannot run on this backend."""
    from runtime import Session

    if spec.missing:
        return spec.missing
    if spec.runtime_backend == "torch":
        if built.checkpoint is None:
            return "n/a: an ONNX Runtime quantisation (no torch model)"
        session = Session(built.bundle, backend="torch", device=spec.device)
        if spec.device == "cuda" and kernel is not None:
            from plugins.hyperlinear.torch_op import use_fused_kernel

            use_fused_kernel(session.backend.model, kernel)
    else:
        # All variants' sessions stay open for the interleaving: with ORT's arenas, eight
        # vit_b sessions would hold their peak activations each (about 3 GB apiece).
        session = Session(built.bundle, backend="onnxruntime", providers=list(spec.providers), low_memory=True)
    return Runner(session, image)


def _seconds(fn) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def measure(runners: dict[str, Runner], repeats: int, decoder_calls: int = 3, desc: str = "latency") -> dict:
    """{variant: {'encoder_s', 'decoder_s' (medians), 'encoder_runs', 'decoder_runs'}}."""
    for runner in runners.values():
        runner.warm_up()
    names = list(runners)
    runs = {name: {"encoder_runs": [], "decoder_runs": []} for name in names}
    for repeat in tqdm(range(repeats), desc=desc, unit="round", leave=False):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            runner = runners[name]
            runs[name]["encoder_runs"].append(_seconds(runner.encode))
            runs[name]["decoder_runs"] += [_seconds(runner.decode) for _ in range(decoder_calls)]
    return {name: {"encoder_s": statistics.median(r["encoder_runs"]),
                   "decoder_s": statistics.median(r["decoder_runs"]), **r} for name, r in runs.items()}


def with_ratios(results: dict, original: str) -> dict:
    """Adds 'encoder_ratio' and 'decoder_ratio': each median over the original's, same backend, same run."""
    base = results.get(original)
    for result in results.values():
        for part in ("encoder", "decoder"):
            result[f"{part}_ratio"] = None if base is None else result[f"{part}_s"] / base[f"{part}_s"]
    return results


def fused_kernel(work: Path) -> tuple[object | None, str]:
    """(the HyperLinear CUDA kernel for torch CUDA runs or None, what HyperLinear layers run there)."""
    import torch

    if not torch.cuda.is_available():
        return None, NO_GPU
    from plugins.hyperlinear.torch_op import load_kernel

    try:
        return load_kernel(work), "HyperLinear layers run the fused CUDA kernel (plugins/hyperlinear)"
    except (FileNotFoundError, RuntimeError) as err:  # no nvcc, or it failed: torch's own decode + matmul
        return None, f"HyperLinear layers decoded by torch, the fused kernel could not be built ({str(err)[:120]})"
