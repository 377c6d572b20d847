"""Write a SAM model as `encoder.onnx` and decoders with the official SAM ONNX signature.

The decoder is segment_anything's own `SamOnnxModel`, exported the way the official
`scripts/export_onnx_model.py` does (TorchScript exporter, opset 17, dynamic
`num_points`), so existing clients of the official decoder work unchanged. The
TorchScript exporter is used for both files: the dynamo exporter cannot keep
`num_points` dynamic for this decoder (see docs/design.md).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import onnx
import torch
import torch.nn.functional as F
from segment_anything.utils.onnx import SamOnnxModel

from compress.birkhoff.model import CODED_TENSORS
from runtime.atomic import default_mode
from runtime.signature import DECODER_INPUTS, DECODER_OUTPUTS  # the official decoder's, checked at open

from . import hyper_linear
from .attention import banded_global_attention

OPSET = 17
ENCODER_INPUT = "image"
ENCODER_OUTPUT = "image_embeddings"
# protobuf cannot hold a single message over 2 GiB (vit_h); such weights go to a side file.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000
# Raised whenever the graphs exported for the same model change (2: global attention in
# bands, export/attention.py; 3: decoder_batch.onnx; 4: shared weights.bin, provenance stamps, sealed
# manifest): the benchmarks' bundle cache rebuilds older bundles.
GRAPH_REVISION = 4


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


def finish_export(exported: Path, path: Path, coded: dict | None = None, output_shape=None) -> None:
    """Re-save (external data if large) with `coded` tensors as HyperTensor nodes and the
    samedge function bodies, check, move into place. `output_shape`: the first output's
    static shape, which the exporter cannot see through samedge nodes (it names the dims)."""
    # Over 2 GiB the TorchScript exporter writes each tensor (of over 1024 elements) to its
    # own file beside `exported`; loaded here, save_checked gathers them into one `.data` file.
    model = onnx.load(str(exported), load_external_data=True)
    if output_shape is not None:
        dims = model.graph.output[0].type.tensor_type.shape.dim
        for dim, size in zip(dims, output_shape, strict=True):
            dim.Clear()
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


def export_encoder(model, path) -> Path:
    """Export `model.image_encoder`: [1,3,S,S] normalised, padded pixels -> embeddings."""
    path = Path(path)
    size = model.image_encoder.img_size
    dummy = torch.zeros(1, 3, size, size)
    with tempfile.TemporaryDirectory(dir=path.parent) as work:
        exported = Path(work) / "encoder.onnx"
        with torch.no_grad(), banded_global_attention(model.image_encoder) as encoder:
            export_module(encoder, (dummy,), exported, [ENCODER_INPUT], [ENCODER_OUTPUT])
        grid = size // model.image_encoder.patch_embed.proj.stride[0]
        finish_export(exported, path, coded_tensors(model),
                      output_shape=(1, model.prompt_encoder.embed_dim, grid, grid))
    return path


def decoder_dummy_inputs(model) -> dict:
    """Example inputs in the official decoder's format (also used by tests)."""
    embed_dim = model.prompt_encoder.embed_dim
    grid = model.prompt_encoder.image_embedding_size
    size = model.image_encoder.img_size
    generator = torch.Generator().manual_seed(0)
    return {
        "image_embeddings": torch.randn(1, embed_dim, *grid, generator=generator),
        "point_coords": torch.randint(0, size, (1, 5, 2), generator=generator).float(),
        "point_labels": torch.randint(0, 4, (1, 5), generator=generator).float(),
        "mask_input": torch.randn(1, 1, 4 * grid[0], 4 * grid[1], generator=generator),
        "has_mask_input": torch.tensor([1.0]),
        "orig_im_size": torch.tensor([float(size + size // 2), float(size * 2)]),
    }


def _decoder_wrapper(model, return_single_mask: bool):
    """segment_anything's SamOnnxModel, with a crop that follows `orig_im_size` at run time.

    Upstream crops with `int(prepadded_size[0])`; the TorchScript tracer freezes that
    to the example input's size, so every other image size would be cropped wrongly.
    Slicing with the tensors themselves keeps the crop in the graph.
    """
    class DecoderForExport(SamOnnxModel):
        def mask_postprocessing(self, masks, orig_im_size):
            masks = F.interpolate(masks, size=(self.img_size, self.img_size), mode="bilinear",
                                  align_corners=False)
            prepadded = self.resize_longest_image_size(orig_im_size, self.img_size)
            masks = masks[..., : prepadded[0], : prepadded[1]]
            height, width = orig_im_size.to(torch.int64)
            return F.interpolate(masks, size=(height, width), mode="bilinear", align_corners=False)

    return DecoderForExport(model, return_single_mask=return_single_mask).eval()


def export_decoder(model, path, return_single_mask: bool = False) -> Path:
    """Export the prompt encoder + mask decoder with the official SAM ONNX signature.

    return_single_mask=False gives all M = 4 masks (mask 0 is the single-mask answer,
    1..3 the multimask ones); True gives the official single-mask variant.
    """
    path = Path(path)
    wrapper = _decoder_wrapper(model, return_single_mask)
    dummy = decoder_dummy_inputs(model)
    dynamic_axes = {"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}}
    with tempfile.TemporaryDirectory(dir=path.parent) as work:
        exported = Path(work) / "decoder.onnx"
        with torch.no_grad():
            export_module(wrapper, tuple(dummy.values()), exported, DECODER_INPUTS, DECODER_OUTPUTS, dynamic_axes)
        finish_export(exported, path, coded_tensors(model))
    return path
