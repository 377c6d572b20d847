"""How closely the ONNX files TensorRT builds from answer, where TensorRT itself is absent.

    python -m benchmarks.tensorrt_files

The demo model's `tensorrt/` files (fp16 encoder, low-res decoder; export/tensorrt_onnx.py),
plain and Birkhoff-compressed, run with ONNX Runtime (HyperLinear bodies kept for that run)
through the TensorRT backend's host-side mask upscaling, against segment_anything on
runtime.parity's images and prompts. Writes docs/benchmarks/tensorrt-files.md.
"""

from __future__ import annotations

import datetime
import tempfile
from pathlib import Path

import numpy as np

from .report import table, write_page

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks" / "tensorrt-files.md"


class OnnxRuntimeOnTensorRTFiles:
    """The TensorRT backend's data path (runtime.Session backend interface) with ONNX Runtime
    in TensorRT's place."""

    name = "onnxruntime (tensorrt files)"

    def __init__(self, folder: Path):
        import onnxruntime as ort

        from export import tensorrt_onnx

        options = ort.SessionOptions()
        options.log_severity_level = 3  # the fp16 graph's constant-folding warnings
        self.encoder = ort.InferenceSession(str(folder / tensorrt_onnx.ENCODER), options)
        self.decoder = ort.InferenceSession(str(folder / tensorrt_onnx.DECODER), options)
        self.img_size = self.encoder.get_inputs()[0].shape[-1]
        self.embedding_size = self.encoder.get_outputs()[0].shape[-1]

    def encode(self, pixels):
        return self.encoder.run(None, {"image": pixels})[0]

    def decode(self, inputs):
        from export.tensorrt_onnx import DECODER_INPUTS
        from runtime.masks import upscale_masks

        iou_predictions, low_res = self.decoder.run(None, {name: inputs[name] for name in DECODER_INPUTS})
        return upscale_masks(low_res, self.img_size, inputs["orig_im_size"]), iou_predictions, low_res


def compare_tensorrt_files(model, bundle, thresholds):
    """runtime.parity's comparison of `model`'s TensorRT files; `bundle` gives the pre-processing."""
    from export.tensorrt_onnx import export_tensorrt_inputs
    from runtime import Session
    from runtime.parity import compare, standard_images

    with tempfile.TemporaryDirectory() as folder:
        export_tensorrt_inputs(model, Path(folder), keep_functions=True)
        session = Session(bundle)
        session.backend = OnnxRuntimeOnTensorRTFiles(Path(folder))
        return compare(session, model, standard_images(), thresholds)


def main() -> int:
    from compress import load_checkpoint
    from compress.birkhoff.model import compress_model
    from export.build import DEFAULT_CHECKPOINT, build_bundle
    from runtime.parity import Thresholds

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
    write_page(DOCS, "TensorRT-bound ONNX files, run by ONNX Runtime",
               f"Measured {datetime.date.today()} with `python -m benchmarks.tensorrt_files`: the demo model's "
               "tensorrt/ files (fp16 encoder with LayerNorm/softmax in fp32, fp32 low-res decoder, numpy mask "
               "upscaling) against segment_anything on 3 photographs + 2 shape images x 6 prompts. TensorRT "
               "itself was not available; its own fp16 kernels may round differently.",
               table(["model", "cases", "worst mask IoU", "median mask IoU", "max relative logit diff"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
