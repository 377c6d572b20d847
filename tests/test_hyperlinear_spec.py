"""plugins/hyperlinear/spec.py against what the C++ plugin, the CUDA kernel, CMake and the codec say.

The C++ sources are read as text, so these run wherever Python does (no nvcc, no TensorRT):
a name, a field or a layout constant changed on one side only fails here. The ONNX side
(function signature, exported node) is checked in test_birkhoff_onnx.py, the compiled
creator's answers in test_plugin_source.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from compress.birkhoff import codec
from plugins.hyperlinear import spec
from runtime.backends.tensorrt_backend import PLUGIN_KEY, PLUGIN_LIBRARY

REPO = Path(__file__).resolve().parent.parent
PLUGIN = REPO / "plugins" / "hyperlinear"
# How the creator reads each spec attribute type.
FIELD_TYPES = {"INT": "kINT32", "FLOAT": "kFLOAT32", "FLOATS": "kFLOAT32"}
READERS = {"INT": "readInts", "FLOAT": "readFloats", "FLOATS": "readFloats"}


def source(name: str) -> str:
    """A C++/CUDA file without its comments, so a name in a comment never passes for code."""
    return re.sub(r"//[^\n]*|/\*.*?\*/", "", (PLUGIN / name).read_text(), flags=re.DOTALL)


def constant(text: str, name: str) -> str:
    """The initialiser of `constexpr ... name = value;` (exactly one)."""
    values = re.findall(rf"\bconstexpr\b[^;=]*\b{name}\s*=\s*([^;]+);", text)
    assert len(values) == 1, f"{name}: {values}"
    return values[0].strip()


def body(text: str, start: str) -> str:
    """The brace-balanced block that follows the first occurrence of `start`."""
    begin = text.index("{", text.index(start))
    depth = 0
    for end in range(begin, len(text)):
        depth += {"{": 1, "}": -1}.get(text[end], 0)
        if depth == 0:
            return text[begin:end + 1]
    raise AssertionError(f"unbalanced block after {start}")


def test_plugin_identity_is_the_spec_key():
    cpp = source("hyperlinear_plugin.cpp")
    names = {"kPluginName": spec.PLUGIN_NAME, "kPluginVersion": spec.PLUGIN_VERSION,
             "kPluginNamespace": spec.PLUGIN_NAMESPACE}
    for name, expected in names.items():
        assert constant(cpp, name) == f'"{expected}"', name
    # Both the plugin and its creator answer with those constants, never with a literal of their own.
    for getter, name in (("getPluginName", "kPluginName"), ("getPluginVersion", "kPluginVersion"),
                         ("getPluginNamespace", "kPluginNamespace")):
        answers = re.findall(rf"\b{getter}\(\) const noexcept override {{ return (\w+); }}", cpp)
        assert answers == [name, name], (getter, answers)
    assert spec.PLUGIN_KEY == (spec.PLUGIN_NAME, spec.PLUGIN_VERSION, spec.PLUGIN_NAMESPACE)
    assert spec.PLUGIN_NAME == spec.OP_TYPE  # the ONNX parser looks the creator up by the node's op type


def test_creator_fields_are_the_spec_attributes_in_order():
    cpp = source("hyperlinear_plugin.cpp")
    expected = [(name, FIELD_TYPES[kind]) for name, kind in spec.PLUGIN_FIELDS]
    creator = body(cpp, "HyperLinearCreator() {")
    advertised = re.findall(r'PluginField\("(\w+)", nullptr, PluginFieldType::(\w+),', creator)
    assert advertised == expected
    serialised = re.findall(r'PluginField\("(\w+)", [^,]+, PluginFieldType::(\w+),', body(cpp, "void buildFields()"))
    assert serialised == expected
    read = re.findall(r'\b(readInts|readFloats)\(fc, "(\w+)"', body(cpp, "static bool readParams("))
    assert read == [(READERS[kind], name) for name, kind in spec.PLUGIN_FIELDS]
    # The registry lookup's attributes are the parser's, not fields of the plugin.
    assert spec.ATTRIBUTES[len(spec.PLUGIN_FIELDS):] == (("plugin_namespace", "STRING"), ("plugin_version", "STRING"))
    assert int(constant(source("hyperlinear_kernel.cuh"), "kMaxRings")) + 1 == spec.MAX_GAINS


def test_plugin_inputs_are_the_spec_inputs_in_order():
    cpp = source("hyperlinear_plugin.cpp")
    (enumerators,) = re.findall(r"\benum Input : int32_t {([^}]*)}", cpp)
    camel = ["k" + "".join(part[:1].upper() + part[1:] for part in name.split("_")) for name in spec.INPUTS]
    assert [e.strip() for e in enumerators.split(",")] == camel + ["kNbInputs"]
    # Inputs are addressed through the enum alone, so its order is the one the plugin uses.
    numbered = re.findall(r"\b(?:inputs|inputTypes|inputDesc|in|inOut)\[\d+\]", cpp)
    assert not numbered, numbered
    assert spec.OUTPUT not in spec.INPUTS


def test_code_layout_constants_are_the_spec_ones():
    cuh, cu = source("hyperlinear_kernel.cuh"), source("hyperlinear_kernel.cu")
    assert int(constant(cuh, "kIndexBits")) == spec.INDEX_BITS
    assert int(constant(cuh, "kPairsPerWord")) == spec.PAIRS_PER_WORD
    assert constant(cuh, "kMaxCodebookSize") == "1 << kIndexBits"
    # The decode's mask and shift are built from kIndexBits, with the first index in the low bits.
    word = body(cu, "void decodeWord(")
    assert constant(word, "kLow") == "(1u << kIndexBits) - 1u"
    assert re.search(r"decodePair\(static_cast<int32_t>\(packed & kLow\), p, scale, weights\[0\], weights\[1\]\)",
                     word)
    assert re.search(r"decodePair\(static_cast<int32_t>\(packed >> kIndexBits\), p, scale, weights\[2\], "
                     r"weights\[3\]\)", word)
    assert re.search(r"\bconst uint32_t packed = static_cast<uint32_t>\(codes\[", word)
    assert spec.CODES_DTYPE == "int32" and spec.INDEX_BITS * spec.PAIRS_PER_WORD == 32
    cpp = source("hyperlinear_plugin.cpp")
    assert re.search(r"case kCodes: return desc\.type == DataType::kINT32;", cpp)


def test_the_codec_writes_indices_the_layout_holds():
    # Below 2**(INDEX_BITS - 1), so the high index never sets the int32 word's sign bit.
    assert spec.INDEX_BOUND <= 1 << (spec.INDEX_BITS - 1)
    assert max(codec.CODEBOOK_SIZES) * (codec.MAX_RINGS + 1) <= spec.INDEX_BOUND
    assert codec.MAX_RINGS + 1 == spec.MAX_GAINS


def test_cmake_target_is_the_library_the_loaders_open():
    targets = re.findall(r"^add_library\((\w+) SHARED", (PLUGIN / "CMakeLists.txt").read_text(), re.MULTILINE)
    assert [f"lib{t}.so" for t in targets] == [spec.PLUGIN_LIBRARY]
    assert (PLUGIN_KEY, PLUGIN_LIBRARY) == (spec.PLUGIN_KEY, spec.PLUGIN_LIBRARY)


def test_spec_imports_without_torch_onnx_or_numpy():
    # runtime/ reads the spec, and a runtime-only install has neither torch nor onnx.
    probe = ("import sys, plugins.hyperlinear.spec; "
             "print(sorted({'torch', 'onnx', 'numpy'} & {m.split('.')[0] for m in sys.modules}))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
