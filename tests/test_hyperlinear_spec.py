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
from plugins.hyperlinear import harness, spec
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
    assert int(constant(cuh, "kWordBits")) == spec.WORD_BITS
    assert int(constant(cuh, "kMaxIndexBits")) == spec.MAX_INDEX_BITS
    assert constant(cuh, "kMaxCodebookSize") == "1 << kMaxIndexBits"
    assert spec.CODES_DTYPE == "int32"
    # The stream's length: ceil(N * ceil(K / 2) * b / 32) words, the pairs row-major.
    count = body(cuh, "inline int64_t hyperlinearWordCount(")
    assert re.search(r"static_cast<int64_t>\(p\.out_features\) \* \(\(p\.in_features \+ 1\) / 2\) \* p\.index_bits",
                     count)
    assert "(bits + kWordBits - 1) / kWordBits" in count
    # Index p (= row * ceil(K / 2) + pair) starts at stream bit p * b, counted in 64 bits; stream
    # bit k is bit k % 32 of word k / 32 (the shifts below are those for kWordBits == 32).
    assert re.search(r"static_assert\(kWordBits == 32,", cu)
    load = body(cu, "GroupWords loadGroup(")
    assert re.search(r"const int64_t bit = \(static_cast<int64_t>\(row\) \* c\.pairsPerRow \+ pair0\) \* c\.bits;",
                     load)
    assert "const int64_t word = bit >> 5;" in load and "static_cast<uint32_t>(bit & 31)" in load
    # (tableSize, pairsPerRow, bits) of the decode's Codes: ceil(K / 2) pairs a row, b = index_bits.
    assert "hyperlinearTableSize(p), (p.in_features + 1) / 2, p.index_bits" in body(cu, "Codes makeCodes(")
    # Words are read unsigned (the sign bit is a data bit), least significant bit first: the
    # index is (next word : this word) >> offset, masked to b bits.
    assert re.search(r"static_cast<uint32_t>\(readOnly\(c\.words \+ word\)\)", cu)
    funnel = body(cu, "uint32_t funnelRight(")
    assert "__funnelshift_r(lo, hi, shift)" in funnel
    assert "((static_cast<uint64_t>(hi) << 32) | lo) >> shift" in funnel
    index = body(cu, "int32_t groupIndex(")
    assert re.search(r"funnelRight\(lo, hi, offset & 31\) & \(\(1u << c\.bits\) - 1u\)", index)
    assert "const uint32_t offset = g.shift + static_cast<uint32_t>(j * c.bits);" in index
    # The table entry of index theta + U * ring, and the table's size.
    table = body(cu, "HyperLinearStatus hyperlinearPairTable(")
    assert "table + 2 * (static_cast<int64_t>(ring) * p.codebook_size + theta)" in table
    assert constant(cuh, "kMaxRings") == str(spec.MAX_GAINS - 1)
    assert "return p.codebook_size * p.gain_count;" in body(cuh, "inline int32_t hyperlinearTableSize(")
    # The plugin takes codes as that int32 stream and checks its length.
    cpp = source("hyperlinear_plugin.cpp")
    assert re.search(r"case kCodes: return desc\.type == DataType::kINT32;", cpp)
    assert re.search(r'isVector\(codes, hyperlinearWordCount\(mParams\), "codes"', cpp)
    assert re.search(r"params\.index_bits < 1 \|\| params\.index_bits > kMaxIndexBits", cpp)


def test_the_harness_mirrors_the_kernel_structs_and_codes():
    """ctypes reads HyperLinearParams field by field, and the harness names statuses and paths."""
    cuh, cu = source("hyperlinear_kernel.cuh"), source("hyperlinear_kernel.cu")
    (fields,) = re.findall(r"struct HyperLinearParams {([^}]*)};", cuh)
    declared = re.findall(r"(\w+) (\w+)(?:\[([^\]]+)\])?;", fields)
    assert [name for _, name, _ in declared] == [name for name, _ in harness.Params._fields_]
    assert [kind for kind, _, _ in declared] == ["int32_t"] * 5 + ["float"] * 3 + ["int32_t"]
    assert dict((name, size) for _, name, size in declared if size) == {"center": "2", "gains": "kMaxRings + 1"}
    assert harness.Params.gains.size == 4 * spec.MAX_GAINS
    (statuses,) = re.findall(r"enum HyperLinearStatus : int32_t {([^}]*)}", cuh)
    assert {int(v) for v in re.findall(r"= (\d+)", statuses)} == set(harness.STATUS_NAMES)
    assert int(constant(cu, "kPathCudaCores")) == harness.PATH_CUDA_CORES
    assert int(constant(cu, "kPathGemm")) == harness.PATH_GEMM
    tiles = body(cu, "cudaError_t launchF16(")
    cases = re.findall(r"case (\d+): return launchTensorCores", tiles)
    assert tuple(int(t) for t in cases) == harness.TENSOR_CORE_TILES


def test_the_codec_writes_indices_the_layout_holds():
    assert max(codec.CODEBOOK_SIZES) * (codec.MAX_RINGS + 1) <= spec.INDEX_BOUND <= 1 << spec.MAX_INDEX_BITS
    assert codec.MAX_RINGS + 1 == spec.MAX_GAINS
    # The widest index the codec writes fits the kernel's and the reference's bound.
    assert (spec.INDEX_BOUND - 1).bit_length() <= spec.MAX_INDEX_BITS
    assert spec.WORD_BITS == 32 and spec.CODES_DTYPE == "int32"


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
