"""Decode an ONNX model's samedge nodes in numpy: HyperTensor -> a float32 initializer,
HyperLinear -> MatMul + Add with the decoded weight.

Why not let ONNX Runtime fold the function bodies: it folds them op by op over the whole
model at session start, holding every intermediate (int64 indices, float pairs) of every
layer, which doubled a vit_b session's peak memory (docs/benchmarks/ort-memory.md). Here one
layer is decoded at a time through its 51 KB table (plugins/hyperlinear/reference.py, the
same bits as the bodies), and the decoded weights reach the session without a copy
(`SessionOptions.add_external_initializers`), so a compressed bundle opens into the same
graph as a dense one and runs at its speed. TensorRT files get their HyperTensor nodes
decoded the same way (export/tensorrt_onnx.py): the plugin runs only HyperLinear.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from plugins.hyperlinear import reference, spec

# Where a decoded weight's TensorProto says its data is: nowhere on disk. ONNX Runtime takes
# the array itself (add_external_initializers) before it would look.
IN_MEMORY = "samedge-decoded-in-memory"


def is_samedge_node(node: onnx.NodeProto) -> bool:
    return node.domain == spec.DOMAIN and node.op_type in (spec.OP_TYPE, spec.TENSOR_OP_TYPE)


def has_samedge_nodes(model: onnx.ModelProto) -> bool:
    return any(is_samedge_node(node) for node in model.graph.node)


def _attributes(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


class _Initializers:
    """The graph's initializers by name, seen through the exporter's Identity nodes."""

    def __init__(self, graph: onnx.GraphProto):
        self.graph = graph
        self.by_name = {init.name: init for init in graph.initializer}
        self.identity = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity"}

    def array(self, name: str) -> np.ndarray:
        while name not in self.by_name and name in self.identity:
            name = self.identity[name]
        if name not in self.by_name:
            raise ValueError(f"{name} is not a constant: a samedge node needs its codes as initializers")
        return numpy_helper.to_array(self.by_name[name])


def decode_tensors(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every HyperTensor node becomes the initializer it computes (same name), in place."""
    graph = model.graph
    known = _Initializers(graph)
    kept = []
    for node in graph.node:
        if node.domain == spec.DOMAIN and node.op_type == spec.TENSOR_OP_TYPE:
            attributes = _attributes(node)
            values = reference.decode_tensor(known.array(node.input[0]), known.array(node.input[1]),
                                             **attributes)
            graph.initializer.append(numpy_helper.from_array(values, node.output[0]))
        else:
            kept.append(node)
    _replace_nodes(graph, kept)
    return _drop_unread(model)


def decode_all(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """The model with every samedge node decoded, and the decoded weights it declares as
    in-memory external data ({name: float32 array}, for add_external_initializers)."""
    decode_tensors(model)
    graph = model.graph
    known = _Initializers(graph)
    kept, weights = [], {}
    for node in graph.node:
        if not (node.domain == spec.DOMAIN and node.op_type == spec.OP_TYPE):
            kept.append(node)
            continue
        attributes = {k: v for k, v in _attributes(node).items() if not k.startswith("plugin_")}
        weight = reference.decode_linear(known.array(node.input[1]), known.array(node.input[2]), **attributes)
        name = f"{node.output[0]}.decoded_weight_t"
        weights[name] = np.ascontiguousarray(weight.T)  # [in, out], as the exporter gives a dense Linear
        graph.initializer.append(_in_memory(name, weights[name]))
        product = f"{node.output[0]}.product"
        kept.append(onnx.helper.make_node("MatMul", [node.input[0], name], [product], name=f"{node.name}.matmul"))
        kept.append(onnx.helper.make_node("Add", [product, node.input[3]], [node.output[0]], name=f"{node.name}.bias"))
    _replace_nodes(graph, kept)
    return _drop_unread(model), weights


def _in_memory(name: str, array: np.ndarray) -> onnx.TensorProto:
    tensor = onnx.TensorProto(name=name, data_type=onnx.TensorProto.FLOAT, dims=array.shape,
                              data_location=onnx.TensorProto.EXTERNAL)
    for key, value in (("location", IN_MEMORY), ("offset", "0"), ("length", str(array.nbytes))):
        tensor.external_data.add(key=key, value=value)
    return tensor


def _replace_nodes(graph: onnx.GraphProto, nodes: list) -> None:
    del graph.node[:]
    graph.node.extend(nodes)


def _drop_unread(model: onnx.ModelProto) -> onnx.ModelProto:
    """Without initializers nothing reads (the codes), and without the samedge functions once
    no node needs them."""
    graph = model.graph
    read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    unread = [init for init in graph.initializer if init.name not in read]
    for init in unread:
        graph.initializer.remove(init)
    if not has_samedge_nodes(model):
        for function in [f for f in model.functions if f.domain == spec.DOMAIN]:
            model.functions.remove(function)
    return model
