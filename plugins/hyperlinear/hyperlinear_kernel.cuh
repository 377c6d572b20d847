// HyperLinear: Y[M, N] = X[M, K] * W^T + bias, with W decoded from Birkhoff codes inside
// the GEMM (never written to global memory). Plain CUDA, no TensorRT include, so the
// kernel compiles and is tested on its own (tests/test_hyperlinear_kernel.py).
//
// Codes layout: plugins/hyperlinear/spec.py (kIndexBits, kPairsPerWord below are its values,
// tested); int32 [N, ceil(ceil(K/2)/2)], index = theta + U * ring. The decode repeats
// compress.birkhoff.hyper_linear.decode_weight operation by operation in float32 with
// round-to-nearest intrinsics, so that the compiler cannot contract it into FMAs and the
// weights equal the torch decode bit for bit.
//
// Out-of-range codes: each 16-bit half of a word is read as an unsigned index (valid words
// are non-negative, so this is the torch reading), and a ring index past the last gain is
// clamped to it (ring = min(index / U, gain_count - 1)). Valid codes never reach the clamp:
// the codec stores ring <= K = gain_count - 1, so their weights are unchanged by it; a
// damaged code word decodes to some finite weight instead of reading past the gains.
#pragma once

#include <cstdint>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace samedge {

constexpr int kMaxRings = 3;  // K_max of the codec: gains has at most 4 entries
constexpr int kIndexBits = 16;  // each pair index's share of a code word, the first in the low bits
constexpr int kPairsPerWord = 2;
static_assert(kIndexBits * kPairsPerWord == 32, "a code word is one int32");

struct HyperLinearParams {
    int32_t in_features;    // K
    int32_t out_features;   // N
    int32_t codebook_size;  // U
    int32_t lattice_side;   // m = ceil(sqrt(U))
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
};

// A code index has kIndexBits bits, so a larger codebook could not be addressed.
constexpr int32_t kMaxCodebookSize = 1 << kIndexBits;

// kHyperLinearOk, or the first rule (in the order above) that m and params break. Host only,
// no CUDA call.
HyperLinearStatus hyperlinearCheck(int32_t m, const HyperLinearParams& params);
// A short English description of a status ("codebook_size must be in 1..65536", ...).
const char* hyperlinearStatusName(int32_t status);

// Returns cudaSuccess or the launch error. m == 0 returns cudaSuccess without launching
// anything (after the parameters are checked). cudaErrorInvalidValue: hyperlinearCheck
// refuses m or params, x, codes, row_scale or y is null with m > 0, or m needs more than
// 65535 row tiles of the chosen kernel (over 4 million rows at fp32, 8 million at fp16).
// x, y: [M, K] / [M, N] row-major; codes, row_scale, bias as in the ONNX node (bias may be
// nullptr). Both accumulate in float32 and add the bias in float32. F32 multiplies the
// float32 weights on CUDA cores; F16 rounds each decoded weight once to half for the tensor
// cores, so it matches the torch decode to half precision, not bit for bit.
cudaError_t hyperlinearForwardF32(const float* x, const int32_t* codes, const float* row_scale,
                                  const float* bias, float* y, int32_t m, const HyperLinearParams& params,
                                  cudaStream_t stream);
cudaError_t hyperlinearForwardF16(const __half* x, const int32_t* codes, const float* row_scale,
                                  const float* bias, __half* y, int32_t m, const HyperLinearParams& params,
                                  cudaStream_t stream);

}  // namespace samedge

// C entry points (ctypes: plugins/hyperlinear/harness.py). Return values are ints: a
// cudaError_t for the forward calls, a samedge::HyperLinearStatus for the check, which
// makes no CUDA call (nor does the host decode).
extern "C" {
// dtype 0 = float32, 1 = float16; pointers are device pointers.
int samedge_hyperlinear_forward(int dtype, const void* x, const int32_t* codes, const float* row_scale,
                                const float* bias, void* y, int32_t m, const samedge::HyperLinearParams* params,
                                void* stream);
// The same with the kernel forced: tile_m 0 chooses, 1 = CUDA cores, 32/64/128 = that tensor-core
// row tile (fp16 only; float32 takes 0 and 1).
int samedge_hyperlinear_forward_path(int dtype, int tile_m, const void* x, const int32_t* codes,
                                     const float* row_scale, const float* bias, void* y, int32_t m,
                                     const samedge::HyperLinearParams* params, void* stream);
int samedge_hyperlinear_check(int32_t m, const samedge::HyperLinearParams* params);
const char* samedge_hyperlinear_status_name(int status);
// The kernel's own decode (the same function, compiled for the host) into weight[N, K], a host
// buffer: for tests without a GPU. Returns a HyperLinearStatus (m is taken as 1).
int samedge_hyperlinear_decode_host(const int32_t* codes, const float* row_scale,
                                    const samedge::HyperLinearParams* params, float* weight);
}
