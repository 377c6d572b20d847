"""What the `samedge::HyperLinear` node is, written once (docs/formats.md has its meaning).

The torch module's exported node (compress/birkhoff/hyper_linear.py), the ONNX function
body (export/hyper_linear.py), the TensorRT files and build (export/tensorrt_*.py) and the
backend's plugin lookup read these names; tests/test_hyperlinear_spec.py checks the C++
plugin and kernel against them. Standard library only: runtime/ imports it without torch.

Code layout: the `codes` input is an int32 tensor [out_features, ceil(pairs / 2)], pairs =
ceil(in_features / 2). Word j of row i holds the index of pair 2j in its low INDEX_BITS
bits and that of pair 2j + 1 in the next INDEX_BITS. An index (theta + U * ring) is below
INDEX_BOUND, so every word is a non-negative int32; readers take each half as unsigned.
"""

from __future__ import annotations

OP_TYPE = "HyperLinear"
DOMAIN = "samedge"
DOMAIN_VERSION = 1

# TensorRT's plugin registry key; the ONNX parser finds the creator by the node's op type and
# its plugin_namespace / plugin_version attributes.
PLUGIN_NAME = OP_TYPE
PLUGIN_VERSION = "1"
PLUGIN_NAMESPACE = "samedge"
PLUGIN_KEY = (PLUGIN_NAME, PLUGIN_VERSION, PLUGIN_NAMESPACE)  # as IPluginRegistry.get_creator takes them
PLUGIN_LIBRARY = "libsamedge_hyperlinear.so"  # CMakeLists.txt's samedge_hyperlinear target

INPUTS = ("X", "codes", "row_scale", "bias")
OUTPUT = "Y"
# (name, onnx.AttributeProto type name), in the function signature's order (the exporter
# sorts a node's by name). The plugin creator's fields are the first ones; the ONNX parser
# keeps the plugin_* pair for the registry lookup.
PLUGIN_FIELDS = (
    ("in_features", "INT"),
    ("out_features", "INT"),
    ("codebook_size", "INT"),
    ("lattice_side", "INT"),
    ("side", "FLOAT"),
    ("center", "FLOATS"),
    ("gains", "FLOATS"),
)
ATTRIBUTES = PLUGIN_FIELDS + (("plugin_namespace", "STRING"), ("plugin_version", "STRING"))
ATTRIBUTE_NAMES = tuple(name for name, _ in ATTRIBUTES)
MAX_GAINS = 4  # gains holds K + 1 entries, K <= 3 (the codec's MAX_RINGS): the plugin's bound

CODES_DTYPE = "int32"  # TensorRT takes neither uint8 nor int16 weights
INDEX_BITS = 16
PAIRS_PER_WORD = 2
# What the codec writes: U * (K + 1) <= 1600 * 4 indices. Below 2**15 keeps the high half's sign bit clear.
INDEX_BOUND = 1 << 13
