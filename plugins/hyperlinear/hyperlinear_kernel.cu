// The fused decode + GEMM of HyperLinear (declarations and layout in hyperlinear_kernel.cuh).
//
// One thread block computes a 64 x 64 tile of Y with 256 threads (4 x 4 outputs each) and
// walks K in steps of 32: it stages a 32 x 64 slice of X (converted to float) and decodes
// the matching 64 x 32 slice of W from 64 x 8 code words into shared memory. Accumulation is
// float32 for both activation types. This is the CUDA-core version; a tensor-core (mma.sync)
// path for fp16 is still to come (issue 5).

#include "hyperlinear_kernel.cuh"

namespace samedge {
namespace {

constexpr int kTileM = 64;
constexpr int kTileN = 64;
constexpr int kTileK = 32;  // weights along K per step: 16 pairs, 8 code words
constexpr int kThreads = 256;
constexpr int kWordsPerTile = kTileK / 4;
constexpr int kWordBits = 16;

__device__ __forceinline__ float toFloat(float v) { return v; }
__device__ __forceinline__ float toFloat(__half v) { return __half2float(v); }
__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(__half* p, float v) { *p = __float2half_rn(v); }

// Two weights of one pair, exactly as decode_weight computes them (float32, no contraction).
__device__ __forceinline__ void decodePair(int32_t index, const HyperLinearParams& p, float rowScale,
                                           float& w0, float& w1) {
    const int32_t area = p.lattice_side * p.lattice_side;
    const int32_t ring = index / p.codebook_size;
    const int32_t theta = index % p.codebook_size;
    const float x = __fdiv_rn(__fmul_rn(static_cast<float>(theta % area), p.side), static_cast<float>(area));
    const float y = __fdiv_rn(__fmul_rn(static_cast<float>(theta % p.lattice_side), p.side),
                              static_cast<float>(p.lattice_side));
    const float half = __fmul_rn(p.side, 0.5f);
    const float gain = p.gains[ring];
    w0 = __fmul_rn(__fadd_rn(p.center[0], __fmul_rn(__fsub_rn(x, half), gain)), rowScale);
    w1 = __fmul_rn(__fadd_rn(p.center[1], __fmul_rn(__fsub_rn(y, half), gain)), rowScale);
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
hyperlinearKernel(const T* __restrict__ x, const int32_t* __restrict__ codes, const float* __restrict__ rowScale,
                  const float* __restrict__ bias, T* __restrict__ y, int32_t m, HyperLinearParams p) {
    __shared__ float xs[kTileK][kTileM + 1];  // +1: no bank conflicts on the transposed store
    __shared__ float ws[kTileK][kTileN + 1];

    const int32_t k = p.in_features;
    const int32_t n = p.out_features;
    const int32_t wordsPerRow = ((k + 1) / 2 + 1) / 2;
    const int32_t rowBase = blockIdx.y * kTileM;
    const int32_t colBase = blockIdx.x * kTileN;
    const int tx = threadIdx.x % 16;  // output columns tx, tx + 16, ...
    const int ty = threadIdx.x / 16;  // output rows ty, ty + 16, ...

    float acc[4][4] = {};
    for (int32_t k0 = 0; k0 < k; k0 += kTileK) {
        // Stage X[rowBase .. +64, k0 .. +32] as xs[k][m].
        for (int i = threadIdx.x; i < kTileM * kTileK; i += kThreads) {
            const int r = i / kTileK, c = i % kTileK;
            const int32_t row = rowBase + r, col = k0 + c;
            xs[c][r] = (row < m && col < k) ? toFloat(x[static_cast<int64_t>(row) * k + col]) : 0.0f;
        }
        // Decode W[colBase .. +64, k0 .. +32] from 64 rows x 8 words into ws[k][n].
        for (int i = threadIdx.x; i < kTileN * kWordsPerTile; i += kThreads) {
            const int r = i / kWordsPerTile, w = i % kWordsPerTile;
            const int32_t outRow = colBase + r;
            const int32_t word = k0 / 4 + w;
            float weights[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            if (outRow < n && word < wordsPerRow) {
                const int32_t packed = codes[static_cast<int64_t>(outRow) * wordsPerRow + word];
                const float scale = rowScale[outRow];
                decodePair(packed & ((1 << kWordBits) - 1), p, scale, weights[0], weights[1]);
                decodePair(packed >> kWordBits, p, scale, weights[2], weights[3]);
            }
            for (int j = 0; j < 4; ++j) {
                const int32_t col = k0 + 4 * w + j;
                ws[4 * w + j][r] = col < k ? weights[j] : 0.0f;  // padding columns contribute nothing
            }
        }
        __syncthreads();
#pragma unroll 8
        for (int kk = 0; kk < kTileK; ++kk) {
            float a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                a[i] = xs[kk][ty + 16 * i];
                b[i] = ws[kk][tx + 16 * i];
            }
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int32_t row = rowBase + ty + 16 * i;
        if (row >= m) continue;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int32_t col = colBase + tx + 16 * j;
            if (col < n) store(&y[static_cast<int64_t>(row) * n + col], acc[i][j] + (bias ? bias[col] : 0.0f));
        }
    }
}

template <typename T>
cudaError_t launch(const T* x, const int32_t* codes, const float* rowScale, const float* bias, T* y, int32_t m,
                   const HyperLinearParams& params, cudaStream_t stream) {
    if (m <= 0 || params.in_features <= 0 || params.out_features <= 0) return cudaErrorInvalidValue;
    if (params.gain_count < 1 || params.gain_count > kMaxRings + 1) return cudaErrorInvalidValue;
    const dim3 grid((params.out_features + kTileN - 1) / kTileN, (m + kTileM - 1) / kTileM);
    hyperlinearKernel<T><<<grid, kThreads, 0, stream>>>(x, codes, rowScale, bias, y, m, params);
    return cudaGetLastError();
}

}  // namespace

cudaError_t hyperlinearForwardF32(const float* x, const int32_t* codes, const float* row_scale, const float* bias,
                                  float* y, int32_t m, const HyperLinearParams& params, cudaStream_t stream) {
    return launch(x, codes, row_scale, bias, y, m, params, stream);
}

cudaError_t hyperlinearForwardF16(const __half* x, const int32_t* codes, const float* row_scale, const float* bias,
                                  __half* y, int32_t m, const HyperLinearParams& params, cudaStream_t stream) {
    return launch(x, codes, row_scale, bias, y, m, params, stream);
}

}  // namespace samedge

// A C entry point for tests and benchmarks that load the kernel with ctypes (no TensorRT, no
// PyTorch extension build): dtype 0 = float32, 1 = float16; pointers are device pointers.
extern "C" int samedge_hyperlinear_forward(int dtype, const void* x, const int32_t* codes, const float* row_scale,
                                           const float* bias, void* y, int32_t m,
                                           const samedge::HyperLinearParams* params, void* stream) {
    const auto s = static_cast<cudaStream_t>(stream);
    const cudaError_t status =
        dtype == 0 ? samedge::hyperlinearForwardF32(static_cast<const float*>(x), codes, row_scale, bias,
                                                    static_cast<float*>(y), m, *params, s)
                   : samedge::hyperlinearForwardF16(static_cast<const __half*>(x), codes, row_scale, bias,
                                                    static_cast<__half*>(y), m, *params, s);
    return static_cast<int>(status);
}
