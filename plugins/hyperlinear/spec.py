"""What the `samedge::HyperLinear` node is, written once (docs/formats.md has its meaning).

The torch module's exported node (compress/birkhoff/hyper_linear.py), the ONNX function
body (export/hyper_linear.py), the TensorRT files and build (export/tensorrt_*.py) and the
backend's plugin lookup read these names; tests/test_hyperlinear_spec.py checks the C++
plugin and kernel against them. Standard library only: runtime/ imports it without torch.

Code layout (the same bits in the checkpoint, the ONNX initializers, the torch module, the
TensorRT plugin and the kernel; plugins/hyperlinear/reference.py packs and decodes it): the
indices (theta + U * ring) of a tensor's pairs, in row-major order (Linear weight [out, in]:
row r's pairs 0 .. ceil(in/2) - 1, then row r + 1), each `index_bits` bits wide, form one bit
stream: index p occupies stream bits [p * b, p * b + b), least significant first, and stream
bit k is bit (k mod 32) of word floor(k / 32). The words are an int32 tensor of
ceil(count * b / 32) elements, read as unsigned 32-bit (the top word's sign bit may be set).
An index straddles at most two words; the unused high bits of the last word are zero.
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
# What decoding any coded tensor needs (HyperLinear's and HyperTensor's common attributes).
CODE_FIELDS = (
    ("codebook_size", "INT"),
    ("lattice_side", "INT"),
    ("index_bits", "INT"),
    ("side", "FLOAT"),
    ("center", "FLOATS"),
    ("gains", "FLOATS"),
)
PLUGIN_FIELDS = (("in_features", "INT"), ("out_features", "INT")) + CODE_FIELDS
ATTRIBUTES = PLUGIN_FIELDS + (("plugin_namespace", "STRING"), ("plugin_version", "STRING"))
ATTRIBUTE_NAMES = tuple(name for name, _ in ATTRIBUTES)
MAX_GAINS = 4  # gains holds K + 1 entries, K <= 3 (the codec's MAX_RINGS): the plugin's bound

CODES_DTYPE = "int32"  # TensorRT takes neither uint8 nor int16 weights
WORD_BITS = 32
MAX_INDEX_BITS = 16  # what the decoders accept; the codec writes 11 to 13 (U * (K + 1) <= 1600 * 4)
# What the codec writes: U * (K + 1) <= 1600 * 4 indices, so at most 13 bits.
INDEX_BOUND = 1 << 13

# Every other Birkhoff-coded tensor (conv kernels, biases, norms, embeddings) in an ONNX file:
# a node with no data input whose output is the decoded tensor, run once (folded) by ONNX
# Runtime, decoded in numpy by samedge's ONNX Runtime backend and before TensorRT sees the file.
# Pairs are the flattened tensor's (an odd count padded with one element); the same layout.
TENSOR_OP_TYPE = "HyperTensor"
TENSOR_INPUTS = ("codes", "scale")
TENSOR_OUTPUT = "T"
TENSOR_ATTRIBUTES = (("shape", "INTS"),) + CODE_FIELDS
TENSOR_ATTRIBUTE_NAMES = tuple(name for name, _ in TENSOR_ATTRIBUTES)
