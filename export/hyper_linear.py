"""The `samedge::HyperLinear` ONNX node: one node per compressed Linear.

The node is written by compress.birkhoff.hyper_linear during export; its name, inputs,
attributes and code layout are plugins/hyperlinear/spec.py's, its meaning docs/formats.md's.

ONNX Runtime runs it through a model-local function made of standard ops (this file),
so no compiled library is needed. The decode is float32; X and Y may be float32 or
float16 (the TensorRT encoder), the weight cast to X's type as the plugin does. Its decode is the same sequence of float32 operations
as `compress.birkhoff.hyper_linear.decode_weight`, which is the reference
implementation of the TensorRT plugin too. Files for TensorRT have no function body
(`without_functions`, export/tensorrt_onnx.py says why).
"""

from __future__ import annotations

import onnx
import onnx.parser

from plugins.hyperlinear import spec

# onnx's textual format: readable, and checked by the parser. Integer work in int64;
# Div/Mod rather than bit operations (ORT's CUDA provider has no BitwiseAnd).
_SIGNATURE = (f'<domain: "{spec.DOMAIN}", opset_import: ["" : {{opset}}]>\n'
              f'{spec.OP_TYPE} <{", ".join(spec.ATTRIBUTE_NAMES)}>\n'
              f'({", ".join(spec.INPUTS)}) => ({spec.OUTPUT})\n')
# The body's X, codes, row_scale, bias, Y and @attributes are the spec's names: were one renamed
# there only, onnx.checker and ONNX Runtime would refuse every exported model (tested).
_BODY = """
{{
    word = Constant <value_int = {word}> ()
    last_axis = Constant <value_ints = [-1]> ()
    keep_rows = Constant <value_ints = [0, -1]> ()
    axis_one = Constant <value_ints = [1]> ()
    start = Constant <value_ints = [0]> ()
    one = Constant <value_int = 1> ()
    two = Constant <value_int = 2> ()
    half_factor = Constant <value_float = 0.5> ()
    first = Constant <value_int = 0> ()
    in_features_value = Constant <value_int: int = @in_features> ()
    codebook = Constant <value_int: int = @codebook_size> ()
    lattice = Constant <value_int: int = @lattice_side> ()
    side_value = Constant <value_float: float = @side> ()
    center_value = Constant <value_floats: floats = @center> ()
    gain_table = Constant <value_floats: floats = @gains> ()

    words = Cast <to = 7> (codes)
    low = Mod (words, word)
    high = Div (words, word)
    low_last = Unsqueeze (low, last_axis)
    high_last = Unsqueeze (high, last_axis)
    both = Concat <axis = -1> (low_last, high_last)
    all_indices = Reshape (both, keep_rows)
    in_plus_one = Add (in_features_value, one)
    pair_count = Div (in_plus_one, two)
    pair_end = Unsqueeze (pair_count, start)
    index = Slice (all_indices, start, pair_end, axis_one)

    ring = Div (index, codebook)
    theta = Mod (index, codebook)
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
    center_x = Gather <axis = 0> (center_value, first)
    center_y = Gather <axis = 0> (center_value, one)
    dx = Sub (x, half)
    dy = Sub (y, half)
    dx_gain = Mul (dx, gain)
    dy_gain = Mul (dy, gain)
    w0 = Add (center_x, dx_gain)
    w1 = Add (center_y, dy_gain)
    w0_last = Unsqueeze (w0, last_axis)
    w1_last = Unsqueeze (w1, last_axis)
    pairs = Concat <axis = -1> (w0_last, w1_last)
    padded_weight = Reshape (pairs, keep_rows)
    in_end = Unsqueeze (in_features_value, start)
    unit_weight = Slice (padded_weight, start, in_end, axis_one)
    row_scale_column = Unsqueeze (row_scale, axis_one)
    weight = Mul (unit_weight, row_scale_column)
    weight_t = Transpose <perm = [1, 0]> (weight)
    weight_like_x = CastLike (weight_t, X)
    bias_like_x = CastLike (bias, X)
    product = MatMul (X, weight_like_x)
    Y = Add (product, bias_like_x)
}}
"""


def hyper_linear_function(opset: int) -> onnx.FunctionProto:
    return onnx.parser.parse_function((_SIGNATURE + _BODY).format(opset=opset, word=1 << spec.INDEX_BITS))


def is_hyper_linear(node: onnx.NodeProto) -> bool:
    return node.domain == spec.DOMAIN and node.op_type == spec.OP_TYPE


def has_hyper_linear(model: onnx.ModelProto) -> bool:
    return any(is_hyper_linear(node) for node in model.graph.node)


def attach_function(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """Add the function body and the domain's opset import (once)."""
    if not any(f.domain == spec.DOMAIN and f.name == spec.OP_TYPE for f in model.functions):
        model.functions.append(hyper_linear_function(opset))
    if not any(o.domain == spec.DOMAIN for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(spec.DOMAIN, spec.DOMAIN_VERSION))
    return model


def without_functions(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose HyperLinear nodes only a TensorRT plugin (or a registered kernel) can run."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    del copy.functions[:]
    return copy
