"""Write a model's pieces (its family's, compress/families) as checked ONNX files.

Every piece is traced the same way: TorchScript exporter, opset 17, as the official
`scripts/export_onnx_model.py` exports SAM's decoder, so existing clients of the official
decoder work unchanged; the dynamo exporter cannot keep `num_points` dynamic for that decoder
(see docs/design.md). Birkhoff-coded tensors become HyperTensor nodes, large weights external
data, and a file is checked before it is moved into place.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from compress.birkhoff.model import CODED_TENSORS
from compress.families import Piece, family_of, sam_pieces
from compress.families.fused_attention import tracing_in_form
from runtime.atomic import default_mode

from . import hyper_linear

OPSET = 17
# protobuf cannot hold a single message over 2 GiB (vit_h); such weights go to a side file.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000
# Raised whenever the graphs exported for the same model change (2: global attention in
# bands, compress/families/sam_attention.py; 3: decoder_batch.onnx; 4: shared weights.bin, provenance stamps, sealed
# manifest; 5: SAM 2's decoder_batch.onnx unclamped and its tracking.safetensors): the benchmarks' bundle cache
# rebuilds older bundles.
GRAPH_REVISION = 5


def export_module(module, args, path: Path, input_names, output_names, dynamic_axes=None):
    """Trace `module` to a raw ONNX file as every samedge export does (TorchScript exporter,
    opset OPSET); `finish_export` then makes it a checked model file."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about shapes are expected here
        torch.onnx.export(
            module,
            args,
            str(path),
            export_params=True,
            opset_version=OPSET,
            do_constant_folding=True,
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes=dynamic_axes,
            dynamo=False,
        )


def finish_export(exported: Path, path: Path, coded: dict | None = None, output_shapes: dict | None = None) -> None:
    """Re-save (external data if large) with `coded` tensors as HyperTensor nodes and the
    samedge function bodies, check, move into place. `output_shapes`: {output name: static shape},
    which the exporter cannot always see (through samedge nodes it names the dims); a str is a
    dynamic axis's name."""
    # Over 2 GiB the TorchScript exporter writes each tensor (of over 1024 elements) to its
    # own file beside `exported`; loaded here, save_checked gathers them into one `.data` file.
    model = onnx.load(str(exported), load_external_data=True)
    for output in model.graph.output:
        shape = (output_shapes or {}).get(output.name)
        if shape is None:
            continue
        dims = output.type.tensor_type.shape.dim
        if not dims:  # no rank recorded at all
            dims.extend(onnx.TensorShapeProto.Dimension() for _ in shape)
        for dim, size in zip(dims, shape, strict=True):
            dim.Clear()
            if isinstance(size, str):
                dim.dim_param = size  # a dynamic axis, by name
            else:
                dim.dim_value = size
    if coded:
        hyper_linear.code_tensors(model, coded)
    hyper_linear.attach_functions(model, OPSET)
    save_checked(model, path, exported.parent / "staged")


def coded_tensors(model) -> dict:
    """The Birkhoff decode-at-load tensors of `model` ({} for any other model)."""
    return getattr(model, CODED_TENSORS, {})


def initializer_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the graph's initializers held in raw_data: what external data moves out of the graph file.

    Counted tensor by tensor: protobuf cannot measure (ByteSize) or serialise a model
    over 2 GiB, which is the very case this decides.
    """
    return sum(len(tensor.raw_data) for tensor in model.graph.initializer)


def needs_external_data(model: onnx.ModelProto) -> bool:
    return initializer_bytes(model) > EXTERNAL_DATA_THRESHOLD


def save_checked(model: onnx.ModelProto, path: Path, staged: Path) -> Path:
    """Save under `staged/`, run the full checker, then rename into `path` (graph last).

    `model` must hold its tensors in memory. A large one is saved with all its weights in
    one file beside `path`, its name + `.data`, referenced by that relative name so that
    the folder can be moved; this moves the weights out of `model` too.
    """
    large = needs_external_data(model)
    staged.mkdir()
    staged_model = staged / path.name
    data_name = f"{path.name}.data"
    onnx.save_model(model, str(staged_model), save_as_external_data=large,
                    all_tensors_to_one_file=True, location=data_name if large else None)
    # A path, not the proto: the checker would serialise a proto, which fails over 2 GiB.
    onnx.checker.check_model(str(staged_model), full_check=True)
    if large:
        (staged / data_name).chmod(default_mode())  # onnx creates it private (0600), unlike the graph
        os.replace(staged / data_name, path.parent / data_name)
    os.replace(staged_model, path)
    return path


def export_piece(piece: Piece, path, coded: dict | None = None) -> Path:
    """Trace one of a family's pieces (compress/families/registry.py) to a checked ONNX file at `path`;
    `coded`: Birkhoff decode-at-load tensors, written as HyperTensor nodes."""
    path = Path(path)
    with tempfile.TemporaryDirectory(dir=path.parent) as work:
        exported = Path(work) / path.name
        with torch.no_grad(), tracing_in_form(piece.role), piece.tracing():
            export_module(piece.module, piece.example, exported, piece.input_names, piece.output_names,
                          piece.dynamic_axes)
        finish_export(exported, path, coded, output_shapes=piece.output_shapes)
    return path


def export_pieces(model, folder) -> list[Path]:
    """Every piece of `model`'s family into `folder` (a bundle being written)."""
    return [export_piece(piece, Path(folder) / piece.file, coded_tensors(model))
            for piece in family_of(model.config).pieces(model)]


def export_tensors(model, folder) -> list[Path]:
    """The family's constants (`ModelFamily.tensors`) into `folder` as safetensors files: plain
    tensors the numpy runtime loads without running code from the file."""
    from safetensors.numpy import save_file

    written = []
    for name, tensors in family_of(model.config).tensors(model).items():
        path = Path(folder) / name
        save_file({key: np.ascontiguousarray(value, dtype=np.float32) for key, value in tensors.items()}, str(path))
        written.append(path)
    return written


def export_encoder(model, path) -> Path:
    """A SAM 1 model's `image_encoder`: [1,3,S,S] normalised, padded pixels -> embeddings."""
    return export_piece(sam_pieces.encoder_piece(model, Path(path).name), path, coded_tensors(model))


def export_decoder(model, path, return_single_mask: bool = False) -> Path:
    """A SAM 1 model's prompt encoder + mask decoder with the official SAM ONNX signature.

    return_single_mask=False gives all M = 4 masks (mask 0 is the single-mask answer,
    1..3 the multimask ones); True gives the official single-mask variant."""
    piece = sam_pieces.decoder_piece(model, Path(path).name, return_single_mask)
    return export_piece(piece, path, coded_tensors(model))
