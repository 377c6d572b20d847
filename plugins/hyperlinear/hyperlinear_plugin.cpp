// TensorRT plugin "HyperLinear" (namespace "samedge", version "1"): the samedge::HyperLinear
// ONNX node (docs/formats.md) on the fused kernel of hyperlinear_kernel.cu.
//
// IPluginV3 with the IPluginV3OneCore/Build/Runtime capabilities and an IPluginCreatorV3One,
// written against the public headers of TensorRT 10.3 (JetPack 6) and 11.x, whose V3 classes
// are the same. Inputs: X [..., K] float32 or float16, codes int32 [N, W], row_scale float32
// [N], bias float32 [N]; output [..., N] in X's type. Fields mirror the node's attributes.
// Registered both at load (REGISTER_TENSORRT_PLUGIN) and through the exported getCreators /
// setLoggerFinder, so ctypes loading, trtexec --staticPlugins/--dynamicPlugins and
// IPluginRegistry::loadLibrary all find it.

#include "hyperlinear_kernel.cuh"

#include <NvInfer.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

using namespace nvinfer1;

namespace samedge {
namespace {

constexpr char const* kPluginName = "HyperLinear";
constexpr char const* kPluginVersion = "1";
constexpr char const* kPluginNamespace = "samedge";
constexpr int32_t kNbInputs = 4;  // X, codes, row_scale, bias

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
    explicit HyperLinearPlugin(HyperLinearParams const& params) : mParams(params) { buildFields(); }

    // IPluginV3
    IPluginCapability* getCapabilityInterface(PluginCapabilityType type) noexcept override {
        switch (type) {
        case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
        case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
        case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
        }
        return nullptr;
    }
    IPluginV3* clone() noexcept override { return new (std::nothrow) HyperLinearPlugin(mParams); }

    // IPluginV3OneCore
    AsciiChar const* getPluginName() const noexcept override { return kPluginName; }
    AsciiChar const* getPluginVersion() const noexcept override { return kPluginVersion; }
    AsciiChar const* getPluginNamespace() const noexcept override { return kPluginNamespace; }

    // IPluginV3OneBuild
    int32_t getNbOutputs() const noexcept override { return 1; }

    int32_t getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes,
                               int32_t nbInputs) const noexcept override {
        if (nbOutputs != 1 || nbInputs != kNbInputs) return -1;
        outputTypes[0] = inputTypes[0];  // the output follows the activation type (strongly typed builds)
        return 0;
    }

    int32_t getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /*shapeInputs*/,
                            int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs,
                            IExprBuilder& exprBuilder) noexcept override {
        if (nbInputs != kNbInputs || nbOutputs != 1 || inputs[0].nbDims < 1) return -1;
        outputs[0] = inputs[0];
        outputs[0].d[inputs[0].nbDims - 1] = exprBuilder.constant(mParams.out_features);
        return 0;
    }

    bool supportsFormatCombination(int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
                                   int32_t nbOutputs) noexcept override {
        if (nbInputs != kNbInputs || nbOutputs != 1 || pos < 0 || pos > kNbInputs) return false;
        PluginTensorDesc const& desc = inOut[pos].desc;
        if (desc.format != TensorFormat::kLINEAR) return false;
        switch (pos) {
        case 0: return desc.type == DataType::kFLOAT || desc.type == DataType::kHALF;
        case 1: return desc.type == DataType::kINT32;
        case 2:
        case 3: return desc.type == DataType::kFLOAT;
        default: return desc.type == inOut[0].desc.type;  // the output
        }
    }

    int32_t configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const*,
                            int32_t nbOutputs) noexcept override {
        if (nbInputs != kNbInputs || nbOutputs != 1) return -1;
        int32_t const lastDim = in[0].desc.dims.d[in[0].desc.dims.nbDims - 1];
        return (lastDim == -1 || lastDim == mParams.in_features) ? 0 : -1;
    }

    // IPluginV3OneRuntime
    int32_t onShapeChange(PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const*,
                          int32_t nbOutputs) noexcept override {
        if (nbInputs != kNbInputs || nbOutputs != 1) return -1;
        return in[0].dims.d[in[0].dims.nbDims - 1] == mParams.in_features ? 0 : -1;
    }

    int32_t enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const*, void const* const* inputs,
                    void* const* outputs, void*, cudaStream_t stream) noexcept override {
        Dims const& dims = inputDesc[0].dims;
        int64_t rows = 1;
        for (int32_t i = 0; i + 1 < dims.nbDims; ++i) rows *= dims.d[i];
        auto const* codes = static_cast<int32_t const*>(inputs[1]);
        auto const* rowScale = static_cast<float const*>(inputs[2]);
        auto const* bias = static_cast<float const*>(inputs[3]);
        cudaError_t status = inputDesc[0].type == DataType::kHALF
            ? hyperlinearForwardF16(static_cast<__half const*>(inputs[0]), codes, rowScale, bias,
                                    static_cast<__half*>(outputs[0]), static_cast<int32_t>(rows), mParams, stream)
            : hyperlinearForwardF32(static_cast<float const*>(inputs[0]), codes, rowScale, bias,
                                    static_cast<float*>(outputs[0]), static_cast<int32_t>(rows), mParams, stream);
        return status == cudaSuccess ? 0 : -1;
    }

    IPluginV3* attachToContext(IPluginResourceContext*) noexcept override { return clone(); }

    PluginFieldCollection const* getFieldsToSerialize() noexcept override { return &mFieldCollection; }

private:
    // The fields point into mParams, which lives as long as this plugin.
    void buildFields() {
        mFields = {
            PluginField("in_features", &mParams.in_features, PluginFieldType::kINT32, 1),
            PluginField("out_features", &mParams.out_features, PluginFieldType::kINT32, 1),
            PluginField("codebook_size", &mParams.codebook_size, PluginFieldType::kINT32, 1),
            PluginField("lattice_side", &mParams.lattice_side, PluginFieldType::kINT32, 1),
            PluginField("side", &mParams.side, PluginFieldType::kFLOAT32, 1),
            PluginField("center", mParams.center, PluginFieldType::kFLOAT32, 2),
            PluginField("gains", mParams.gains, PluginFieldType::kFLOAT32, mParams.gain_count),
        };
        mFieldCollection.nbFields = static_cast<int32_t>(mFields.size());
        mFieldCollection.fields = mFields.data();
    }

    HyperLinearParams mParams;
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
            PluginField("side", nullptr, PluginFieldType::kFLOAT32, 1),
            PluginField("center", nullptr, PluginFieldType::kFLOAT32, 2),
            PluginField("gains", nullptr, PluginFieldType::kFLOAT32, 0),
        };
        mFieldCollection.nbFields = static_cast<int32_t>(mFieldNames.size());
        mFieldCollection.fields = mFieldNames.data();
    }

    IPluginV3* createPlugin(AsciiChar const*, PluginFieldCollection const* fc, TensorRTPhase) noexcept override {
        if (fc == nullptr) return nullptr;
        HyperLinearParams params{};
        bool ok = readInts(fc, "in_features", &params.in_features, 1) &&
                  readInts(fc, "out_features", &params.out_features, 1) &&
                  readInts(fc, "codebook_size", &params.codebook_size, 1) &&
                  readInts(fc, "lattice_side", &params.lattice_side, 1);
        std::vector<float> const side = readFloats(fc, "side");
        std::vector<float> const center = readFloats(fc, "center");
        std::vector<float> const gains = readFloats(fc, "gains");
        ok = ok && side.size() == 1 && center.size() == 2 && !gains.empty() &&
             gains.size() <= static_cast<size_t>(kMaxRings + 1);
        if (!ok) return nullptr;
        params.side = side[0];
        std::copy(center.begin(), center.end(), params.center);
        std::copy(gains.begin(), gains.end(), params.gains);
        params.gain_count = static_cast<int32_t>(gains.size());
        return new (std::nothrow) HyperLinearPlugin(params);
    }

    PluginFieldCollection const* getFieldNames() noexcept override { return &mFieldCollection; }
    AsciiChar const* getPluginName() const noexcept override { return kPluginName; }
    AsciiChar const* getPluginVersion() const noexcept override { return kPluginVersion; }
    AsciiChar const* getPluginNamespace() const noexcept override { return kPluginNamespace; }

private:
    std::vector<PluginField> mFieldNames;  // members, not statics: valid while the creator lives
    PluginFieldCollection mFieldCollection{};
};

}  // namespace
}  // namespace samedge

using SamedgeHyperLinearCreator = samedge::HyperLinearCreator;  // the macro pastes the name into an identifier
REGISTER_TENSORRT_PLUGIN(SamedgeHyperLinearCreator);

// For IPluginRegistry::loadLibrary, trtexec --dynamicPlugins and plugins serialised into plans.
extern "C" {
IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) {
    static samedge::HyperLinearCreator creator;
    static IPluginCreatorInterface* const creators[] = {&creator};
    nbCreators = 1;
    return creators;
}

void setLoggerFinder(ILoggerFinder* /*finder*/) {}  // the plugin logs nothing
}
