// HyperLinear: Y[M, N] = X[M, K] * W^T + bias, with W decoded from Birkhoff codes inside
// the GEMM (never written to global memory). Plain CUDA, no TensorRT include, so the
// kernel compiles and is tested on its own (tests/test_hyperlinear_kernel.py).
//
// Codes layout (docs/formats.md, samedge::HyperLinear): int32 [N, ceil(ceil(K/2)/2)];
// word j of row n holds pair index 2j in its low 16 bits and 2j+1 in its high 16 bits;
// index = theta + U * ring. The decode repeats compress.birkhoff.hyper_linear.decode_weight
// operation by operation in float32 with round-to-nearest intrinsics, so that the compiler
// cannot contract it into FMAs and the weights equal the torch decode bit for bit.
#pragma once

#include <cstdint>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace samedge {

constexpr int kMaxRings = 3;  // K_max of the codec: gains has at most 4 entries

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

// Returns cudaSuccess or the launch error. x, y: [M, K] / [M, N] row-major; codes, row_scale,
// bias as in the ONNX node (bias may be nullptr). Both accumulate in float32 and add the bias
// in float32. F32 multiplies the float32 weights on CUDA cores; F16 rounds each decoded weight
// once to half for the tensor cores, so it matches the torch decode to half precision, not bit
// for bit.
cudaError_t hyperlinearForwardF32(const float* x, const int32_t* codes, const float* row_scale,
                                  const float* bias, float* y, int32_t m, const HyperLinearParams& params,
                                  cudaStream_t stream);
cudaError_t hyperlinearForwardF16(const __half* x, const int32_t* codes, const float* row_scale,
                                  const float* bias, __half* y, int32_t m, const HyperLinearParams& params,
                                  cudaStream_t stream);

}  // namespace samedge
