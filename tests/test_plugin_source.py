"""The HyperLinear plugin library as TensorRT's IPluginRegistry::loadLibrary reaches it, without TensorRT.

loadLibrary dlopens the library and calls its exported C functions getCreators and
setLoggerFinder; nothing else of the library is TensorRT's business. So the plugin is built
here into a shared library against the public 10.3 and 11.1 headers, with the kernel
replaced by a stub that records its calls and returns a chosen CUDA status (the kernel has
its own tests in test_hyperlinear_kernel.py) and keeps its "device" tables in host memory,
and a small C++ program drives it through those two symbols exactly as loadLibrary would:
creator identity and fields (the spec's), the creator's refusals, a plugin recreated from its
serialised fields, the shape checks, the workspace size, the table computed at creation and
uploaded once per instance (clones their own, freed with them), and enqueue's row handling,
workspace and error reports through the ILoggerFinder's logger. Needs nvcc and the headers
(found by harness.tensorrt_headers_root; tests/test_hyperlinear_kernel.py builds the real library).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from plugins.hyperlinear import harness, spec

PLUGIN_SOURCE = Path(__file__).resolve().parent.parent / "plugins" / "hyperlinear" / "hyperlinear_plugin.cpp"

# Stands in for hyperlinear_kernel.cu inside the library: the kernel's API, host memory only.
STUB_KERNEL = r"""
#include "hyperlinear_kernel.cuh"

#include <cstdlib>
#include <cstring>

namespace {
int gCalls = 0;
int gLastRows = -1;
cudaError_t gStatus = cudaSuccess;
int gCheck = 0;
cudaError_t gUploadStatus = cudaSuccess;
cudaError_t gGemmStatus = cudaSuccess;
int gTablesComputed = 0, gUploads = 0, gLiveTables = 0, gLiveGemms = 0;
const float* gLastTable = nullptr;
int gLastTableSize = -1;
const void* gLastGemm = nullptr;
const void* gLastWorkspace = nullptr;
size_t gLastWorkspaceBytes = 0;

cudaError_t record(int32_t m, const float* table, int32_t size, const void* gemm, const void* workspace, size_t bytes) {
    ++gCalls;
    gLastRows = m;
    gLastTable = table;
    gLastTableSize = size;
    gLastGemm = gemm;
    gLastWorkspace = workspace;
    gLastWorkspaceBytes = bytes;
    return gStatus;
}
}  // namespace

#define STUB_EXPORT extern "C" __attribute__((visibility("default")))
STUB_EXPORT void stubSetStatus(int status) { gStatus = static_cast<cudaError_t>(status); }
STUB_EXPORT void stubSetCheck(int status) { gCheck = status; }
STUB_EXPORT void stubSetUploadStatus(int status) { gUploadStatus = static_cast<cudaError_t>(status); }
STUB_EXPORT void stubSetGemmStatus(int status) { gGemmStatus = static_cast<cudaError_t>(status); }
STUB_EXPORT int stubCalls() { return gCalls; }
STUB_EXPORT int stubLastRows() { return gLastRows; }
STUB_EXPORT int stubTablesComputed() { return gTablesComputed; }
STUB_EXPORT int stubUploads() { return gUploads; }
STUB_EXPORT int stubLiveTables() { return gLiveTables; }
STUB_EXPORT int stubLiveGemms() { return gLiveGemms; }
STUB_EXPORT const float* stubLastTable() { return gLastTable; }
STUB_EXPORT int stubLastTableSize() { return gLastTableSize; }
STUB_EXPORT const void* stubLastGemm() { return gLastGemm; }
STUB_EXPORT const void* stubLastWorkspace() { return gLastWorkspace; }
STUB_EXPORT size_t stubLastWorkspaceBytes() { return gLastWorkspaceBytes; }

namespace samedge {
struct HyperLinearGemm {
    int unused = 0;
};

HyperLinearStatus hyperlinearCheck(int32_t, const HyperLinearParams&) { return static_cast<HyperLinearStatus>(gCheck); }
const char* hyperlinearStatusName(int32_t) { return "the stub's rule is broken"; }
HyperLinearStatus hyperlinearPairTable(const HyperLinearParams& p, float* table) {
    ++gTablesComputed;
    for (int32_t i = 0; i < 2 * hyperlinearTableSize(p); ++i) table[i] = static_cast<float>(i);
    return kHyperLinearOk;
}
cudaError_t hyperlinearTableUpload(const float* host, int32_t size, HyperLinearDeviceTable* table) {
    if (gUploadStatus != cudaSuccess) return gUploadStatus;
    hyperlinearTableFree(table);
    table->pairs = static_cast<float*>(std::malloc(sizeof(float) * 2 * size));
    std::memcpy(table->pairs, host, sizeof(float) * 2 * size);
    table->size = size;
    ++gUploads;
    ++gLiveTables;
    return cudaSuccess;
}
void hyperlinearTableFree(HyperLinearDeviceTable* table) {
    if (table == nullptr || table->pairs == nullptr) return;
    std::free(table->pairs);
    table->pairs = nullptr;
    table->size = 0;
    --gLiveTables;
}
cudaError_t hyperlinearGemmCreate(HyperLinearGemm** gemm) {
    *gemm = nullptr;
    if (gGemmStatus != cudaSuccess) return gGemmStatus;
    *gemm = new HyperLinearGemm();
    ++gLiveGemms;
    return cudaSuccess;
}
void hyperlinearGemmDestroy(HyperLinearGemm* gemm) {
    if (gemm == nullptr) return;
    delete gemm;
    --gLiveGemms;
}
const char* hyperlinearGemmLastStatus(const HyperLinearGemm*) { return "CUBLAS_STATUS_STUB"; }
cudaError_t hyperlinearForwardF32(const float*, const int32_t*, const float* table, int32_t size, const float*,
                                  const float*, float*, int32_t m, const HyperLinearParams&, cudaStream_t) {
    return record(m, table, size, nullptr, nullptr, 0);
}
cudaError_t hyperlinearForwardF16(const __half*, const int32_t*, const float* table, int32_t size, const float*,
                                  const float*, __half*, int32_t m, const HyperLinearParams&, HyperLinearGemm* gemm,
                                  void* workspace, size_t bytes, cudaStream_t) {
    return record(m, table, size, gemm, workspace, bytes);
}
}  // namespace samedge
"""

DRIVER = r"""
#include "hyperlinear_kernel.cuh"

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
    int32_t inFeatures = 20, outFeatures = 40, codebookSize = 9, latticeSide = 3, indexBits = 5;
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
                  PluginField("index_bits", &indexBits, PluginFieldType::kINT32, 1),
                  PluginField("side", &side, PluginFieldType::kFLOAT32, 1),
                  PluginField("center", center, PluginFieldType::kFLOAT32, 2),
                  PluginField("gains", gains, PluginFieldType::kFLOAT32, 2)};
        collection.nbFields = static_cast<int32_t>(fields.size());
        collection.fields = fields.data();
        return &collection;
    }
};
// 40 rows x 10 pairs of 5 bits = 2000 bits: 63 words.
constexpr int64_t kWords = 63;
constexpr int32_t kTablePairs = 18;

Dims dims(std::initializer_list<int64_t> values) {
    Dims out{};
    out.nbDims = static_cast<int32_t>(values.size());
    int32_t i = 0;
    for (int64_t v : values) out.d[i++] = v;
    return out;
}

// X, codes, row_scale, bias as a built engine describes them.
void describe(PluginTensorDesc (&in)[4], DataType type, Dims x, Dims codes = dims({kWords}), Dims rowScale = dims({40}),
              Dims bias = dims({40})) {
    Dims const all[4] = {x, codes, rowScale, bias};
    DataType const types[4] = {type, DataType::kINT32, DataType::kFLOAT, DataType::kFLOAT};
    for (int i = 0; i < 4; ++i) {
        in[i] = PluginTensorDesc{};
        in[i].dims = all[i];
        in[i].type = types[i];
        in[i].format = TensorFormat::kLINEAR;
    }
}

int32_t enqueue(IPluginV3OneRuntime* runtime, DataType type, std::initializer_list<int64_t> x,
                void* workspace = nullptr) {
    PluginTensorDesc in[4];
    describe(in, type, dims(x));
    PluginTensorDesc out{};
    void const* inputs[4] = {nullptr, nullptr, nullptr, nullptr};
    void* outputs[1] = {nullptr};
    return runtime->enqueue(in, &out, inputs, outputs, workspace, nullptr);
}

int32_t shapeChange(IPluginV3OneRuntime* runtime, DataType type, Dims x, Dims codes = dims({kWords})) {
    PluginTensorDesc in[4];
    describe(in, type, x, codes);
    PluginTensorDesc out{};
    return runtime->onShapeChange(in, 4, &out, 1);
}

// configurePlugin / getWorkspaceSize's view: -1 where a dimension is dynamic, max its upper bound.
int32_t configure(IPluginV3OneBuild* build, DataType type, Dims codes, Dims rowScale = dims({40})) {
    PluginTensorDesc desc[4];
    describe(desc, type, dims({-1, 20}), codes, rowScale);
    DynamicPluginTensorDesc in[4]{};
    for (int i = 0; i < 4; ++i) in[i].desc = desc[i];
    DynamicPluginTensorDesc out{};
    return build->configurePlugin(in, 4, &out, 1);
}

size_t workspaceSize(IPluginV3OneBuild* build, DataType type, int64_t maxRows) {
    DynamicPluginTensorDesc in[4]{};
    PluginTensorDesc desc[4];
    describe(desc, type, dims({-1, 20}));
    for (int i = 0; i < 4; ++i) {
        in[i].desc = desc[i];
        in[i].min = in[i].opt = in[i].max = desc[i].dims;
    }
    in[0].min = dims({1, 20});
    in[0].max = dims({maxRows, 20});
    DynamicPluginTensorDesc out{};
    return build->getWorkspaceSize(in, 4, &out, 1);
}

bool has(std::string const& text, char const* part) { return text.find(part) != std::string::npos; }

bool serialises(PluginFieldCollection const* fields, char const* name, int32_t value) {
    for (int32_t i = 0; i < fields->nbFields; ++i)
        if (std::strcmp(fields->fields[i].name, name) == 0)
            return fields->fields[i].type == PluginFieldType::kINT32 &&
                   *static_cast<int32_t const*>(fields->fields[i].data) == value;
    return false;
}

template <typename T>
T symbol(void* library, char const* name) {
    return reinterpret_cast<T>(dlsym(library, name));
}

int main(int argc, char** argv) {
    if (argc != 2) return 2;
    void* library = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (library == nullptr) {
        std::printf("dlopen: %s\n", dlerror());
        return 2;
    }
    auto getCreators = symbol<IPluginCreatorInterface* const* (*)(int32_t&)>(library, "getCreators");
    auto setLoggerFinder = symbol<void (*)(ILoggerFinder*)>(library, "setLoggerFinder");
    auto stubSetStatus = symbol<void (*)(int)>(library, "stubSetStatus");
    auto stubSetCheck = symbol<void (*)(int)>(library, "stubSetCheck");
    auto stubSetUploadStatus = symbol<void (*)(int)>(library, "stubSetUploadStatus");
    auto stubSetGemmStatus = symbol<void (*)(int)>(library, "stubSetGemmStatus");
    auto stubCalls = symbol<int (*)()>(library, "stubCalls");
    auto stubLastRows = symbol<int (*)()>(library, "stubLastRows");
    auto stubTablesComputed = symbol<int (*)()>(library, "stubTablesComputed");
    auto stubUploads = symbol<int (*)()>(library, "stubUploads");
    auto stubLiveTables = symbol<int (*)()>(library, "stubLiveTables");
    auto stubLiveGemms = symbol<int (*)()>(library, "stubLiveGemms");
    auto stubLastTable = symbol<float const* (*)()>(library, "stubLastTable");
    auto stubLastTableSize = symbol<int (*)()>(library, "stubLastTableSize");
    auto stubLastGemm = symbol<void const* (*)()>(library, "stubLastGemm");
    auto stubLastWorkspace = symbol<void const* (*)()>(library, "stubLastWorkspace");
    auto stubLastWorkspaceBytes = symbol<size_t (*)()>(library, "stubLastWorkspaceBytes");
    if (!getCreators || !setLoggerFinder || !stubSetStatus || !stubSetCheck || !stubSetUploadStatus ||
        !stubSetGemmStatus || !stubCalls || !stubLastRows || !stubTablesComputed || !stubUploads ||
        !stubLiveTables || !stubLiveGemms || !stubLastTable || !stubLastTableSize || !stubLastGemm ||
        !stubLastWorkspace || !stubLastWorkspaceBytes) {
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
    CHECK(has(logger.message, "gains (1 to 4)") && has(logger.message, "index_bits (int32)"));
    Layer noIndexBits;  // an ONNX file of the earlier code layout
    noIndexBits.get();
    noIndexBits.fields.erase(noIndexBits.fields.begin() + 4);
    noIndexBits.collection.fields = noIndexBits.fields.data();
    noIndexBits.collection.nbFields -= 1;
    logger.message.clear();
    CHECK(creator->createPlugin("layer", &noIndexBits.collection, TensorRTPhase::kBUILD) == nullptr);
    CHECK(has(logger.message, "index_bits (int32)"));
    for (int32_t bits : {0, 17, -3}) {
        Layer badBits;
        badBits.indexBits = bits;
        CHECK(creator->createPlugin("layer", badBits.get(), TensorRTPhase::kBUILD) == nullptr);
        CHECK(has(logger.message, ("index_bits " + std::to_string(bits) + " must be in 1..16").c_str()));
    }
    for (int32_t bits : {1, 16}) {
        Layer edge;
        edge.indexBits = bits;
        IPluginV3* accepted = creator->createPlugin("layer", edge.get(), TensorRTPhase::kBUILD);
        CHECK(accepted != nullptr);
        delete accepted;
    }
    // The kernel's own rules, named by it.
    stubSetCheck(samedge::kHyperLinearBadLatticeSide);
    Layer refused;
    CHECK(creator->createPlugin("layer", refused.get(), TensorRTPhase::kBUILD) == nullptr);
    CHECK(has(logger.message, "the stub's rule is broken") && has(logger.message, "index_bits 5"));
    stubSetCheck(samedge::kHyperLinearOk);

    // The table is computed when the plugin is made, uploaded only when it is about to run.
    int const computed = stubTablesComputed();
    Layer layer;
    IPluginV3* plugin = creator->createPlugin("layer", layer.get(), TensorRTPhase::kBUILD);
    CHECK(plugin != nullptr);
    if (plugin == nullptr) return 1;
    CHECK(stubTablesComputed() == computed + 1 && stubLiveTables() == 0 && stubUploads() == 0);
    auto* build = static_cast<IPluginV3OneBuild*>(plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
    auto* runtime = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    // A plan stores getFieldsToSerialize; deserialising gives them back to createPlugin.
    PluginFieldCollection const* serialised = runtime->getFieldsToSerialize();
    CHECK(serialises(serialised, "index_bits", 5) && serialises(serialised, "lattice_side", 3));
    IPluginV3* recreated = creator->createPlugin("layer", serialised, TensorRTPhase::kRUNTIME);
    CHECK(recreated != nullptr);
    delete recreated;

    // Shapes: codes is the 1-D stream of ceil(40 * 10 * 5 / 32) words.
    CHECK(configure(build, DataType::kHALF, dims({kWords})) == 0);
    CHECK(configure(build, DataType::kHALF, dims({-1})) == 0);
    logger.message.clear();
    CHECK(configure(build, DataType::kHALF, dims({kWords + 1})) == -1);
    CHECK(has(logger.message, "configurePlugin: codes must have shape [63]") && has(logger.message, "has [64]") &&
          has(logger.message, "index_bits 5 bits"));
    CHECK(configure(build, DataType::kFLOAT, dims({40, 2})) == -1);  // the earlier [N, words] layout
    CHECK(has(logger.message, "has [40, 2]"));
    CHECK(configure(build, DataType::kFLOAT, dims({kWords}), dims({39})) == -1);
    CHECK(has(logger.message, "row_scale must have shape [40]"));
    CHECK(shapeChange(runtime, DataType::kFLOAT, dims({3, 20}), dims({kWords - 1})) == -1);
    CHECK(has(logger.message, "onShapeChange: codes must have shape [63]"));
    CHECK(shapeChange(runtime, DataType::kFLOAT, dims({3, 21})) == -1);
    CHECK(has(logger.message, "last dimension is 21"));
    CHECK(stubLiveTables() == 0);

    // Workspace: the large-M path's, only for float16 profiles that reach its row count.
    samedge::HyperLinearParams params{};
    params.in_features = 20;
    params.out_features = 40;
    size_t const large = samedge::hyperlinearWorkspaceSize(params, samedge::kGemmMinRows);
    CHECK(large >= 40 * 24 * 2 + samedge::kGemmScratchBytes);
    CHECK(workspaceSize(build, DataType::kHALF, samedge::kGemmMinRows - 1) == 0);
    CHECK(workspaceSize(build, DataType::kHALF, samedge::kGemmMinRows) == large);
    CHECK(workspaceSize(build, DataType::kHALF, 1 << 20) == large);
    CHECK(workspaceSize(build, DataType::kFLOAT, 1 << 20) == 0);

    // The first shape uploads the table, later ones reuse it; float16 with many rows makes the gemm.
    CHECK(shapeChange(runtime, DataType::kFLOAT, dims({3, 20})) == 0);
    CHECK(stubLiveTables() == 1 && stubUploads() == 1 && stubLiveGemms() == 0);
    CHECK(shapeChange(runtime, DataType::kHALF, dims({2, samedge::kGemmMinRows, 20})) == 0);
    CHECK(stubUploads() == 1 && stubLiveGemms() == 1);

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
    CHECK(!has(logger.message, "cuBLASLt"));

    stubSetStatus(cudaErrorInvalidValue);
    CHECK(enqueue(runtime, DataType::kFLOAT, {5, 20}) == -1);
    CHECK(has(logger.message, "cudaErrorInvalidValue") && !has(logger.message, "another GPU architecture"));
    char workspace[1];
    CHECK(enqueue(runtime, DataType::kHALF, {samedge::kGemmMinRows, 20}, workspace) == -1);
    CHECK(has(logger.message, "cuBLASLt: CUBLAS_STATUS_STUB"));

    stubSetStatus(cudaSuccess);
    logger.message.clear();
    CHECK(enqueue(runtime, DataType::kFLOAT, {7, 20}) == 0);
    CHECK(stubCalls() == 4 && stubLastRows() == 7 && logger.message.empty());
    // The plugin's own table, with its size; no workspace for float32.
    CHECK(stubLastTable() != nullptr && stubLastTableSize() == kTablePairs);
    CHECK(stubLastTable()[2 * kTablePairs - 1] == 2 * kTablePairs - 1);  // the stub's table: 0, 1, 2, ...
    CHECK(stubLastWorkspaceBytes() == 0);
    // Float16: below the threshold nothing of the workspace is used, at it all that was asked for.
    CHECK(enqueue(runtime, DataType::kHALF, {samedge::kGemmMinRows - 1, 20}, workspace) == 0);
    CHECK(stubLastWorkspaceBytes() == 0 && stubLastGemm() != nullptr);
    CHECK(enqueue(runtime, DataType::kHALF, {1, samedge::kGemmMinRows, 20}, workspace) == 0);
    CHECK(stubLastWorkspace() == workspace && stubLastWorkspaceBytes() == large && stubLastGemm() != nullptr);
    CHECK(stubUploads() == 1);

    // A clone has its own table, uploaded when it is attached; each is freed with its plugin.
    int const computedBeforeClone = stubTablesComputed();
    IPluginV3* cloned = plugin->clone();  // the host table copied, not computed again
    CHECK(cloned != nullptr && stubLiveTables() == 1 && stubTablesComputed() == computedBeforeClone);
    IPluginV3* attached = runtime->attachToContext(nullptr);
    CHECK(attached != nullptr && stubLiveTables() == 2 && stubUploads() == 2);
    auto* attachedRuntime =
        static_cast<IPluginV3OneRuntime*>(attached->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    CHECK(enqueue(attachedRuntime, DataType::kFLOAT, {4, 20}) == 0);
    CHECK(stubLastTable() != nullptr && stubUploads() == 2);
    delete attached;
    delete cloned;
    CHECK(stubLiveTables() == 1);
    delete plugin;
    CHECK(stubLiveTables() == 0 && stubLiveGemms() == 0);

    // An upload that fails: named, the launch not made, attachToContext refused.
    stubSetUploadStatus(cudaErrorMemoryAllocation);
    IPluginV3* starved = creator->createPlugin("layer", layer.get(), TensorRTPhase::kRUNTIME);
    auto* starvedRuntime =
        static_cast<IPluginV3OneRuntime*>(starved->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    int const calls = stubCalls();
    CHECK(enqueue(starvedRuntime, DataType::kFLOAT, {4, 20}) == -1);
    CHECK(stubCalls() == calls && has(logger.message, "uploading the 18-pair table failed") &&
          has(logger.message, "cudaErrorMemoryAllocation"));
    CHECK(starvedRuntime->attachToContext(nullptr) == nullptr);
    stubSetUploadStatus(cudaSuccess);
    // cuBLASLt that cannot start: a warning, and float16 calls go on without a gemm (the fused kernel).
    stubSetGemmStatus(cudaErrorNotSupported);
    CHECK(shapeChange(starvedRuntime, DataType::kHALF, dims({samedge::kGemmMinRows, 20})) == 0);
    CHECK(logger.severity == ILogger::Severity::kWARNING && has(logger.message, "cuBLASLt could not be initialised"));
    CHECK(enqueue(starvedRuntime, DataType::kHALF, {samedge::kGemmMinRows, 20}, workspace) == 0);
    CHECK(stubLastGemm() == nullptr && stubLiveGemms() == 0);
    stubSetGemmStatus(cudaSuccess);
    delete starved;
    CHECK(stubLiveTables() == 0);

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


@pytest.fixture(scope="module", params=harness.TENSORRT_HEADER_VERSIONS)
def built(request, tmp_path_factory):
    """(include dir, plugin library, driver) for one TensorRT header version."""
    include = harness.tensorrt_headers_root() / request.param / "include"
    nvcc = shutil.which("nvcc")
    if nvcc is None or shutil.which("nm") is None:
        pytest.skip("needs nvcc and nm")
    if not (include / "NvInfer.h").is_file():  # where they are, a plugin that does not build fails
        pytest.skip(f"TensorRT {request.param} headers not at {include} (shared/trt-headers beside the "
                    "repository, or set SAMEDGE_TRT_HEADERS)")
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
    _run([nvcc, "-std=c++17", "-isystem", str(include), f"-I{PLUGIN_SOURCE.parent}", str(folder / "driver.cpp"),
          "-o", str(driver), "-ldl"])
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
