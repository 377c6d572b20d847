"""The ONNX files TensorRT engines are built from: the bundle's `tensorrt/` folder.

They differ from the ONNX Runtime files in three ways, each forced by TensorRT:
- precision is decided in the file: TensorRT 11 builds strongly typed only, so the encoder
  is converted to fp16 here, with LayerNorm and softmax (and the decomposed LayerNorm2d of
  the neck) kept in fp32, where SAM encoders overflow in fp16; HyperLinear nodes take and
  give fp16 so the plugin runs its tensor-core path;
- HyperLinear nodes lose their function body: TensorRT < 10.7 would inline it and never
  call the plugin, and without a body a missing plugin is a parse error instead of a
  silent fall-back to the dense decode;
- the decoder ends at `low_res_masks`: the official decoder's `orig_im_size` is a float
  shape tensor and its `repeat_interleave` exports a OneHot, both of which TensorRT
  rejects (docs/design.md). The runtime upsamples on the host (runtime/masks.py).
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import onnx
import torch
from onnxruntime.transformers.float16 import convert_float_to_float16
from onnxruntime.transformers.onnx_model import OnnxModel
from segment_anything.utils.onnx import SamOnnxModel

from plugins.hyperlinear import spec
from runtime.decoded_graph import decode_tensors
from runtime.signature import TENSORRT_DECODER_INPUTS as DECODER_INPUTS
from runtime.signature import TENSORRT_DECODER_OUTPUTS as DECODER_OUTPUTS

from . import hyper_linear
from .onnx_export import (OPSET, decoder_dummy_inputs, export_encoder, export_module, needs_external_data,
                          save_checked)

ENCODER = "encoder.onnx"
DECODER = "decoder.onnx"
# Kept in fp32 in the fp16 encoder. ReduceMean/Sub/Pow/Sqrt/Div make up LayerNorm2d.
FP32_OPS = ("LayerNormalization", "Softmax", "ReduceMean", "Pow", "Sqrt", "Div")
PRECISIONS = ("fp16", "fp32")
# HyperLinear inputs by position: the plugin takes X in the activation type, these two in float32.
_X = spec.INPUTS.index("X")
_FLOAT32_INPUTS = (spec.INPUTS.index("row_scale"), spec.INPUTS.index("bias"))


def _predict_masks_one_image(mask_decoder, image_embeddings, image_pe, sparse, dense):
    """segment_anything's MaskDecoder.predict_masks for one image and one prompt set.

    Upstream repeats the image embedding once per prompt set with `repeat_interleave`,
    which exports as a OneHot; with a single prompt set that repeat is the identity.
    """
    output_tokens = torch.cat([mask_decoder.iou_token.weight, mask_decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat((output_tokens.unsqueeze(0), sparse), dim=1)  # [1, 1 + masks + points, C]
    src = image_embeddings + dense  # [1, C, h, w]
    _, channels, height, width = src.shape
    hs, src = mask_decoder.transformer(src, image_pe, tokens)
    iou_token_out = hs[:, 0, :]
    mask_tokens_out = hs[:, 1: 1 + mask_decoder.num_mask_tokens, :]
    upscaled = mask_decoder.output_upscaling(src.transpose(1, 2).reshape(1, channels, height, width))
    hyper_in = torch.stack([mlp(mask_tokens_out[:, i, :])
                            for i, mlp in enumerate(mask_decoder.output_hypernetworks_mlps)], dim=1)
    _, up_channels, up_height, up_width = upscaled.shape
    masks = (hyper_in @ upscaled.reshape(1, up_channels, up_height * up_width)).reshape(1, -1, up_height, up_width)
    return masks, mask_decoder.iou_prediction_head(iou_token_out)


def _low_res_decoder(model):
    class LowResDecoder(SamOnnxModel):
        """The official decoder's inputs less `orig_im_size`; all 4 masks at low resolution."""

        def forward(self, image_embeddings, point_coords, point_labels, mask_input, has_mask_input):
            sparse = self._embed_points(point_coords, point_labels)
            dense = self._embed_masks(mask_input, has_mask_input)
            masks, scores = _predict_masks_one_image(self.model.mask_decoder, image_embeddings,
                                                     self.model.prompt_encoder.get_dense_pe(), sparse, dense)
            return scores, masks

    return LowResDecoder(model, return_single_mask=False).eval()


def to_fp16(model: onnx.ModelProto, scratch=None) -> onnx.ModelProto:
    """fp16 weights and activations, fp32 inputs/outputs and FP32_OPS; HyperLinear in fp16.

    onnxruntime's converter (a maintained fork of onnxconverter-common's, which mistypes
    the encoder's own Cast nodes) does the work. It would also turn the HyperLinear
    row scales and biases into fp16, which the plugin takes in fp32, so the node is
    blocked there and the casts it gets around X and Y are removed afterwards.
    A large model (vit_h) has its shapes inferred through a file in the directory
    `scratch` (default: the system's), and gives its weights up to the result.
    """
    float32_inputs = dict(_hyper_linear_float_inputs(model.graph))
    shaped = _infer_shapes(model, scratch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it warns about every fp32 constant it clamps
        converted = convert_float_to_float16(shaped, keep_io_types=True, disable_shape_infer=True,
                                             op_block_list=list(FP32_OPS) + [spec.OP_TYPE])
    _hyper_linear_in_fp16(converted.graph, float32_inputs)
    OnnxModel(converted).topological_sort()  # the converter appends its input casts last
    return converted


def _infer_shapes(model: onnx.ModelProto, scratch) -> onnx.ModelProto:
    """The shape inference the converter would run. It serialises the model, which protobuf
    cannot do over 2 GiB, so a large model goes through a file with external data."""
    if not needs_external_data(model):
        return onnx.shape_inference.infer_shapes(model)
    with tempfile.TemporaryDirectory(dir=scratch) as work:
        path = Path(work) / "model.onnx"
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=f"{path.name}.data")
        onnx.shape_inference.infer_shapes_path(str(path))
        return onnx.load(str(path), load_external_data=True)


def _hyper_linear_float_inputs(graph: onnx.GraphProto):
    """(name, a copy of the initializer) of every HyperLinear row scale and bias.

    The exporter shares equal tensors through Identity nodes; HyperLinear inputs are
    pointed at the initializer itself, so that it can be found after the conversion.
    """
    initializers = {init.name: init for init in graph.initializer}
    identities = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity"}
    for node in graph.node:
        if hyper_linear.is_hyper_linear(node):
            for index in _FLOAT32_INPUTS:
                while node.input[index] in identities:
                    node.input[index] = identities[node.input[index]]
            for name in (node.input[index] for index in _FLOAT32_INPUTS):
                if name in initializers:
                    copy = onnx.TensorProto()
                    copy.CopyFrom(initializers[name])
                    yield name, copy


def _hyper_linear_in_fp16(graph: onnx.GraphProto, float32_inputs: dict) -> None:
    """Feed each HyperLinear the fp16 tensor behind its input cast, drop its output cast, and
    give it back its float32 row scales and biases (the converter rounds them to fp16)."""
    for index, init in enumerate(graph.initializer):
        if init.name in float32_inputs:
            graph.initializer[index].CopyFrom(float32_inputs[init.name])
    producers = {out: node for node in graph.node for out in node.output}
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    dropped = []
    for node in graph.node:
        if not hyper_linear.is_hyper_linear(node):
            continue
        for index in _FLOAT32_INPUTS:
            cast = producers.get(node.input[index])
            if cast is not None and cast.op_type == "Cast" and cast.input[0] in float32_inputs:
                node.input[index] = cast.input[0]
                dropped.append(cast)
        cast_in = producers.get(node.input[_X])
        if (cast_in is not None and cast_in.op_type == "Cast" and _cast_to(cast_in) == onnx.TensorProto.FLOAT
                and len(consumers[cast_in.output[0]]) == 1):
            node.input[_X] = cast_in.input[0]
            dropped.append(cast_in)
        users = consumers.get(node.output[0], [])
        if users and all(u.op_type == "Cast" and _cast_to(u) == onnx.TensorProto.FLOAT16 for u in users):
            # Each cast's readers read the node's (now fp16) output directly.
            for cast_out in users:
                for reader in consumers.get(cast_out.output[0], []):
                    for i, name in enumerate(reader.input):
                        if name == cast_out.output[0]:
                            reader.input[i] = node.output[0]
                dropped.append(cast_out)
    # A cast may have served several nodes: remove those nothing reads any more.
    read = {name for node in graph.node for name in node.input} | {out.name for out in graph.output}
    unused = {id(cast): cast for cast in dropped if cast.output[0] not in read}
    for cast in unused.values():
        graph.node.remove(cast)
    # Stale fp32 value_info for re-typed tensors would fail the checker; shape inference redoes it.
    del graph.value_info[:]


def _cast_to(node: onnx.NodeProto) -> int:
    return next(onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == "to")


def export_tensorrt_inputs(model, directory, precision: str = "fp16", keep_functions: bool = False,
                           encoder_onnx=None) -> dict:
    """Write tensorrt/encoder.onnx and tensorrt/decoder.onnx for `model` into `directory`.

    The encoder starts from `encoder_onnx` (the bundle's own encoder.onnx: the same graph)
    or, without it, from a fresh export. `keep_functions` keeps the HyperLinear bodies, for
    checking the files with ONNX Runtime (tests); files for TensorRT never have them.
    Returns {name: path}.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    dummy = decoder_dummy_inputs(model)
    dynamic_axes = {"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}}
    paths = {}
    with tempfile.TemporaryDirectory(dir=directory) as work, torch.no_grad():
        work = Path(work)
        encoder = Path(encoder_onnx) if encoder_onnx else export_encoder(model, work / "e.onnx")
        export_module(_low_res_decoder(model), tuple(dummy[name] for name in DECODER_INPUTS), work / "d.onnx",
                DECODER_INPUTS, DECODER_OUTPUTS, dynamic_axes)
        for staged, name, convert in ((encoder, ENCODER, precision == "fp16"), (work / "d.onnx", DECODER, False)):
            # The decoder stays fp32 (as nanosam's): it is small, and its masks are thresholded logits.
            # A large encoder's weights are in its `.data` file, found beside it.
            onnx_model = onnx.load(str(staged), load_external_data=True)
            # The plugin runs HyperLinear only; the other coded tensors become constants again.
            decode_tensors(onnx_model)
            hyper_linear.attach_functions(onnx_model, OPSET)
            if convert:
                onnx_model = to_fp16(onnx_model, scratch=work)
            if not keep_functions:
                onnx_model = hyper_linear.without_functions(onnx_model)
            paths[name] = save_checked(onnx_model, directory / name, work / name)
    return paths
