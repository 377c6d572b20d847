"""The ONNX files TensorRT engines are built from: the bundle's `tensorrt/` folder.

They differ from the ONNX Runtime files in three ways, each forced by TensorRT:
- precision is decided in the file: TensorRT 11 builds strongly typed only, so the encoder
  is converted to fp16 here, with LayerNorm and softmax (and the decomposed LayerNorm2d of
  the neck) kept in fp32, where SAM encoders overflow in fp16; HyperLinear nodes take and
  give fp16 so the plugin runs its tensor-core path;
- HyperLinear nodes lose their function body: TensorRT < 10.7 would inline it and never
  call the plugin, and without a body a missing plugin is a parse error instead of a
  silent fall-back to the dense decode;
- the decoder is the batch decoder (export/batch_decoder.py), which ends at
  `low_res_masks`: the official decoder's `orig_im_size` is a float shape tensor and its
  `repeat_interleave` exports a OneHot, both of which TensorRT rejects (docs/design.md).
  The runtime upsamples on the host (runtime/masks.py).

Bundles that track video (a manifest `tracking` section: SAM 2) also get the two memory
pieces, memory_encoder.onnx and memory_attention.onnx, in float32 as the decoder, with the
sizes their engines' profiles are computed from in memory_attention.onnx's metadata
(`MemoryPieces`, read back by export/tensorrt_build.py).
"""

from __future__ import annotations

import json
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import onnx
import torch
from onnxruntime.transformers.float16 import convert_float_to_float16
from onnxruntime.transformers.onnx_model import OnnxModel

from compress.families import family_of
from plugins.hyperlinear import spec
from runtime.decoded_graph import decode_tensors
from runtime.provenance import read_metadata
from runtime.signature import BATCH_DECODER_INPUTS, BATCH_DECODER_OUTPUTS

from . import hyper_linear
from .batch_decoder import DYNAMIC_AXES, BatchDecoder, dummy_inputs
from .onnx_export import OPSET, export_encoder, export_module, needs_external_data, save_checked

ENCODER = "encoder.onnx"
DECODER = "decoder.onnx"
# The tracking pieces (compress/families/sam2_memory.py), under these names in the tensorrt/ folder.
MEMORY_ENCODER = "memory_encoder.onnx"
MEMORY_ATTENTION = "memory_attention.onnx"
MEMORY_PIECES = {"memory_encoder": MEMORY_ENCODER, "memory_attention": MEMORY_ATTENTION}  # manifest key -> file
MEMORY_PROFILE_KEY = "samedge.memory_profile"  # memory_attention.onnx's metadata_props: MemoryPieces as JSON
# Kept in fp32 in the fp16 encoder. ReduceMean/Sub/Pow/Sqrt/Div make up LayerNorm2d.
FP32_OPS = ("LayerNormalization", "Softmax", "ReduceMean", "Pow", "Sqrt", "Div")
PRECISIONS = ("fp16", "fp32")
# HyperLinear inputs by position: the plugin takes X in the activation type, these two in float32.
_X = spec.INPUTS.index("X")
_FLOAT32_INPUTS = (spec.INPUTS.index("row_scale"), spec.INPUTS.index("bias"))


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


@dataclass(frozen=True)
class MemoryPieces:
    """The sizes memory_attention.onnx's engine profile is computed from (export/tensorrt_build.py).

    `tokens_per_frame`: g*g, one memory frame's spatial tokens; `memory_dim`: their channels (64);
    `pointer_tokens`: tokens per object pointer (256 / 64 = 4); `num_maskmem`, `max_obj_ptrs`: the
    manifest's tracking settings (compress/families/sam2.py tracking_manifest)."""

    tokens_per_frame: int
    memory_dim: int
    pointer_tokens: int
    num_maskmem: int
    max_obj_ptrs: int


def _static_dims(model: onnx.ModelProto, name: str) -> list[int | None]:
    value = next(v for v in model.graph.input if v.name == name)
    return [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]


def memory_pieces_of(attention: onnx.ModelProto, tracking: dict) -> MemoryPieces:
    """MemoryPieces of a memory_attention graph (its curr [g*g, 1, C] and spatial_mem [S, 1, c] inputs)."""
    tokens, _, channels = _static_dims(attention, "curr")
    memory_dim = _static_dims(attention, "spatial_mem")[2]
    # One memory frame's tokens: the g*g grid, or a perceiver's latents (EdgeTAM: the manifest's memory_tokens).
    return MemoryPieces(tokens_per_frame=int(tracking.get("memory_tokens", tokens)), memory_dim=memory_dim, pointer_tokens=channels // memory_dim,
                        num_maskmem=int(tracking["num_maskmem"]), max_obj_ptrs=int(tracking["max_obj_ptrs"]))


def read_memory_pieces(folder) -> MemoryPieces | None:
    """The memory pieces' sizes recorded in `folder`/memory_attention.onnx; None where the folder has
    no memory pieces (SAM 1, or a bundle that does not track)."""
    folder = Path(folder)
    if not all((folder / name).is_file() for name in MEMORY_PIECES.values()):
        return None
    recorded = read_metadata(folder / MEMORY_ATTENTION).get(MEMORY_PROFILE_KEY)
    if recorded is None:
        raise ValueError(f"{folder / MEMORY_ATTENTION} does not record its sizes ({MEMORY_PROFILE_KEY}): it was not "
                         "written by export.tensorrt_onnx; rebuild the bundle with python -m export.build")
    return MemoryPieces(**json.loads(recorded))


def _tracking_section(model) -> dict | None:
    """The manifest's tracking section for `model`'s family (compress/families), None where it does not track."""
    section = family_of(model.config).manifest(model.config).get("tracking")
    return section if isinstance(section, dict) else None


def _memory_sources(tracking: dict, beside: Path | None) -> dict[str, Path]:
    """{tensorrt/ name: the bundle's own piece}, found beside its encoder.onnx by the manifest's names."""
    sources = {name: beside / tracking.get(key, name) if beside else None for key, name in MEMORY_PIECES.items()}
    missing = [name for name, path in sources.items() if path is None or not path.is_file()]
    if missing:
        raise ValueError(f"this model tracks video, and its TensorRT files start from the bundle's memory pieces: "
                         f"pass encoder_onnx, with {', '.join(missing)} beside it (export.build does)")
    return sources


def export_tensorrt_inputs(model, directory, precision: str = "fp16", keep_functions: bool = False,
                           encoder_onnx=None, decoder_onnx=None) -> dict:
    """Write tensorrt/encoder.onnx and tensorrt/decoder.onnx for `model` into `directory`.

    The encoder starts from `encoder_onnx` (the bundle's own encoder.onnx: the same graph)
    or, without it, from a fresh export; the decoder from `decoder_onnx` (the bundle's
    decoder_batch.onnx, any family's) or a fresh SAM 1 batch decoder. `keep_functions` keeps the HyperLinear bodies, for
    checking the files with ONNX Runtime (tests); files for TensorRT never have them.
    A model that tracks video (its family's manifest has a tracking section) also gets
    memory_encoder.onnx and memory_attention.onnx, float32, from the bundle's files beside
    `encoder_onnx` (the manifest's names).
    Returns {name: path}.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    with tempfile.TemporaryDirectory(dir=directory) as work, torch.no_grad():
        work = Path(work)
        encoder = Path(encoder_onnx) if encoder_onnx else export_encoder(model, work / "e.onnx")
        decoder = Path(decoder_onnx) if decoder_onnx else work / "d.onnx"
        if not decoder_onnx:
            export_module(BatchDecoder(model).eval(), dummy_inputs(model), decoder, BATCH_DECODER_INPUTS,
                          BATCH_DECODER_OUTPUTS, DYNAMIC_AXES)
        staged_files = [(encoder, ENCODER, precision == "fp16"), (decoder, DECODER, False)]
        tracking = _tracking_section(model)
        if tracking:
            beside = Path(encoder_onnx).parent if encoder_onnx else None
            # fp32 as the decoder: what they compute is fed back frame after frame (memories, pointers),
            # and the tracker's parity thresholds are float32's.
            staged_files += [(source, name, False) for name, source in _memory_sources(tracking, beside).items()]
        for staged, name, convert in staged_files:
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
            if name == MEMORY_ATTENTION:
                sizes = memory_pieces_of(onnx_model, tracking)
                onnx.helper.set_model_props(onnx_model, {**{e.key: e.value for e in onnx_model.metadata_props},
                                                         MEMORY_PROFILE_KEY: json.dumps(asdict(sizes))})
            paths[name] = save_checked(onnx_model, directory / name, work / name)
    return paths
