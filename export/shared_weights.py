"""Store each weight once per bundle: the ONNX files of a folder share one external-data file.

encoder.onnx and encoder_preprocess.onnx hold the same encoder weights, and decoder.onnx,
decoder_single.onnx and decoder_batch.onnx the same decoder weights: written one file each,
a vit_b bundle carried its encoder twice and its decoder three times (733 MB for a 375 MB
checkpoint). Here every initializer of 1 KiB or more (onnx's own threshold for external
data) moves to WEIGHTS_FILE, each distinct content once, and every graph that holds it
points at the same offset and length (ONNX external data: location, offset, length). The
location is the bare file name, so ONNX Runtime, OpenVINO, TensorRT's ONNX parser,
samexporter and AnyLabeling find it beside the graph, as they find any external data.

Not onnx.external_data_helper.convert_model_to_external_data: it writes each model's
tensors anew, so two graphs cannot share one copy.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import onnx
from onnx import TensorProto

from runtime.atomic import PARTIAL, default_mode, temporary_name
from runtime.bundle import WEIGHTS_FILE

MIN_SHARED_BYTES = 1024  # smaller tensors stay in their graph (onnx's size_threshold)
# Tensors of 1 MiB or more start on a 64 KiB boundary, as onnx aligns them, so that a runtime
# can map them straight from the file; smaller ones follow one another.
ALIGN_FROM_BYTES, ALIGNMENT = 1 << 20, 64 * 1024


def _external(tensor: TensorProto, offset: int, length: int) -> None:
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    del tensor.external_data[:]
    for key, value in (("location", WEIGHTS_FILE), ("offset", str(offset)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value


def _large_tensors(model: onnx.ModelProto):
    """Initializers held in raw_data of MIN_SHARED_BYTES or more (the graph's; samedge's function
    bodies hold no constants of that size)."""
    return [t for t in model.graph.initializer if t.HasField("raw_data") and len(t.raw_data) >= MIN_SHARED_BYTES]


def share_weights(files: list[Path]) -> dict:
    """Rewrite the ONNX `files` (one folder) so that their large initializers live in that folder's
    WEIGHTS_FILE, each distinct content stored once. The data files of samedge's exports
    (`<name>.data`, export/onnx_export.save_checked) are removed. Returns {"tensors", "stored", "bytes", "saved_bytes"}.

    One model in memory at a time; every graph is checked by onnx's checker before it replaces
    the old one, and the data file is renamed into place first (a graph never points into a
    file that is not there)."""
    files = [Path(f) for f in files]
    folder = files[0].parent
    data_path = folder / WEIGHTS_FILE
    staged_data = temporary_name(data_path, PARTIAL)
    stored: dict[bytes, tuple[int, int]] = {}  # content digest -> (offset, length)
    graphs, tensors, saved = [], 0, 0
    try:
        with open(staged_data, "wb") as data:
            for path in files:
                model = onnx.load(str(path), load_external_data=True)
                for tensor in _large_tensors(model):
                    content = tensor.raw_data
                    key = hashlib.sha256(content).digest()
                    tensors += 1
                    if key in stored:
                        saved += len(content)
                    else:
                        if len(content) >= ALIGN_FROM_BYTES and data.tell() % ALIGNMENT:
                            data.write(b"\0" * (ALIGNMENT - data.tell() % ALIGNMENT))
                        stored[key] = (data.tell(), len(content))
                        data.write(content)
                    _external(tensor, *stored[key])
                staged_graph = temporary_name(path, PARTIAL)
                staged_graph.write_bytes(model.SerializeToString())
                graphs.append((staged_graph, path))
                del model
            size = data.tell()
        os.chmod(staged_data, default_mode())
        os.replace(staged_data, data_path)
        for staged_graph, path in graphs:
            onnx.checker.check_model(str(staged_graph), full_check=False)
            os.replace(staged_graph, path)
    finally:
        for leftover in [staged_data] + [staged for staged, _ in graphs]:
            leftover.unlink(missing_ok=True)
    for path in files:  # the data files samedge's exports wrote (export/onnx_export.save_checked), now unused
        path.with_name(f"{path.name}.data").unlink(missing_ok=True)
    return {"tensors": tensors, "stored": len(stored), "bytes": size, "saved_bytes": saved}
