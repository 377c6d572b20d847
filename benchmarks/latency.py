"""Encoder and decoder latency of every variant, per backend, interleaved; and the timing
helper every benchmark page uses.

For one backend all variants' runners are open at once; each repeat visits every variant
(the order rotated from repeat to repeat), so machine noise (other jobs on a shared
CPU, thermal changes) hits all variants alike, and each median is divided by the
original model's median from the same backend in the same run. Input: one real
photograph, preprocessed like the runtime does; decoder: one foreground point.
"""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from tqdm import tqdm

from plugins.hyperlinear.torch_op import load_kernel, use_fused_kernel
from runtime import Session, open_bundle
from runtime.backends import make_backend
from runtime.backends.ort_backend import OnnxRuntimeBackend
from runtime.prompts import prompt_inputs
from runtime.transforms import preprocess

NO_GPU = "no GPU on this machine"


def seconds(fn) -> float:
    """Wall time of one call of `fn`."""
    gc.collect()  # a collection owed by earlier work would otherwise land inside the timed call
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def interleaved(calls: dict, repeats: int, warmup: int = 1, stride: int = 1,
                desc: str | None = None) -> dict[object, list[float]]:
    """Seconds of every call in each of `repeats` rounds, after `warmup` untimed calls of each.

    Each round visits every call, the order rotated by `stride` calls from round to round
    (a stride of several keeps one variant's calls together), so machine noise hits them
    all alike; take the median of each list."""
    for fn in calls.values():
        for _ in range(warmup):  # first runs allocate and fill caches: not what a user waits for afterwards
            fn()
    names = list(calls)
    runs = {name: [] for name in names}
    for repeat in tqdm(range(repeats), desc=desc, unit="round", leave=False, disable=desc is None):
        shift = repeat * stride % len(names)
        for name in names[shift:] + names[:shift]:
            runs[name].append(seconds(calls[name]))
    return runs


@dataclass
class BackendSpec:
    name: str
    runtime_backend: str  # runtime.backends.make_backend's name
    device: str = "cpu"  # torch device
    providers: tuple = ()  # ONNX Runtime execution providers
    missing: str | None = None  # why it cannot run here


def backends() -> list[BackendSpec]:
    """Every backend of the results page, each with why it is missing where it is."""
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
        import tensorrt  # optional: absent wherever there is no TensorRT install
    except ImportError:
        return "not installed"
    # Engines come with --target desktop|jetson bundles; this benchmark builds cpu-target bundles.
    return (f"TensorRT {tensorrt.__version__} is installed, but this benchmark builds cpu-target bundles "
            "without engines: not timed yet")


class Runner:
    """One variant on one backend, with its fixed encoder and decoder inputs."""

    def __init__(self, session: Session, image: np.ndarray):
        self.session, self.backend, self.warm = session, session.backend, False
        bundle = session.bundle
        self.pixels = preprocess(image, session.img_size, bundle.pixel_mean, bundle.pixel_std)
        height, width = image.shape[:2]
        self.prompt = prompt_inputs((height, width), session.img_size, session.low_res_size,
                                    points=[[width / 2, height / 2]], labels=[1])
        self.features = None

    def encode(self):
        self.features = self.backend.encode(self.pixels)

    def decode(self):
        self.backend.decode({**self.features, **self.prompt})

    def adopt_session_embedding(self):
        """After the session encoded a photograph itself (set_image): that was the warm-up."""
        self.features = self.session.image_features
        self.warm = True

    def warm_up(self):
        if not self.warm:
            self.encode()
            self.decode()
            self.warm = True


def open_runner(spec: BackendSpec, built, image: np.ndarray, kernel=None) -> Runner | str:
    """A Runner, or why this variant cannot run on this backend."""
    if spec.missing:
        return spec.missing
    if spec.runtime_backend == "torch" and built.checkpoint is None:
        return "n/a: an ONNX Runtime quantisation (no torch model)"
    opened = open_bundle(built.bundle, verify=False)
    if spec.runtime_backend == "onnxruntime":
        # All variants' sessions stay open for the interleaving: with ORT's arenas, eight
        # vit_b sessions would hold their peak activations each (about 3 GB apiece). Not
        # low_memory: Birkhoff bundles are measured decoded once, as a default Session runs them.
        backend = OnnxRuntimeBackend(opened.encoder, opened.decoder, list(spec.providers) or None,
                                     img_size=opened.img_size, coded=opened.samedge_nodes, cpu_arena=False)
    else:
        backend = make_backend(opened, spec.runtime_backend, providers=list(spec.providers) or None,
                               device=spec.device)
    if spec.device == "cuda" and kernel is not None:
        use_fused_kernel(backend.model, kernel)
    return Runner(Session(built.bundle, backend=backend), image)


def measure(runners: dict[str, Runner], repeats: int, decoder_calls: int = 3, desc: str = "latency") -> dict:
    """{variant: {'encoder_s', 'decoder_s' (medians), 'encoder_runs', 'decoder_runs'}}."""
    for runner in runners.values():
        runner.warm_up()  # not interleaved's warm-up: a runner whose session encoded already is warm
    calls = {}
    for name, runner in runners.items():
        calls[name, "encoder", 0] = runner.encode
        for index in range(decoder_calls):
            calls[name, "decoder", index] = runner.decode
    runs = interleaved(calls, repeats, warmup=0, stride=1 + decoder_calls, desc=desc)
    results = {}
    for name in runners:
        encoder = runs[name, "encoder", 0]
        decoder = [t for index in range(decoder_calls) for t in runs[name, "decoder", index]]
        results[name] = {"encoder_s": statistics.median(encoder), "decoder_s": statistics.median(decoder),
                         "encoder_runs": encoder, "decoder_runs": decoder}
    return results


def with_ratios(results: dict, original: str) -> dict:
    """Adds 'encoder_ratio' and 'decoder_ratio': each median over the original's, same backend, same run."""
    base = results.get(original)
    for result in results.values():
        for part in ("encoder", "decoder"):
            result[f"{part}_ratio"] = None if base is None else result[f"{part}_s"] / base[f"{part}_s"]
    return results


def fused_kernel(work: Path) -> tuple[object | None, str]:
    """(the HyperLinear CUDA kernel for torch CUDA runs or None, what HyperLinear layers run there)."""
    if not torch.cuda.is_available():
        return None, NO_GPU
    try:
        return load_kernel(work), "HyperLinear layers run the fused CUDA kernel (plugins/hyperlinear)"
    except (FileNotFoundError, RuntimeError) as err:  # no nvcc, or it failed: torch's own decode + matmul
        return None, f"HyperLinear layers decoded by torch, the fused kernel could not be built ({str(err)[:120]})"
