"""Data-free weight quantisation baselines, with ONNX Runtime's own quantisers.

    python -m export.quantize BUNDLE --method int8|int4 [--out DIR]

- int8: `quantize_dynamic`, per-channel signed int8 weights (MatMul, Conv and the other
  ops it covers), activations quantised at run time;
- int4: `MatMulNBitsQuantizer`, 4-bit weights of every MatMul in blocks of 32 along the
  reduction axis with a scale and a 4-bit zero point per block (RTN); other ops stay fp32.

They are here so that Birkhoff can be compared with what a user gets for free; the
quantised bundle runs with runtime.Session like any other. `weight_error` reads the
quantised initializers back and reports their error against the fp32 weights.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

from runtime.bundle import (BATCH_DECODER_FILE, DECODER_FILE, ENCODER_FILE, MANIFEST, PREPROCESS_ENCODER_FILE,
                            SINGLE_MASK_DECODER_FILE, open_bundle)
from runtime.bundle_writer import BundleWriter
from runtime.decoded_graph import decode_tensors

from compress.families import config_from_dict

from .clients import write_client_files
from .provenance import derived_digest, stamp_all
from .shared_weights import share_weights

METHODS = ("int8", "int4")
INT4_BLOCK = 32
MODEL_FILES = (ENCODER_FILE, DECODER_FILE, SINGLE_MASK_DECODER_FILE, BATCH_DECODER_FILE)


def model_files(manifest: dict) -> list[str]:
    """The bundle's top-level ONNX files (any family's pieces), but the clients' preprocess encoder,
    which is written again from the quantised encoder.onnx."""
    listed = [name for name in manifest["files"] if name.endswith(".onnx") and "/" not in name
              and name != PREPROCESS_ENCODER_FILE]
    return listed or list(MODEL_FILES)


def _dense_constants(path) -> onnx.ModelProto:
    """The model with its Birkhoff HyperTensor nodes decoded (the quantisers need the conv and
    other weights as initializers); HyperLinear nodes stay, as the quantisers skip them."""
    return decode_tensors(onnx.load(str(path)))


def _batched_weight_matmuls(model) -> list[str]:
    """MatMul nodes whose constant operand is not a 2-D weight (Hiera's position table, [1, C, 7, 7], in the
    product that resizes it: compress/families/sam2.py): per-channel int8 gives them a zero point ONNX
    Runtime's MatMulInteger refuses ("B zero point is not valid"), so they stay float."""
    ranks = {init.name: len(init.dims) for init in model.graph.initializer}
    return [node.name for node in model.graph.node if node.op_type == "MatMul"
            and any(ranks.get(name, 2) != 2 for name in node.input)]


def quantize_onnx(src, dst, method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    model = _dense_constants(src)
    if method == "int8":
        with tempfile.TemporaryDirectory(dir=Path(dst).parent) as work:  # quantize_dynamic reads a path
            source = Path(work) / "model.onnx"
            onnx.save_model(model, str(source))
            quantize_dynamic(str(source), str(dst), per_channel=True, weight_type=QuantType.QInt8,
                             nodes_to_exclude=_batched_weight_matmuls(model))
    elif method == "int4":
        logging.getLogger("onnxruntime.quantization").setLevel(logging.WARNING)  # one INFO line per node
        quantizer = MatMulNBitsQuantizer(model, bits=4, block_size=INT4_BLOCK, is_symmetric=False)
        quantizer.process()
        quantizer.model.save_model_to_file(str(dst), False)


def _int8_weights(model, original):
    """{name: dequantised array} from `<name>_quantized/_scale/_zero_point` initializers."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for name, weight in original.items():
        if f"{name}_quantized" not in inits:
            continue
        q = inits[f"{name}_quantized"].astype(np.float64)
        scale = inits[f"{name}_scale"].astype(np.float64)
        zero = inits[f"{name}_zero_point"].astype(np.float64)
        if scale.ndim == 0:
            yield name, (q - zero) * scale, scale
            continue
        # Per-channel: the axis is not stored with the initializer; it is the one whose
        # dequantisation stays within half a step of every weight (MatMul: last, Conv: first).
        for axis in (weight.ndim - 1, 0):
            if weight.shape[axis] != scale.size:
                continue
            shape = [1] * weight.ndim
            shape[axis] = scale.size
            deq = (q - zero.reshape(shape)) * scale.reshape(shape)
            if np.all(np.abs(deq - weight) <= np.abs(scale.reshape(shape)) * 0.5001 + 1e-12):
                yield name, deq, scale
                break


def _int4_weights(model, original):
    """{name: dequantised [K, N]} from MatMulNBits' B [N, blocks, 16], scales and zero points."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "MatMulNBits":
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        k, n, block = attrs["K"], attrs["N"], attrs["block_size"]
        name = node.input[1][: -len("_Q4")]
        packed = inits[node.input[1]]  # uint8 [N, blocks, block/2], low nibble first
        q = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(n, -1).astype(np.float64)
        blocks = q.shape[1] // block
        scales = inits[node.input[2]].reshape(n, blocks).astype(np.float64)
        if len(node.input) > 3 and node.input[3]:
            zp = inits[node.input[3]]
            zero = np.stack([zp & 0x0F, zp >> 4], axis=-1).reshape(n, -1)[:, :blocks].astype(np.float64)
        else:
            zero = np.full((n, blocks), 8.0)
        deq = ((q.reshape(n, blocks, block) - zero[..., None]) * scales[..., None]).reshape(n, -1)[:, :k]
        yield name, deq.T, scales


def weight_error(original_path, quantized_path, method: str) -> dict:
    """Size-weighted MAE and relative RMS error of the quantised weights, and their count."""
    original_model = _dense_constants(original_path)
    original = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in original_model.graph.initializer
                if i.data_type == onnx.TensorProto.FLOAT and numpy_helper.to_array(i).size >= 16}
    reader = _int8_weights if method == "int8" else _int4_weights
    abs_sum = sq_err = sq_ref = count = 0.0
    for name, deq, _ in reader(onnx.load(str(quantized_path)), original):
        weight = original[name]
        if deq.shape != weight.shape:
            raise ValueError(f"{name}: dequantised shape {deq.shape} != {weight.shape}")
        abs_sum += np.abs(deq - weight).sum()
        sq_err += np.square(deq - weight).sum()
        sq_ref += np.square(weight).sum()
        count += weight.size
    total = sum(w.size for w in original.values())
    return {"mae": abs_sum / count if count else None,
            "rel_rmse": float(np.sqrt(sq_err / sq_ref)) if sq_ref else None,
            "weights_quantized": int(count), "weights_total": int(total)}


def quantize_bundle(bundle, out, method: str, overwrite: bool = False) -> Path:
    """A copy of `bundle` whose ONNX files are quantised; the manifest says so."""
    bundle = Path(bundle)
    manifest = open_bundle(bundle).manifest  # a damaged or tampered source is refused here
    with BundleWriter(out, overwrite, inputs=[bundle]) as writer:
        for name in model_files(manifest):
            if (bundle / name).is_file():  # a bundle from before decoder_batch.onnx has none
                quantize_onnx(bundle / name, writer.path(name), method)
        tracking = manifest.get("tracking") or {}
        if tracking.get("tensors"):  # SAM 2's tracking constants: float32 as the source's (a few MB)
            shutil.copy2(bundle / tracking["tensors"], writer.path(tracking["tensors"]))
        if manifest.get("clients"):  # bundles from before export/clients.py have none
            config = config_from_dict(manifest["model"]["architecture"])
            manifest["clients"] = write_client_files(writer.root, Path(out).name, config)
        manifest["precision"] = f"{method} weights ({'per-channel' if method == 'int8' else f'blocks of {INT4_BLOCK}'})"
        manifest["quantization"] = {"method": method, "source_bundle": str(bundle.resolve()),
                                    "weights": weight_error(bundle / ENCODER_FILE, writer.path(ENCODER_FILE), method)}
        share_weights(sorted(writer.root.glob("*.onnx")))  # each weight once, as export.build stores them
        # Its files answer as the quantised model, not the source: they name a model of their own.
        manifest["model"]["digest"] = derived_digest(manifest["model"]["digest"], f"quantize:{method}")
        stamp_all(writer.root, manifest["model"]["digest"],
                  {key: manifest["preprocessing"][key] for key in ("img_size", "pixel_mean", "pixel_std")})
        manifest["parity"] = None  # the fp32 thresholds do not apply to a quantised model
        manifest["tensorrt"] = None
        checkpoint = Path(manifest["model"]["checkpoint"])
        if not checkpoint.is_absolute():  # a compressed build's checkpoint stays in the source bundle
            manifest["model"]["checkpoint"] = str((bundle / checkpoint).resolve())
        writer.write_manifest(manifest)
    return writer.out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--method", choices=METHODS, required=True)
    parser.add_argument("--out", type=Path, help="default: BUNDLE-<method>")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    out = args.out or args.bundle.with_name(f"{args.bundle.name}-{args.method}")
    try:
        quantize_bundle(args.bundle, out, args.method, args.overwrite)
    except (ValueError, FileExistsError) as err:  # BundleError, OutputError
        print(f"error: {err}", file=sys.stderr)
        return 2
    weights = json.loads((out / MANIFEST).read_text())["quantization"]["weights"]
    if weights["mae"] is None:
        print(f"wrote {out}: no encoder weight was quantised (no plain MatMul/Conv weights to take)")
    else:
        print(f"wrote {out}: encoder weights MAE {weights['mae']:.3g}, relative RMS error {weights['rel_rmse']:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
