"""The HyperLinear plugin library as TensorRT's IPluginRegistry::loadLibrary reaches it, without TensorRT.

loadLibrary dlopens the library and calls its exported C functions getCreators and
setLoggerFinder; nothing else of the library is TensorRT's business. So the plugin is built
here into a shared library against the public 10.3 and 11.1 headers, with the kernel
replaced by a stub that records its calls and returns a chosen CUDA status (the kernel has
its own tests in test_hyperlinear_kernel.py), and a small C++ program drives it through
those two symbols exactly as loadLibrary would: creator identity and fields (the spec's), the creator's refusals,
a plugin recreated from its serialised fields, and enqueue's row handling and error
reports through the ILoggerFinder's logger. Needs nvcc and the headers (see
tests/test_hyperlinear_kernel.py, test_plugin_compiles_against_tensorrt_headers).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from plugins.hyperlinear import spec

PLUGIN_SOURCE = Path(__file__).resolve().parent.parent / "plugins" / "hyperlinear" / "hyperlinear_plugin.cpp"
TRT_HEADERS = Path(os.environ.get("SAMEDGE_TRT_HEADERS", "/tmp/trt-headers"))  # as test_hyperlinear_kernel.py

# Stands in for hyperlinear_kernel.cu inside the library.
STUB_KERNEL = r"""
#include "hyperlinear_kernel.cuh"

namespace {
int gCalls = 0;
int gLastRows = -1;
cudaError_t gStatus = cudaSuccess;

cudaError_t record(int32_t m) {
    ++gCalls;
    gLastRows = m;
    return gStatus;
}
}  // namespace

#define STUB_EXPORT extern "C" __attribute__((visibility("default")))
STUB_EXPORT void stubSetStatus(int status) { gStatus = static_cast<cudaError_t>(status); }
STUB_EXPORT int stubCalls() { return gCalls; }
STUB_EXPORT int stubLastRows() { return gLastRows; }

namespace samedge {
cudaError_t hyperlinearForwardF32(const float*, const int32_t*, const float*, const float*, float*, int32_t m,
                                  const HyperLinearParams&, cudaStream_t) { return record(m); }
cudaError_t hyperlinearForwardF16(const __half*, const int32_t*, const float*, const float*, __half*, int32_t m,
                                  const HyperLinearParams&, cudaStream_t) { return record(m); }
}  // namespace samedge
"""

DRIVER = r"""
#include <NvInfer.h>
#include <cuda_runtime.h>
#include <dlfcn.h>

#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <string>
#include <vector>

using namespace nvinfer1;

int failures = 0;
#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            std::printf("FAILED line %d: %s\n", __LINE__, #cond);            \
            ++failures;                                                      \
        }                                                                    \
    } while (0)

struct CapturingLogger : ILogger {
    Severity severity = Severity::kVERBOSE;
    std::string message;
    void log(Severity s, AsciiChar const* m) noexcept override {
        severity = s;
        message = m;
    }
};

struct Finder : ILoggerFinder {
    ILogger* logger = nullptr;
    ILogger* findLogger() noexcept override { return logger; }
};

// The fields the ONNX parser passes from a HyperLinear node's attributes.
struct Layer {
    int32_t inFeatures = 20, outFeatures = 40, codebookSize = 9, latticeSide = 3;
    float side = 2.0f;
    float center[2] = {0.0f, 0.0f};
    float gains[2] = {1.0f, 0.5f};
    std::vector<PluginField> fields;
    PluginFieldCollection collection{};

    PluginFieldCollection const* get() {
        fields = {PluginField("in_features", &inFeatures, PluginFieldType::kINT32, 1),
                  PluginField("out_features", &outFeatures, PluginFieldType::kINT32, 1),
                  PluginField("codebook_size", &codebookSize, PluginFieldType::kINT32, 1),
                  PluginField("lattice_side", &latticeSide, PluginFieldType::kINT32, 1),
                  PluginField("side", &side, PluginFieldType::kFLOAT32, 1),
                  PluginField("center", center, PluginFieldType::kFLOAT32, 2),
                  PluginField("gains", gains, PluginFieldType::kFLOAT32, 2)};
        collection.nbFields = static_cast<int32_t>(fields.size());
        collection.fields = fields.data();
        return &collection;
    }
};

int32_t enqueue(IPluginV3OneRuntime* runtime, DataType type, std::initializer_list<int64_t> dims) {
    PluginTensorDesc in[4]{};
    in[0].dims.nbDims = static_cast<int32_t>(dims.size());
    int32_t i = 0;
    for (int64_t d : dims) in[0].dims.d[i++] = d;
    in[0].type = type;
    in[0].format = TensorFormat::kLINEAR;
    PluginTensorDesc out{};
    void const* inputs[4] = {nullptr, nullptr, nullptr, nullptr};
    void* outputs[1] = {nullptr};
    return runtime->enqueue(in, &out, inputs, outputs, nullptr, nullptr);
}

bool has(std::string const& text, char const* part) { return text.find(part) != std::string::npos; }

int main(int argc, char** argv) {
    if (argc != 2) return 2;
    void* library = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (library == nullptr) {
        std::printf("dlopen: %s\n", dlerror());
        return 2;
    }
    auto getCreators = reinterpret_cast<IPluginCreatorInterface* const* (*)(int32_t&)>(dlsym(library, "getCreators"));
    auto setLoggerFinder = reinterpret_cast<void (*)(ILoggerFinder*)>(dlsym(library, "setLoggerFinder"));
    auto stubSetStatus = reinterpret_cast<void (*)(int)>(dlsym(library, "stubSetStatus"));
    auto stubCalls = reinterpret_cast<int (*)()>(dlsym(library, "stubCalls"));
    auto stubLastRows = reinterpret_cast<int (*)()>(dlsym(library, "stubLastRows"));
    if (!getCreators || !setLoggerFinder || !stubSetStatus || !stubCalls || !stubLastRows) {
        std::printf("missing symbol\n");
        return 2;
    }

    int32_t count = 0;
    IPluginCreatorInterface* const* creators = getCreators(count);
    CHECK(count == 1);
    CHECK(std::strcmp(creators[0]->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") == 0);
    auto* creator = static_cast<IPluginCreatorV3One*>(creators[0]);
    CHECK(std::strcmp(creator->getPluginName(), "@PLUGIN_NAME@") == 0);
    CHECK(std::strcmp(creator->getPluginVersion(), "@PLUGIN_VERSION@") == 0);
    CHECK(std::strcmp(creator->getPluginNamespace(), "@PLUGIN_NAMESPACE@") == 0);
    std::vector<std::string> const fieldNames = {@FIELD_NAMES@};
    PluginFieldCollection const* advertised = creator->getFieldNames();
    CHECK(advertised->nbFields == static_cast<int32_t>(fieldNames.size()));
    for (int32_t i = 0; i < advertised->nbFields && i < static_cast<int32_t>(fieldNames.size()); ++i)
        CHECK(fieldNames[i] == advertised->fields[i].name);

    // Before setLoggerFinder: the refusal goes to stderr.
    Layer noCodebook;
    noCodebook.codebookSize = 0;
    CHECK(creator->createPlugin("layer", noCodebook.get(), TensorRTPhase::kBUILD) == nullptr);

    CapturingLogger logger;
    Finder finder;
    finder.logger = &logger;
    setLoggerFinder(&finder);
    Layer noLattice;
    noLattice.latticeSide = -1;
    CHECK(creator->createPlugin("layer", noLattice.get(), TensorRTPhase::kBUILD) == nullptr);
    CHECK(logger.severity == ILogger::Severity::kERROR && has(logger.message, "lattice_side -1"));
    Layer noGains;
    noGains.get();
    noGains.fields.pop_back();  // gains, the last field
    noGains.collection.nbFields -= 1;
    CHECK(creator->createPlugin("layer", &noGains.collection, TensorRTPhase::kBUILD) == nullptr);
    CHECK(has(logger.message, "gains (1 to 4)"));

    Layer layer;
    IPluginV3* plugin = creator->createPlugin("layer", layer.get(), TensorRTPhase::kBUILD);
    CHECK(plugin != nullptr);
    if (plugin == nullptr) return 1;
    auto* runtime = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    // A plan stores getFieldsToSerialize; deserialising gives them back to createPlugin.
    CHECK(creator->createPlugin("layer", runtime->getFieldsToSerialize(), TensorRTPhase::kRUNTIME) != nullptr);

    logger.message.clear();
    CHECK(enqueue(runtime, DataType::kHALF, {0, 64, 20}) == 0);
    CHECK(stubCalls() == 0 && logger.message.empty());

    CHECK(enqueue(runtime, DataType::kHALF, {65536, 65536, 20}) == -1);
    CHECK(stubCalls() == 0 && has(logger.message, "4294967296 rows"));

    stubSetStatus(cudaErrorNoKernelImageForDevice);
    CHECK(enqueue(runtime, DataType::kHALF, {2, 3, 20}) == -1);
    CHECK(stubCalls() == 1 && stubLastRows() == 6);
    CHECK(logger.severity == ILogger::Severity::kERROR);
    CHECK(has(logger.message, "no kernel image is available") && has(logger.message, "another GPU architecture"));
    CHECK(has(logger.message, "6 x 20 -> 40") && has(logger.message, "compute capability"));

    stubSetStatus(cudaErrorInvalidValue);
    CHECK(enqueue(runtime, DataType::kFLOAT, {5, 20}) == -1);
    CHECK(has(logger.message, "cudaErrorInvalidValue") && !has(logger.message, "another GPU architecture"));

    stubSetStatus(cudaSuccess);
    logger.message.clear();
    CHECK(enqueue(runtime, DataType::kFLOAT, {7, 20}) == 0);
    CHECK(stubCalls() == 3 && stubLastRows() == 7 && logger.message.empty());

    std::printf("%d failures\n", failures);
    return failures == 0 ? 0 : 1;
}
"""


def driver_source() -> str:
    """DRIVER expecting the creator identity and fields of the spec."""
    identity = {"@PLUGIN_NAME@": spec.PLUGIN_NAME, "@PLUGIN_VERSION@": spec.PLUGIN_VERSION,
                "@PLUGIN_NAMESPACE@": spec.PLUGIN_NAMESPACE,
                "@FIELD_NAMES@": ", ".join(f'"{name}"' for name, _ in spec.PLUGIN_FIELDS)}
    text = DRIVER
    for placeholder, value in identity.items():
        text = text.replace(placeholder, value)
    return text


def _run(command: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module", params=["10.3", "11.1"])
def built(request, tmp_path_factory):
    """(include dir, plugin library, driver) for one TensorRT header version."""
    include = TRT_HEADERS / request.param / "include"
    nvcc = shutil.which("nvcc")
    if nvcc is None or shutil.which("nm") is None:
        pytest.skip("needs nvcc and nm")
    if not (include / "NvInfer.h").is_file():
        pytest.skip(f"TensorRT {request.param} headers not at {include}; see test_plugin_compiles_against_tensorrt_headers")
    folder = tmp_path_factory.mktemp(f"plugin-{request.param}")
    (folder / "stub_kernel.cpp").write_text(STUB_KERNEL)
    (folder / "driver.cpp").write_text(driver_source())
    library = folder / "libsamedge_hyperlinear.so"
    # Hidden by default: the two entry points must be exported by the source itself, whatever
    # visibility a build chooses. -Werror on samedge's code only (-isystem for TensorRT's).
    _run([nvcc, "-std=c++17", "-shared", "-Xcompiler", "-fPIC,-fvisibility=hidden,-Wall,-Wextra,-Werror",
          "-isystem", str(include), f"-I{PLUGIN_SOURCE.parent}", str(PLUGIN_SOURCE), str(folder / "stub_kernel.cpp"),
          "-o", str(library)])
    driver = folder / "driver"
    _run([nvcc, "-std=c++17", "-isystem", str(include), str(folder / "driver.cpp"), "-o", str(driver), "-ldl"])
    return include, library, driver


def test_the_library_exports_the_loadlibrary_entry_points_and_no_static_registrar(built):
    _, library, _ = built
    exported = {line.split()[-1]: line.split()[-2] for line in
                _run(["nm", "-D", "--defined-only", str(library)]).stdout.splitlines()}
    assert exported.get("getCreators") == "T" and exported.get("setLoggerFinder") == "T"
    # REGISTER_TENSORRT_PLUGIN's registrar would call getPluginRegistry() when the library is opened.
    assert "getPluginRegistry" not in _run(["nm", "-D", "--undefined-only", str(library)]).stdout
    assert "PluginRegistrar" not in _run(["nm", "-C", str(library)]).stdout


def test_the_plugin_behaves_through_its_entry_points(built):
    _, library, driver = built
    result = subprocess.run([str(driver), str(library)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("0 failures")
    # Without an ILoggerFinder (a library opened some other way) the refusal reaches stderr.
    assert ("samedge HyperLinear plugin: createPlugin: in_features 20, out_features 40, codebook_size 0"
            in result.stderr)
