"""How closely the ONNX files TensorRT builds from answer, where TensorRT itself is absent.

    python -m benchmarks.run tensorrt-files

The demo model's `tensorrt/` files (fp16 encoder, low-res decoder; export/tensorrt_onnx.py),
plain and Birkhoff-compressed, run with ONNX Runtime (HyperLinear bodies kept for that run)
through the TensorRT backend's host-side mask upscaling, against segment_anything on
runtime.parity's images and prompts. Writes docs/benchmarks/tensorrt-files.md.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

from compress import load_checkpoint
from compress.birkhoff.model import compress_model
from compress.demo import DEFAULT_CHECKPOINT
from export import tensorrt_onnx
from export.build import build_bundle
from runtime import Session
from runtime.backends import Closable
from runtime.masks import upscale_masks
from runtime.parity import Thresholds, compare, standard_images
from runtime.signature import BATCH_DECODER_INPUTS

from .report import DOCS, Page, table


class OnnxRuntimeOnTensorRTFiles(Closable):
    """The TensorRT backend's data path (runtime.backends.base.Backend) with ONNX Runtime in
    TensorRT's place."""

    name = "onnxruntime (tensorrt files)"

    def __init__(self, folder: Path):
        options = ort.SessionOptions()
        options.log_severity_level = 3  # the fp16 graph's constant-folding warnings
        self.encoder = ort.InferenceSession(str(folder / tensorrt_onnx.ENCODER), options)
        self.decoder = ort.InferenceSession(str(folder / tensorrt_onnx.DECODER), options)
        self.img_size = self.encoder.get_inputs()[0].shape[-1]
        self.embedding_size = self.encoder.get_outputs()[0].shape[-1]

    def encode(self, pixels):
        return {"image_embeddings": self._held(self.encoder).run(None, {"image": pixels})[0]}

    def decode(self, inputs):
        decoder = self._held(self.decoder)
        iou_predictions, low_res = decoder.run(None, {name: inputs[name] for name in BATCH_DECODER_INPUTS})
        return upscale_masks(low_res, self.img_size, inputs["orig_im_size"]), iou_predictions, low_res

    def _release(self) -> None:
        self.encoder = self.decoder = None


def compare_tensorrt_files(model, bundle, thresholds):
    """runtime.parity's comparison of `model`'s TensorRT files; `bundle` gives the pre-processing."""
    with tempfile.TemporaryDirectory() as folder:
        tensorrt_onnx.export_tensorrt_inputs(model, Path(folder), keep_functions=True)
        with Session(bundle, backend=OnnxRuntimeOnTensorRTFiles(Path(folder))) as session:
            return compare(session, model, standard_images(), thresholds)


def measure(args) -> Page:
    rows = []
    with tempfile.TemporaryDirectory() as work:
        bundle = Path(work) / "demo-cpu"
        build_bundle(bundle, "cpu", DEFAULT_CHECKPOINT, run_parity=False)
        for kind in ("fp32 weights", "birkhoff"):
            model = load_checkpoint(DEFAULT_CHECKPOINT)
            if kind == "birkhoff":
                model = compress_model(model, show_progress=False).model
            results = compare_tensorrt_files(model, bundle, Thresholds(0.97, 0.05))
            ious = [r.mask_iou for r in results]
            rows.append([kind, len(results), f"{min(ious):.4f}", f"{np.median(ious):.4f}",
                         f"{max(r.max_relative_logit_diff for r in results):.2e}"])
    intro = ("The demo model's tensorrt/ files (fp16 encoder with LayerNorm/softmax in fp32, fp32 low-res decoder, "
             "numpy mask upscaling) against segment_anything on runtime.parity's 3 photographs + 2 shape images x "
             "6 prompts. TensorRT itself was not available; its own fp16 kernels may round differently.")
    return Page(DOCS / "tensorrt-files.md", "TensorRT-bound ONNX files, run by ONNX Runtime", intro,
                table(["model", "cases", "worst mask IoU", "median mask IoU", "max relative logit diff"], rows))
