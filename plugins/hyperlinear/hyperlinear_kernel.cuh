// HyperLinear: Y[M, N] = X[M, K] * W^T + bias, with W decoded from Birkhoff codes. Plain CUDA,
// no TensorRT include, so the kernel compiles and is tested on its own
// (tests/test_hyperlinear_kernel.py); the TensorRT plugin (hyperlinear_plugin.cpp) calls it.
//
// Codes layout: plugins/hyperlinear/spec.py (kWordBits, kMaxIndexBits below are its values,
// tested). `codes` is one int32 bit stream of hyperlinearWordCount(params) words: index p of
// the N * ceil(K / 2) pairs (row-major) occupies stream bits [p * b, p * b + b), b = index_bits,
// least significant first, stream bit k being bit k % 32 of word k / 32; words are read as
// unsigned (the sign bit is a data bit).
//
// Decode: index i (= theta + U * ring) names entry i of the pair table, the U * gain_count
// unscaled pairs that plugins/hyperlinear/reference.py's pair_table computes. The table is
// computed on the host (hyperlinearPairTable, the reference's float32 operations one at a
// time) and handed to the kernels as a device pointer and its size; a weight is then one
// gather and one multiply by its row's scale, which is how reference.decode_linear computes
// it, so the float32 weights equal the reference bit for bit (float16: each rounded once).
//
// Damaged codes: an index past the table (never in codes the codec writes: it stores
// indices below U * gain_count) is clamped to the last entry, so a damaged stream decodes to
// some finite weight instead of reading past the table. reference.decode_linear raises on
// such an index instead; the kernel cannot raise, and the plugin has no cheaper place to check.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace samedge {

constexpr int kMaxRings = 3;        // K_max of the codec: gains has at most 4 entries
constexpr int kWordBits = 32;       // a code word is one int32
constexpr int kMaxIndexBits = 16;   // index_bits accepted: 1 .. 16 (the codec writes 11 to 13)
// An index has at most kMaxIndexBits bits, so a larger codebook could not be addressed.
constexpr int32_t kMaxCodebookSize = 1 << kMaxIndexBits;

// At or above this many rows, float16 calls decode W once into the workspace and multiply with
// cuBLASLt; below, the fused kernel decodes W tiles inside the GEMM. A first guess, to be
// measured on a GPU: benchmarks/hyperlinear_kernel.py times both paths at M in {1, 64, 4096,
// 16384}; set it where they cross. Float32 always takes the fused kernel (its weights must be
// the float32 decode, which a float16 GEMM would round).
constexpr int32_t kGemmMinRows = 512;
// cuBLASLt's own scratch inside the workspace: the size NVIDIA's cuBLAS documentation advises
// for Hopper (earlier GPUs need less). One figure for all: TensorRT shares workspace memory
// between layers, and it is held only while a layer runs.
constexpr size_t kGemmScratchBytes = size_t(32) << 20;
constexpr size_t kWorkspaceAlignment = 256;  // each part of the workspace starts on this

struct HyperLinearParams {
    int32_t in_features;    // K
    int32_t out_features;   // N
    int32_t codebook_size;  // U
    int32_t lattice_side;   // m = ceil(sqrt(U))
    int32_t index_bits;     // b: bits per index in the code stream
    float side;             // L
    float center[2];
    float gains[kMaxRings + 1];  // r_k / (L/2); entries past the ring count are unused
    int32_t gain_count;
};

// Why a call is refused (hyperlinearCheck). The forward functions return cudaErrorInvalidValue
// for every one of these (the code a CUDA caller already handles); hyperlinearCheck and
// hyperlinearStatusName tell which rule was broken. The values are stable (the C entry
// point samedge_hyperlinear_check returns them as int).
enum HyperLinearStatus : int32_t {
    kHyperLinearOk = 0,
    kHyperLinearBadRows = 1,         // m < 0 (m == 0 is valid: nothing to do)
    kHyperLinearBadFeatures = 2,     // in_features or out_features <= 0
    kHyperLinearBadCodebook = 3,     // codebook_size outside 1 .. kMaxCodebookSize
    kHyperLinearBadLatticeSide = 4,  // lattice_side <= 0 or != ceil(sqrt(codebook_size))
    kHyperLinearBadGainCount = 5,    // gain_count outside 1 .. kMaxRings + 1
    kHyperLinearNoParams = 6,        // the C entry points' params pointer is null
    kHyperLinearBadIndexBits = 7,    // index_bits outside 1 .. kMaxIndexBits
    kHyperLinearBadTable = 8,        // the table's size is not codebook_size * gain_count
};

// kHyperLinearOk, or the first rule (in the order above) that m and params break. Host only,
// no CUDA call.
HyperLinearStatus hyperlinearCheck(int32_t m, const HyperLinearParams& params);
// A short English description of a status ("codebook_size must be in 1..65536", ...).
const char* hyperlinearStatusName(int32_t status);

// Code words the stream of a layer holds: ceil(N * ceil(K / 2) * b / 32).
inline int64_t hyperlinearWordCount(const HyperLinearParams& p) {
    const int64_t bits = static_cast<int64_t>(p.out_features) * ((p.in_features + 1) / 2) * p.index_bits;
    return (bits + kWordBits - 1) / kWordBits;
}

// Pairs in the table: U * gain_count.
inline int32_t hyperlinearTableSize(const HyperLinearParams& p) { return p.codebook_size * p.gain_count; }

// Leading dimension (halves) of the float16 W [N, ldw] the large-M path decodes into the
// workspace: K rounded up to 8, so that every row starts 16-byte aligned.
inline int32_t hyperlinearDecodedStride(const HyperLinearParams& p) { return (p.in_features + 7) / 8 * 8; }

// `bytes` rounded up to kWorkspaceAlignment.
inline size_t hyperlinearAlignUp(size_t bytes) {
    return (bytes + kWorkspaceAlignment - 1) / kWorkspaceAlignment * kWorkspaceAlignment;
}

// Workspace bytes a float16 call of m rows needs: 0 below kGemmMinRows (the fused kernel needs
// none), else W [N, ldw] and the bias [N] in float16 plus cuBLASLt's scratch, each part aligned
// (plus one alignment of slack, as the pointer given need not be). Non-decreasing in m, so
// the size for a profile's largest m covers every m of it.
inline size_t hyperlinearWorkspaceSize(const HyperLinearParams& p, int64_t m) {
    if (m < kGemmMinRows) return 0;
    const size_t n = static_cast<size_t>(p.out_features);
    const size_t weights = hyperlinearAlignUp(sizeof(__half) * n * hyperlinearDecodedStride(p));
    const size_t bias = hyperlinearAlignUp(sizeof(__half) * n);
    return kWorkspaceAlignment + weights + bias + kGemmScratchBytes;
}

// The pair table, host only: table[2 i], table[2 i + 1] = entry i, for i < hyperlinearTableSize
// (index i = theta + U * ring), float32 as reference.pair_table computes it. Returns
// hyperlinearCheck(0, p) and writes nothing unless that is kHyperLinearOk.
HyperLinearStatus hyperlinearPairTable(const HyperLinearParams& p, float* table);

// A table in device memory, owned by whoever uploaded it.
struct HyperLinearDeviceTable {
    float* pairs = nullptr;  // [size][2]
    int32_t size = 0;
};
// cudaMalloc + cudaMemcpy of a host table of `size` pairs into `table` (freed first if it
// held one); synchronous, so call it outside stream capture (the plugin does, before its
// first launch).
cudaError_t hyperlinearTableUpload(const float* hostTable, int32_t size, HyperLinearDeviceTable* table);
void hyperlinearTableFree(HyperLinearDeviceTable* table);

// The large-M path's cuBLASLt state (handle, the last shape's plan), opaque so that callers
// need no cuBLAS header. One per caller that may run concurrently (a plugin instance); not
// thread-safe itself.
struct HyperLinearGemm;
// cudaSuccess and *gemm, or an error and nullptr; needs a CUDA device.
cudaError_t hyperlinearGemmCreate(HyperLinearGemm** gemm);
void hyperlinearGemmDestroy(HyperLinearGemm* gemm);
// The cuBLAS status name of the last cuBLASLt failure on this gemm ("CUBLAS_STATUS_SUCCESS" when none).
const char* hyperlinearGemmLastStatus(const HyperLinearGemm* gemm);

// Returns cudaSuccess or the launch error. m == 0 returns cudaSuccess without launching
// anything (after the parameters are checked). cudaErrorInvalidValue: hyperlinearCheck
// refuses m or params, table_size != hyperlinearTableSize(params), x, codes, table, row_scale
// or y is null with m > 0, or m needs more row tiles than a grid has (over 4 million rows at
// fp32, 8 million at fp16). x, y: [M, K] / [M, N] row-major; codes, row_scale, bias as in the
// ONNX node (bias may be nullptr); table: a device table of hyperlinearTableSize(params) pairs.
// Both accumulate in float32. F32 multiplies the float32 weights on CUDA cores and adds the
// bias in float32. F16 rounds each decoded weight once to half for the tensor cores: with
// m < kGemmMinRows, or without a gemm or a workspace of hyperlinearWorkspaceSize(params, m)
// bytes, in the fused kernel (bias added in float32 to the accumulators), else by decoding W
// into the workspace and calling cuBLASLt (its bias epilogue adds the bias rounded to half).
cudaError_t hyperlinearForwardF32(const float* x, const int32_t* codes, const float* table, int32_t table_size,
                                  const float* row_scale, const float* bias, float* y, int32_t m,
                                  const HyperLinearParams& params, cudaStream_t stream);
cudaError_t hyperlinearForwardF16(const __half* x, const int32_t* codes, const float* table, int32_t table_size,
                                  const float* row_scale, const float* bias, __half* y, int32_t m,
                                  const HyperLinearParams& params, HyperLinearGemm* gemm, void* workspace,
                                  size_t workspace_bytes, cudaStream_t stream);

}  // namespace samedge

// C entry points (ctypes: plugins/hyperlinear/harness.py). Return values are ints: a
// cudaError_t for the forward calls, a samedge::HyperLinearStatus for the check, the table
// and the host decode, none of which makes a CUDA call.
extern "C" {
// dtype 0 = float32, 1 = float16; pointers are device pointers; gemm may be null (then fp16
// stays on the fused kernel), workspace may be null with workspace_bytes 0.
int samedge_hyperlinear_forward(int dtype, const void* x, const int32_t* codes, const float* table, int32_t table_size,
                                const float* row_scale, const float* bias, void* y, int32_t m,
                                const samedge::HyperLinearParams* params, void* gemm, void* workspace,
                                size_t workspace_bytes, void* stream);
// The same with the path forced: 0 chooses, 1 = the CUDA-core kernel, 2 = decode + cuBLASLt
// (fp16 only; needs gemm and the workspace, cudaErrorNotSupported when cuBLASLt has no
// algorithm), 32/64/128 = that tensor-core row tile (fp16 only). Float32 takes 0 and 1.
int samedge_hyperlinear_forward_path(int dtype, int path, const void* x, const int32_t* codes, const float* table,
                                     int32_t table_size, const float* row_scale, const float* bias, void* y,
                                     int32_t m, const samedge::HyperLinearParams* params, void* gemm,
                                     void* workspace, size_t workspace_bytes, void* stream);
int samedge_hyperlinear_check(int32_t m, const samedge::HyperLinearParams* params);
const char* samedge_hyperlinear_status_name(int status);
int64_t samedge_hyperlinear_word_count(const samedge::HyperLinearParams* params);  // -1 for null params
int32_t samedge_hyperlinear_table_size(const samedge::HyperLinearParams* params);  // -1 for null params
size_t samedge_hyperlinear_workspace_size(const samedge::HyperLinearParams* params, int64_t m);
int32_t samedge_hyperlinear_gemm_min_rows(void);
int samedge_hyperlinear_pair_table(const samedge::HyperLinearParams* params, float* table);
// cudaSuccess with *gemm set, or the error; destroy with samedge_hyperlinear_gemm_destroy.
int samedge_hyperlinear_gemm_create(void** gemm);
void samedge_hyperlinear_gemm_destroy(void* gemm);
const char* samedge_hyperlinear_gemm_last_status(const void* gemm);
// The kernels' own decode (the same function, compiled for the host) into weight[N, K], host
// buffers: for tests without a GPU. table: a host table of table_size pairs, or null to have
// it computed by hyperlinearPairTable. Returns a HyperLinearStatus (m is taken as 1).
int samedge_hyperlinear_decode_host(const int32_t* codes, const float* table, int32_t table_size,
                                    const float* row_scale, const samedge::HyperLinearParams* params, float* weight);
}
