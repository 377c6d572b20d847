"""The samedge ONNX nodes: `HyperLinear` (a compressed Linear) and `HyperTensor` (any other
Birkhoff-coded tensor), with model-local function bodies made of standard ops.

Their names, inputs, attributes and code layout are plugins/hyperlinear/spec.py's, their
meaning docs/formats.md's. ONNX Runtime runs the bodies with no compiled library (plain
onnxruntime on a bundle's files works); samedge's own ONNX Runtime backend decodes the
nodes in numpy instead (runtime/decoded_graph.py), and TensorRT files keep HyperLinear
without its body for the plugin. Each body decodes through the table of
plugins/hyperlinear/reference.py, in the same float32 operations, so it gives the same bits
(tested at both of ONNX Runtime's optimisation levels). X and Y may be float16 (the
TensorRT encoder): the weight is cast to X's type, as the plugin does.
"""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import onnx.parser

from compress.birkhoff.codec import lattice_side
from compress.birkhoff.model import decoded_values
from plugins.hyperlinear import reference, spec

_HEADER = '<domain: "{domain}", opset_import: ["" : {{opset}}]>\n{op} <{attributes}>\n({inputs}) => ({output})\n'
_LINEAR_SIGNATURE = _HEADER.format(domain=spec.DOMAIN, op=spec.OP_TYPE, attributes=", ".join(spec.ATTRIBUTE_NAMES),
                                   inputs=", ".join(spec.INPUTS), output=spec.OUTPUT)
_TENSOR_SIGNATURE = _HEADER.format(domain=spec.DOMAIN, op=spec.TENSOR_OP_TYPE,
                                   attributes=", ".join(spec.TENSOR_ATTRIBUTE_NAMES),
                                   inputs=", ".join(spec.TENSOR_INPUTS), output=spec.TENSOR_OUTPUT)
# onnx's textual format: readable, and checked by the parser. The bodies' input, output and
# @attribute names are the spec's: were one renamed there only, onnx.checker and ONNX Runtime
# would refuse every exported model (tested). Integer work in int64 with Div/Mod rather than
# bit operations (ORT's CUDA provider has no BitwiseAnd).
_CONSTANTS = """
    zero = Constant <value_int = 0> ()
    one = Constant <value_int = 1> ()
    two = Constant <value_int = 2> ()
    first_axis = Constant <value_ints = [0]> ()
    last_axis = Constant <value_ints = [-1]> ()
    word_bits = Constant <value_int = 32> ()
    lanes = Constant <value_int = 32> ()
    last_lane = Constant <value_int = 31> ()
    word_range = Constant <value_int = 4294967296> ()
    powers_of_two = Constant <value_ints = {powers}> ()
    half_factor = Constant <value_float = 0.5> ()
    codebook = Constant <value_int: int = @codebook_size> ()
    lattice = Constant <value_int: int = @lattice_side> ()
    bits = Constant <value_int: int = @index_bits> ()
    side_value = Constant <value_float: float = @side> ()
    center_value = Constant <value_floats: floats = @center> ()
    gain_table = Constant <value_floats: floats = @gains> ()
"""
# table [U * (K + 1), 2]: reference.pair_table.
_TABLE = """
    gain_shape = Shape (gain_table)
    gain_count = Squeeze (gain_shape, first_axis)
    table_size = Mul (codebook, gain_count)
    table_index = Range (zero, table_size, one)
    ring = Div (table_index, codebook)
    theta = Mod (table_index, codebook)
    area = Mul (lattice, lattice)
    theta_x = Mod (theta, area)
    theta_y = Mod (theta, lattice)
    theta_x_f = Cast <to = 1> (theta_x)
    theta_y_f = Cast <to = 1> (theta_y)
    area_f = Cast <to = 1> (area)
    lattice_f = Cast <to = 1> (lattice)
    x_scaled = Mul (theta_x_f, side_value)
    y_scaled = Mul (theta_y_f, side_value)
    x = Div (x_scaled, area_f)
    y = Div (y_scaled, lattice_f)
    half = Mul (side_value, half_factor)
    gain = Gather (gain_table, ring)
    center_x = Gather <axis = 0> (center_value, zero)
    center_y = Gather <axis = 0> (center_value, one)
    dx = Sub (x, half)
    dy = Sub (y, half)
    dx_gain = Mul (dx, gain)
    dy_gain = Mul (dy, gain)
    w0 = Add (center_x, dx_gain)
    w1 = Add (center_y, dy_gain)
    w0_last = Unsqueeze (w0, last_axis)
    w1_last = Unsqueeze (w1, last_axis)
    table = Concat <axis = -1> (w0_last, w1_last)
"""
# pair_values [count, 2] from `count` and the codes: reference.unpack, then the table. 32
# indices fill exactly `bits` words, so the words (zero-padded to whole groups) are reshaped
# to [groups, bits] and lane j of every group reads the same words and shift: the per-index
# offsets are 32-entry constants, not count-long tensors (a quarter less work per run, where
# the body runs on every call). Lane j's index straddles words w_j, w_j + 1 of its group (w_j
# + 1 never past the group when it matters): low / 2^s + (high mod 2^b) * 2^(32 - s), below 2^48.
_UNPACK = """
    words = Cast <to = 7> (codes)
    unsigned = Mod (words, word_range)
    count_plus = Add (count, last_lane)
    group_count = Div (count_plus, lanes)
    group_words = Mul (group_count, bits)
    word_shape = Shape (unsigned)
    word_count = Squeeze (word_shape, first_axis)
    pad_amount = Sub (group_words, word_count)
    pad_end = Unsqueeze (pad_amount, first_axis)
    pads = Concat <axis = 0> (first_axis, pad_end)
    padded = Pad (unsigned, pads)
    group_dim = Unsqueeze (group_count, first_axis)
    bits_dim = Unsqueeze (bits, first_axis)
    group_shape = Concat <axis = 0> (group_dim, bits_dim)
    grouped = Reshape (padded, group_shape)
    lane = Range (zero, lanes, one)
    lane_offset = Mul (lane, bits)
    lane_word = Div (lane_offset, word_bits)
    lane_shift = Mod (lane_offset, word_bits)
    lane_following = Add (lane_word, one)
    last_group_word = Sub (bits, one)
    lane_next = Min (lane_following, last_group_word)
    shift_power = Gather (powers_of_two, lane_shift)
    high_room = Div (word_range, shift_power)
    index_range = Gather (powers_of_two, bits)
    low = Gather <axis = 1> (grouped, lane_word)
    high = Gather <axis = 1> (grouped, lane_next)
    low_part = Div (low, shift_power)
    high_bits = Mod (high, index_range)
    high_part = Mul (high_bits, high_room)
    joined = Add (low_part, high_part)
    grouped_index = Mod (joined, index_range)
    flat_index = Reshape (grouped_index, last_axis)
    count_end = Unsqueeze (count, first_axis)
    index = Slice (flat_index, first_axis, count_end, first_axis)
    pair_values = Gather <axis = 0> (table, index)
"""

_LINEAR_BODY = """
    in_features_value = Constant <value_int: int = @in_features> ()
    out_features_value = Constant <value_int: int = @out_features> ()
    in_plus_one = Add (in_features_value, one)
    pairs = Div (in_plus_one, two)
    count = Mul (out_features_value, pairs)
""" + _UNPACK + """
    out_column = Unsqueeze (out_features_value, first_axis)
    row_shape = Concat <axis = 0> (out_column, last_axis)
    padded_weight = Reshape (pair_values, row_shape)
    in_end = Unsqueeze (in_features_value, first_axis)
    axis_one = Constant <value_ints = [1]> ()
    unit_weight = Slice (padded_weight, first_axis, in_end, axis_one)
    row_scale_column = Unsqueeze (row_scale, axis_one)
    weight = Mul (unit_weight, row_scale_column)
    weight_t = Transpose <perm = [1, 0]> (weight)
    weight_like_x = CastLike (weight_t, X)
    bias_like_x = CastLike (bias, X)
    product = MatMul (X, weight_like_x)
    Y = Add (product, bias_like_x)
"""
_TENSOR_BODY = """
    shape_value = Constant <value_ints: ints = @shape> ()
    size = ReduceProd <keepdims = 0> (shape_value)
    size_plus_one = Add (size, one)
    count = Div (size_plus_one, two)
""" + _UNPACK + """
    flat = Reshape (pair_values, last_axis)
    size_end = Unsqueeze (size, first_axis)
    values = Slice (flat, first_axis, size_end, first_axis)
    scaled = Mul (values, scale)
    T = Reshape (scaled, shape_value)
"""


def _parse(signature: str, body: str, opset: int) -> onnx.FunctionProto:
    powers = "[" + ", ".join(str(1 << k) for k in range(spec.WORD_BITS)) + "]"
    text = signature.format(opset=opset) + "{" + _CONSTANTS.format(powers=powers) + _TABLE + body + "}"
    return onnx.parser.parse_function(text)


def hyper_linear_function(opset: int) -> onnx.FunctionProto:
    return _parse(_LINEAR_SIGNATURE, _LINEAR_BODY, opset)


def hyper_tensor_function(opset: int) -> onnx.FunctionProto:
    return _parse(_TENSOR_SIGNATURE, _TENSOR_BODY, opset)


def is_hyper_linear(node: onnx.NodeProto) -> bool:
    return node.domain == spec.DOMAIN and node.op_type == spec.OP_TYPE


def has_hyper_linear(model: onnx.ModelProto) -> bool:
    return any(is_hyper_linear(node) for node in model.graph.node)


def _has_op(model: onnx.ModelProto, op_type: str) -> bool:
    return any(n.domain == spec.DOMAIN and n.op_type == op_type for n in model.graph.node)


def attach_functions(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """Add the body of each samedge op the graph uses, and the domain's opset import (once)."""
    for op_type, function in ((spec.OP_TYPE, hyper_linear_function), (spec.TENSOR_OP_TYPE, hyper_tensor_function)):
        if _has_op(model, op_type) and not any(f.domain == spec.DOMAIN and f.name == op_type for f in model.functions):
            model.functions.append(function(opset))
    if model.functions and not any(o.domain == spec.DOMAIN for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(spec.DOMAIN, spec.DOMAIN_VERSION))
    return model


def without_functions(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose HyperLinear nodes only a TensorRT plugin (or a registered kernel) can run."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    del copy.functions[:]
    return copy


def code_tensors(model: onnx.ModelProto, coded: dict) -> int:
    """Replace each float32 initializer that holds a decode-at-load tensor's values by a
    HyperTensor node computing it from the codes; how many were replaced.

    `coded`: {parameter name: compress.birkhoff EncodedTensor} (the model's CODED_TENSORS).
    Initializers are matched by content, not name: the exporter renames what it folds or
    shares. A tensor the exporter transformed (e.g. folded into another constant) no longer
    matches and stays float32 (docs/benchmarks/tensorrt-files.md counts what is left).
    """
    by_content = {}
    for encoded in coded.values():
        values = decoded_values(encoded)
        by_content[hashlib.sha256(values.astype("<f4").tobytes()).digest()] = encoded
    graph, nodes, replaced = model.graph, [], []
    for init in graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT or not init.raw_data:
            continue
        encoded = by_content.get(hashlib.sha256(init.raw_data).digest())
        if encoded is None:
            continue
        codes, scale = f"{init.name}.codes", f"{init.name}.scale"
        unit = np.asarray(encoded.scale if encoded.scale is not None else [1.0], np.float32)
        nodes.append(onnx.helper.make_node(
            spec.TENSOR_OP_TYPE, [codes, scale], [init.name], name=f"{init.name}.decode", domain=spec.DOMAIN,
            shape=list(init.dims), codebook_size=encoded.codebook_size,
            lattice_side=lattice_side(encoded.codebook_size), index_bits=encoded.bits,
            side=float(np.float32(encoded.side)), center=[float(v) for v in np.asarray(encoded.center, np.float32)],
            gains=[float(v) for v in np.asarray(encoded.gains, np.float32)]))
        replaced.append((init, onnx.numpy_helper.from_array(reference.pack(encoded.indices, encoded.bits), codes),
                         onnx.numpy_helper.from_array(unit.reshape(1), scale)))
    for init, codes, scale in replaced:
        graph.initializer.remove(init)
        graph.initializer.extend([codes, scale])
    for index, node in enumerate(nodes):  # first in the graph: they read only initializers
        graph.node.insert(index, node)
    return len(nodes)
