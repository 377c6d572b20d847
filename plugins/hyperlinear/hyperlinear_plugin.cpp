// TensorRT plugin "HyperLinear" (namespace "samedge", version "1"): the samedge::HyperLinear
// ONNX node (docs/formats.md) on the fused kernel of hyperlinear_kernel.cu. The names, inputs
// and fields below are plugins/hyperlinear/spec.py's; tests/test_hyperlinear_spec.py compares them.
//
// IPluginV3 with the IPluginV3OneCore/Build/Runtime capabilities and an IPluginCreatorV3One,
// written against the public headers of TensorRT 10.3 (JetPack 6) and 11.x, whose V3 classes
// are the same. Inputs: X [..., K] float32 or float16, codes int32 [N, W], row_scale float32
// [N], bias float32 [N]; output [..., N] in X's type. Fields mirror the node's attributes.
//
// Registered only through the exported getCreators / setLoggerFinder, which
// IPluginRegistry::loadLibrary calls (trtexec --dynamicPlugins, samedge's Python build and
// backend, lean runtimes, plans that carry their plugins). There is no REGISTER_TENSORRT_PLUGIN:
// its static registrar registers under namespace "" the moment the library is opened, and
// loadLibrary then fails because the creator is already registered. loadLibrary registers the
// creator under the namespace it reports, "samedge", where the ONNX parser looks it up.

#include "hyperlinear_kernel.cuh"

#include <NvInfer.h>

#include <algorithm>
#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <limits>
#include <vector>

using namespace nvinfer1;

namespace samedge {
namespace {

constexpr char const* kPluginName = "HyperLinear";
constexpr char const* kPluginVersion = "1";
constexpr char const* kPluginNamespace = "samedge";
// The node's inputs by position; code indexes inputs by these names alone, so the order lives here.
enum Input : int32_t { kX, kCodes, kRowScale, kBias, kNbInputs };

// Set by loadLibrary. The finder, not a logger, is kept: it hands out the logger of whichever
// builder or engine is calling, and only on that caller's thread.
std::atomic<ILoggerFinder*> gLoggerFinder{nullptr};

// To TensorRT's logger when there is one, else stderr (a library opened some other way).
// Fixed buffer: callers are noexcept and must not allocate to report a failure.
__attribute__((format(printf, 2, 3))) void report(ILogger::Severity severity, char const* format, ...) noexcept {
    char message[768];
    int const prefix = std::snprintf(message, sizeof(message), "samedge HyperLinear plugin: ");
    va_list args;
    va_start(args, format);
    std::vsnprintf(message + prefix, sizeof(message) - prefix, format, args);
    va_end(args);
    ILoggerFinder* const finder = gLoggerFinder.load();
    ILogger* const logger = finder != nullptr ? finder->findLogger() : nullptr;
    if (logger != nullptr) {
        logger->log(severity, message);
    } else {
        std::fprintf(stderr, "%s\n", message);
    }
}

// The errors CUDA gives when the library holds no code this GPU can run.
bool isArchitectureMismatch(cudaError_t status) {
    return status == cudaErrorNoKernelImageForDevice || status == cudaErrorInvalidDeviceFunction ||
           status == cudaErrorUnsupportedPtxVersion;
}

void reportLaunchFailure(cudaError_t status, int64_t rows, HyperLinearParams const& params,
                         char const* gemmStatus) noexcept {
    int device = 0;
    int major = 0;
    int minor = 0;
    bool const known = cudaGetDevice(&device) == cudaSuccess &&
                       cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess &&
                       cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) == cudaSuccess;
    char gpu[48] = "an unknown compute capability";
    if (known) std::snprintf(gpu, sizeof(gpu), "compute capability %d.%d", major, minor);
    char const* const hint = isArchitectureMismatch(status)
        ? ": the plugin library was built for another GPU architecture; rebuild it on this device "
          "(build_engines.sh) or with CMAKE_CUDA_ARCHITECTURES set to this GPU's compute capability"
        : "";
    char gemm[96] = "";
    if (gemmStatus != nullptr) std::snprintf(gemm, sizeof(gemm), " (cuBLASLt: %s)", gemmStatus);
    report(ILogger::Severity::kERROR, "kernel launch failed for %lld x %d -> %d on a GPU of %s: %s (%s)%s%s",
           static_cast<long long>(rows), params.in_features, params.out_features, gpu, cudaGetErrorName(status),
           cudaGetErrorString(status), gemm, hint);
}

int64_t rowCount(Dims const& dims) {
    int64_t rows = 1;
    for (int32_t i = 0; i + 1 < dims.nbDims; ++i) rows *= dims.d[i];
    return rows;
}

// "[a, b, ...]" (-1 for a dimension not known yet).
void formatDims(Dims const& dims, char* out, size_t size) noexcept {
    size_t used = static_cast<size_t>(std::snprintf(out, size, "["));
    for (int32_t i = 0; i < dims.nbDims && used < size; ++i)
        used += static_cast<size_t>(std::snprintf(out + used, size - used, i ? ", %lld" : "%lld",
                                                  static_cast<long long>(dims.d[i])));
    if (used < size) std::snprintf(out + used, size - used, "]");
}

// Whether `dims` is [expected] (a -1 passes: not known before the shapes are); names the input when not.
bool isVector(Dims const& dims, int64_t expected, char const* name, char const* where, char const* why) noexcept {
    if (dims.nbDims == 1 && (dims.d[0] == -1 || dims.d[0] == expected)) return true;
    char got[128];
    formatDims(dims, got, sizeof(got));
    report(ILogger::Severity::kERROR, "%s: %s must have shape [%lld] (%s); it has %s", where, name,
           static_cast<long long>(expected), why, got);
    return false;
}

// Reads one field of a collection into `out`; false when absent or of the wrong type/length.
bool readInts(PluginFieldCollection const* fc, char const* name, int32_t* out, int32_t count) {
    for (int32_t i = 0; i < fc->nbFields; ++i) {
        PluginField const& f = fc->fields[i];
        if (std::strcmp(f.name, name) == 0 && f.type == PluginFieldType::kINT32 && f.length == count) {
            std::memcpy(out, f.data, sizeof(int32_t) * count);
            return true;
        }
    }
    return false;
}

std::vector<float> readFloats(PluginFieldCollection const* fc, char const* name) {
    for (int32_t i = 0; i < fc->nbFields; ++i) {
        PluginField const& f = fc->fields[i];
        if (std::strcmp(f.name, name) == 0 && f.type == PluginFieldType::kFLOAT32) {
            auto const* data = static_cast<float const*>(f.data);
            return std::vector<float>(data, data + f.length);
        }
    }
    return {};
}

class HyperLinearPlugin : public IPluginV3, public IPluginV3OneCore, public IPluginV3OneBuild,
                          public IPluginV3OneRuntime {
public:
    // params checked by the creator; hostTable: hyperlinearPairTable's for them.
    HyperLinearPlugin(HyperLinearParams const& params, std::vector<float> hostTable)
        : mParams(params), mHostTable(std::move(hostTable)) {
        buildFields();
    }
    HyperLinearPlugin(HyperLinearPlugin const&) = delete;  // the device table is this instance's own
    HyperLinearPlugin& operator=(HyperLinearPlugin const&) = delete;
    ~HyperLinearPlugin() override {
        hyperlinearTableFree(&mDeviceTable);
        hyperlinearGemmDestroy(mGemm);
    }

    // IPluginV3
    IPluginCapability* getCapabilityInterface(PluginCapabilityType type) noexcept override {
        switch (type) {
        case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
        case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
        case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
        }
        return nullptr;
    }
    // The host table is copied, the device one not: a clone uploads its own when it first runs.
    IPluginV3* clone() noexcept override {
        try {
            return new HyperLinearPlugin(mParams, mHostTable);
        } catch (std::bad_alloc const&) {
            report(ILogger::Severity::kERROR, "clone: out of host memory");
            return nullptr;
        }
    }

    // IPluginV3OneCore
    AsciiChar const* getPluginName() const noexcept override { return kPluginName; }
    AsciiChar const* getPluginVersion() const noexcept override { return kPluginVersion; }
    AsciiChar const* getPluginNamespace() const noexcept override { return kPluginNamespace; }

    // IPluginV3OneBuild
    int32_t getNbOutputs() const noexcept override { return 1; }

    int32_t getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes,
                               int32_t nbInputs) const noexcept override {
        if (nbOutputs != 1 || nbInputs != kNbInputs) return -1;
        outputTypes[0] = inputTypes[kX];  // the output follows the activation type (strongly typed builds)
        return 0;
    }

    int32_t getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /*shapeInputs*/,
                            int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs,
                            IExprBuilder& exprBuilder) noexcept override {
        if (nbInputs != kNbInputs || nbOutputs != 1 || inputs[kX].nbDims < 1) return -1;
        outputs[0] = inputs[kX];
        outputs[0].d[inputs[kX].nbDims - 1] = exprBuilder.constant(mParams.out_features);
        return 0;
    }

    bool supportsFormatCombination(int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
                                   int32_t nbOutputs) noexcept override {
        if (nbInputs != kNbInputs || nbOutputs != 1 || pos < 0 || pos > kNbInputs) return false;
        PluginTensorDesc const& desc = inOut[pos].desc;
        if (desc.format != TensorFormat::kLINEAR) return false;
        switch (pos) {
        case kX: return desc.type == DataType::kFLOAT || desc.type == DataType::kHALF;
        case kCodes: return desc.type == DataType::kINT32;
        case kRowScale:
        case kBias: return desc.type == DataType::kFLOAT;
        default: return desc.type == inOut[kX].desc.type;  // the output
        }
    }

    int32_t configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const*,
                            int32_t nbOutputs) noexcept override {
        if (nbInputs != kNbInputs || nbOutputs != 1) return -1;
        return checkShapes(in[kX].desc.dims, in[kCodes].desc.dims, in[kRowScale].desc.dims, in[kBias].desc.dims,
                           "configurePlugin") ? 0 : -1;
    }

    // The large-M path's W, bias and cuBLASLt scratch, when the profile's largest X reaches
    // kGemmMinRows rows in float16; nothing otherwise (the fused kernel needs none).
    size_t getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
                            DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept override {
        if (nbInputs != kNbInputs || inputs[kX].desc.type != DataType::kHALF) return 0;
        return hyperlinearWorkspaceSize(mParams, rowCount(inputs[kX].max));
    }

    // IPluginV3OneRuntime
    int32_t onShapeChange(PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const*,
                          int32_t nbOutputs) noexcept override {
        if (nbInputs != kNbInputs || nbOutputs != 1) return -1;
        if (!checkShapes(in[kX].dims, in[kCodes].dims, in[kRowScale].dims, in[kBias].dims, "onShapeChange")) return -1;
        return prepare(wantsGemm(in[kX].type, rowCount(in[kX].dims)), "onShapeChange") ? 0 : -1;
    }

    int32_t enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const*, void const* const* inputs,
                    void* const* outputs, void* workspace, cudaStream_t stream) noexcept override {
        int64_t const rows = rowCount(inputDesc[kX].dims);
        if (rows == 0) return 0;  // an empty batch is valid, but the kernel refuses m = 0
        if (rows < 0 || rows > std::numeric_limits<int32_t>::max()) {
            report(ILogger::Severity::kERROR, "%lld rows of X: the kernel takes at most %d",
                   static_cast<long long>(rows), std::numeric_limits<int32_t>::max());
            return -1;
        }
        // Normally done by attachToContext or onShapeChange already; a failed gemm only costs speed.
        bool const gemm = wantsGemm(inputDesc[kX].type, rows);
        if (!prepare(gemm, "enqueue")) return -1;
        cudaError_t const status =
            launch(inputDesc[kX].type, inputs, outputs, static_cast<int32_t>(rows), workspace, stream);
        if (status != cudaSuccess) {
            reportLaunchFailure(status, rows, mParams, gemm && mGemm ? hyperlinearGemmLastStatus(mGemm) : nullptr);
            return -1;
        }
        return 0;
    }

    // The context's own instance, its table uploaded now (outside any stream capture).
    IPluginV3* attachToContext(IPluginResourceContext*) noexcept override {
        auto* attached = static_cast<HyperLinearPlugin*>(clone());
        if (attached != nullptr && !attached->prepare(false, "attachToContext")) {
            delete attached;
            return nullptr;
        }
        return attached;
    }

    PluginFieldCollection const* getFieldsToSerialize() noexcept override { return &mFieldCollection; }

private:
    bool wantsGemm(DataType type, int64_t rows) const noexcept {
        return type == DataType::kHALF && rows >= kGemmMinRows;
    }

    // The device table (needed for every launch) and, when asked, the cuBLASLt state. Only a
    // missing table fails: without a gemm the kernel stays on the fused path.
    bool prepare(bool gemm, char const* where) noexcept {
        if (mDeviceTable.pairs == nullptr) {
            cudaError_t const status =
                hyperlinearTableUpload(mHostTable.data(), hyperlinearTableSize(mParams), &mDeviceTable);
            if (status != cudaSuccess) {
                report(ILogger::Severity::kERROR, "%s: uploading the %d-pair table failed: %s (%s)", where,
                       hyperlinearTableSize(mParams), cudaGetErrorName(status), cudaGetErrorString(status));
                return false;
            }
        }
        if (gemm && mGemm == nullptr && !mGemmFailed) {
            cudaError_t const status = hyperlinearGemmCreate(&mGemm);
            if (status != cudaSuccess) {
                mGemmFailed = true;  // reported once; every call then takes the fused kernel
                report(ILogger::Severity::kWARNING, "%s: cuBLASLt could not be initialised (%s); the fused "
                       "kernel computes every call instead", where, cudaGetErrorName(status));
            }
        }
        return true;
    }

    // X's last dimension, codes, row_scale and bias against the fields (-1: not known yet).
    bool checkShapes(Dims const& x, Dims const& codes, Dims const& rowScale, Dims const& bias,
                     char const* where) const noexcept {
        int64_t const features = x.nbDims > 0 ? x.d[x.nbDims - 1] : 0;
        if (features != -1 && features != mParams.in_features) {
            report(ILogger::Severity::kERROR, "%s: X's last dimension is %lld; in_features is %d", where,
                   static_cast<long long>(features), mParams.in_features);
            return false;
        }
        char why[160];
        std::snprintf(why, sizeof(why), "out_features %d x ceil(in_features %d / 2) pairs of index_bits %d bits, "
                      "32 to an int32 word", mParams.out_features, mParams.in_features, mParams.index_bits);
        return isVector(codes, hyperlinearWordCount(mParams), "codes", where, why) &&
               isVector(rowScale, mParams.out_features, "row_scale", where, "one per output feature") &&
               isVector(bias, mParams.out_features, "bias", where, "one per output feature");
    }

    cudaError_t launch(DataType type, void const* const* inputs, void* const* outputs, int32_t rows, void* workspace,
                       cudaStream_t stream) const noexcept {
        auto const* codes = static_cast<int32_t const*>(inputs[kCodes]);
        auto const* rowScale = static_cast<float const*>(inputs[kRowScale]);
        auto const* bias = static_cast<float const*>(inputs[kBias]);
        if (type == DataType::kHALF) {
            // What getWorkspaceSize asked for (at least this much: the profile's largest X has >= rows rows).
            size_t const workspaceBytes = workspace != nullptr ? hyperlinearWorkspaceSize(mParams, rows) : 0;
            return hyperlinearForwardF16(static_cast<__half const*>(inputs[kX]), codes, mDeviceTable.pairs,
                                         mDeviceTable.size, rowScale, bias, static_cast<__half*>(outputs[0]), rows,
                                         mParams, mGemm, workspace, workspaceBytes, stream);
        }
        return hyperlinearForwardF32(static_cast<float const*>(inputs[kX]), codes, mDeviceTable.pairs,
                                     mDeviceTable.size, rowScale, bias, static_cast<float*>(outputs[0]), rows, mParams,
                                     stream);
    }

    // The fields point into mParams, which lives as long as this plugin.
    void buildFields() {
        mFields = {
            PluginField("in_features", &mParams.in_features, PluginFieldType::kINT32, 1),
            PluginField("out_features", &mParams.out_features, PluginFieldType::kINT32, 1),
            PluginField("codebook_size", &mParams.codebook_size, PluginFieldType::kINT32, 1),
            PluginField("lattice_side", &mParams.lattice_side, PluginFieldType::kINT32, 1),
            PluginField("index_bits", &mParams.index_bits, PluginFieldType::kINT32, 1),
            PluginField("side", &mParams.side, PluginFieldType::kFLOAT32, 1),
            PluginField("center", mParams.center, PluginFieldType::kFLOAT32, 2),
            PluginField("gains", mParams.gains, PluginFieldType::kFLOAT32, mParams.gain_count),
        };
        mFieldCollection.nbFields = static_cast<int32_t>(mFields.size());
        mFieldCollection.fields = mFields.data();
    }

    HyperLinearParams mParams;
    std::vector<float> mHostTable;  // [hyperlinearTableSize][2]
    HyperLinearDeviceTable mDeviceTable;
    HyperLinearGemm* mGemm = nullptr;
    bool mGemmFailed = false;
    std::vector<PluginField> mFields;
    PluginFieldCollection mFieldCollection{};
};

class HyperLinearCreator : public IPluginCreatorV3One {
public:
    HyperLinearCreator() {
        mFieldNames = {
            PluginField("in_features", nullptr, PluginFieldType::kINT32, 1),
            PluginField("out_features", nullptr, PluginFieldType::kINT32, 1),
            PluginField("codebook_size", nullptr, PluginFieldType::kINT32, 1),
            PluginField("lattice_side", nullptr, PluginFieldType::kINT32, 1),
            PluginField("index_bits", nullptr, PluginFieldType::kINT32, 1),
            PluginField("side", nullptr, PluginFieldType::kFLOAT32, 1),
            PluginField("center", nullptr, PluginFieldType::kFLOAT32, 2),
            PluginField("gains", nullptr, PluginFieldType::kFLOAT32, 0),
        };
        mFieldCollection.nbFields = static_cast<int32_t>(mFieldNames.size());
        mFieldCollection.fields = mFieldNames.data();
    }

    IPluginV3* createPlugin(AsciiChar const*, PluginFieldCollection const* fc, TensorRTPhase) noexcept override {
        HyperLinearParams params{};
        if (fc == nullptr || !readParams(fc, params)) {
            report(ILogger::Severity::kERROR, "createPlugin: the fields in_features, out_features, codebook_size, "
                   "lattice_side, index_bits (int32), side (1 float32), center (2) and gains (1 to %d) are required",
                   kMaxRings + 1);
            return nullptr;
        }
        // The table divides by codebook_size and lattice_side and the kernel sizes its grid from
        // the features; refused here, the bad value is named instead of failing every launch.
        if (params.in_features <= 0 || params.out_features <= 0 || params.codebook_size <= 0 ||
            params.lattice_side <= 0) {
            report(ILogger::Severity::kERROR, "createPlugin: in_features %d, out_features %d, codebook_size %d "
                   "and lattice_side %d must all be > 0", params.in_features, params.out_features,
                   params.codebook_size, params.lattice_side);
            return nullptr;
        }
        if (params.index_bits < 1 || params.index_bits > kMaxIndexBits) {
            report(ILogger::Severity::kERROR, "createPlugin: index_bits %d must be in 1..%d (the bits of each "
                   "pair index in the codes)", params.index_bits, kMaxIndexBits);
            return nullptr;
        }
        // The kernel's remaining rules (lattice_side = ceil(sqrt(codebook_size)), sizes it can address).
        if (HyperLinearStatus const status = hyperlinearCheck(0, params); status != kHyperLinearOk) {
            report(ILogger::Severity::kERROR, "createPlugin: %s (in_features %d, out_features %d, codebook_size %d, "
                   "lattice_side %d, index_bits %d, %d gains)", hyperlinearStatusName(status), params.in_features,
                   params.out_features, params.codebook_size, params.lattice_side, params.index_bits,
                   params.gain_count);
            return nullptr;
        }
        try {
            std::vector<float> table(2 * static_cast<size_t>(hyperlinearTableSize(params)));
            hyperlinearPairTable(params, table.data());  // cannot fail: hyperlinearCheck passed
            return new HyperLinearPlugin(params, std::move(table));
        } catch (std::bad_alloc const&) {
            report(ILogger::Severity::kERROR, "createPlugin: out of host memory for the %d-pair table",
                   hyperlinearTableSize(params));
            return nullptr;
        }
    }

    PluginFieldCollection const* getFieldNames() noexcept override { return &mFieldCollection; }
    AsciiChar const* getPluginName() const noexcept override { return kPluginName; }
    AsciiChar const* getPluginVersion() const noexcept override { return kPluginVersion; }
    AsciiChar const* getPluginNamespace() const noexcept override { return kPluginNamespace; }

private:
    static bool readParams(PluginFieldCollection const* fc, HyperLinearParams& params) {
        bool const ints = readInts(fc, "in_features", &params.in_features, 1) &&
                          readInts(fc, "out_features", &params.out_features, 1) &&
                          readInts(fc, "codebook_size", &params.codebook_size, 1) &&
                          readInts(fc, "lattice_side", &params.lattice_side, 1) &&
                          readInts(fc, "index_bits", &params.index_bits, 1);
        std::vector<float> const side = readFloats(fc, "side");
        std::vector<float> const center = readFloats(fc, "center");
        std::vector<float> const gains = readFloats(fc, "gains");
        if (!ints || side.size() != 1 || center.size() != 2 || gains.empty() ||
            gains.size() > static_cast<size_t>(kMaxRings + 1)) {
            return false;
        }
        params.side = side[0];
        std::copy(center.begin(), center.end(), params.center);
        std::copy(gains.begin(), gains.end(), params.gains);
        params.gain_count = static_cast<int32_t>(gains.size());
        return true;
    }

    std::vector<PluginField> mFieldNames;  // members, not statics: valid while the creator lives
    PluginFieldCollection mFieldCollection{};
};

}  // namespace
}  // namespace samedge

// Exported whatever visibility the build defaults to: loadLibrary finds the plugin by these
// two C names alone (TENSORRTAPI is empty outside TensorRT's own build).
#define SAMEDGE_PLUGIN_EXPORT extern "C" __attribute__((visibility("default")))

SAMEDGE_PLUGIN_EXPORT IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) {
    static samedge::HyperLinearCreator creator;
    static IPluginCreatorInterface* const creators[] = {&creator};
    nbCreators = 1;
    return creators;
}

SAMEDGE_PLUGIN_EXPORT void setLoggerFinder(ILoggerFinder* finder) { samedge::gLoggerFinder.store(finder); }
