// The fused decode + GEMM of HyperLinear (declarations and layout in hyperlinear_kernel.cuh).
//
// Two kernels share the decode (decodePair, bit-exact with the torch decode):
//
// * fp32 runs on CUDA cores: a block of 256 threads computes a 64 x 64 tile of Y (4 x 4
//   outputs a thread), walking K in steps of 32 through shared memory.
// * fp16 runs on tensor cores (WMMA m16n16k16, half inputs, float accumulators): a block of
//   8 warps computes a TM x 64 tile of Y, TM = 128, 64 or 32. Each K step of 32 stages X
//   [TM x 32] as half and decodes W [64 x 32] in float32, rounding it to half only as it
//   goes into shared memory (stored ws[n][k], which is B = W^T read column-major). Padding
//   rows and columns (M, N and K tails, odd K) are zeros in shared memory, so every WMMA
//   tile is full. Bias is added in fp32 after the accumulators are staged through shared
//   memory, where the bounds checks and the half conversion happen.
//
// The decode (integer division, IEEE division) costs far more than the tile product, and
// every block decodes its 64 columns of W over all of K whatever TM is. A tall TM decodes
// each weight fewer times in total, a short one makes more blocks; launchF16 takes the
// tallest TM that still gives two blocks per SM. fp16 uses the tensor-core kernel at every
// M, M = 1 included: its wasted MMA work on padding rows is a few instructions a K step,
// while the CUDA-core kernel computes its full 64 x 64 FMA tile for any M.
//
// Before any CUDA call the launchers check the call (hyperlinearCheck, null operands, the
// path): a refused call returns cudaErrorInvalidValue and m == 0 returns cudaSuccess, both
// without launching. The decode is __host__ __device__ so that samedge_hyperlinear_decode_host
// runs the very same code on the CPU (tests without a GPU).

#include "hyperlinear_kernel.cuh"

#include <mma.h>

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 700
#error "the HyperLinear kernel uses WMMA half tensor cores: compile for sm_70 or newer"
#endif

namespace samedge {
namespace {

constexpr int kTileM = 64;
constexpr int kTileN = 64;
constexpr int kTileK = 32;  // weights along K per step: 16 pairs, 8 code words
constexpr int kThreads = 256;
constexpr int kWordsPerTile = kTileK / 4;

__device__ __forceinline__ float toFloat(float v) { return v; }
__device__ __forceinline__ float toFloat(__half v) { return __half2float(v); }
__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(__half* p, float v) { *p = __float2half_rn(v); }

// IEEE float32 operations rounded to nearest, each on its own. On the device the intrinsics
// keep nvcc from contracting a multiply and an add into an FMA; the host copy of the decode
// (samedge_hyperlinear_decode_host, for tests) relies on the build passing -ffp-contract=off
// to the host compiler (plugins/hyperlinear/harness.py does), which x86-64 needs no flag for.
__host__ __device__ __forceinline__ float mulRn(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}
__host__ __device__ __forceinline__ float addRn(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fadd_rn(a, b);
#else
    return a + b;
#endif
}
__host__ __device__ __forceinline__ float subRn(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fsub_rn(a, b);
#else
    return a - b;
#endif
}
__host__ __device__ __forceinline__ float divRn(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fdiv_rn(a, b);
#else
    return a / b;
#endif
}

// Two weights of one pair, exactly as decode_weight computes them (float32, no contraction).
// index: 0 .. 65535 (one unsigned half of a code word). The ring is clamped to the last gain:
// valid codes (ring <= gain_count - 1, as the codec writes them) are unaffected, and a damaged
// word cannot read past the gains (see hyperlinear_kernel.cuh).
__host__ __device__ __forceinline__ void decodePair(int32_t index, const HyperLinearParams& p, float rowScale,
                                                    float& w0, float& w1) {
    const int32_t area = p.lattice_side * p.lattice_side;
    const int32_t rawRing = index / p.codebook_size;
    const int32_t ring = rawRing < p.gain_count - 1 ? rawRing : p.gain_count - 1;
    const int32_t theta = index % p.codebook_size;
    const float x = divRn(mulRn(static_cast<float>(theta % area), p.side), static_cast<float>(area));
    const float y = divRn(mulRn(static_cast<float>(theta % p.lattice_side), p.side),
                          static_cast<float>(p.lattice_side));
    const float half = mulRn(p.side, 0.5f);
    const float gain = p.gains[ring];
    w0 = mulRn(addRn(p.center[0], mulRn(subRn(x, half), gain)), rowScale);
    w1 = mulRn(addRn(p.center[1], mulRn(subRn(y, half), gain)), rowScale);
}

// The four weights of code word `word` of output row `outRow`: columns 4 word .. 4 word + 3
// of W. Weights past N or past K (padding, and the odd-K pair's second weight) are zero,
// so they contribute nothing to the tile product. The word's halves are read unsigned (the
// same as the torch decode for the non-negative words the codec writes).
__host__ __device__ __forceinline__ void decodeWord(const int32_t* __restrict__ codes,
                                                    const float* __restrict__ rowScale, const HyperLinearParams& p,
                                                    int32_t outRow, int32_t word, int32_t wordsPerRow,
                                                    float (&weights)[4]) {
    weights[0] = weights[1] = weights[2] = weights[3] = 0.0f;
    if (outRow >= p.out_features || word >= wordsPerRow) return;
    const uint32_t packed = static_cast<uint32_t>(codes[static_cast<int64_t>(outRow) * wordsPerRow + word]);
    const float scale = rowScale[outRow];
    static_assert(kPairsPerWord == 2, "decodeWord reads a low and a high index");
    constexpr uint32_t kLow = (1u << kIndexBits) - 1u;
    decodePair(static_cast<int32_t>(packed & kLow), p, scale, weights[0], weights[1]);
    decodePair(static_cast<int32_t>(packed >> kIndexBits), p, scale, weights[2], weights[3]);
    for (int j = 0; j < 4; ++j)
        if (4 * word + j >= p.in_features) weights[j] = 0.0f;
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
            float weights[4];
            decodeWord(codes, rowScale, p, colBase + r, k0 / 4 + w, wordsPerRow, weights);
            for (int j = 0; j < 4; ++j) ws[4 * w + j][r] = weights[j];
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

// ---- fp16 on tensor cores ----------------------------------------------------------------

constexpr int kTcWarps = 8;
constexpr int kTcThreads = 32 * kTcWarps;
constexpr int kTcTileN = 64;
constexpr int kTcTileK = 32;                // two WMMA k-steps
constexpr int kTcWordsPerTile = kTcTileK / 4;
constexpr int kTcLd = kTcTileK + 8;         // halves a row: 80 bytes, so the 8 rows of an
                                            // 8 x 16-byte fragment load hit distinct banks
constexpr int kTcLdC = kTcTileN + 4;        // floats a row of the staged accumulators
constexpr int kWmma = 16;                   // m16n16k16

// TM = kWarpsM * kFragsM * 16 rows; the 8 warps form a kWarpsM x (8 / kWarpsM) grid and each
// holds kFragsM x kFragsN accumulator fragments. kVecX: X rows are 16-byte aligned and K is
// a multiple of 8, so X is staged 8 halves at a time.
template <int kWarpsM, int kFragsM, bool kVecX>
__global__ void __launch_bounds__(kTcThreads, 2)
hyperlinearTensorCoreKernel(const __half* __restrict__ x, const int32_t* __restrict__ codes,
                            const float* __restrict__ rowScale, const float* __restrict__ bias,
                            __half* __restrict__ y, int32_t m, HyperLinearParams p) {
    using namespace nvcuda;
    constexpr int kWarpsN = kTcWarps / kWarpsM;
    constexpr int kFragsN = kTcTileN / (kWmma * kWarpsN);
    constexpr int kTM = kWarpsM * kFragsM * kWmma;
    static_assert(kWarpsM * kWarpsN == kTcWarps && kFragsN * kWmma * kWarpsN == kTcTileN, "warp grid");
    static_assert(kTcLd % 8 == 0 && kTcLdC % 4 == 0, "WMMA ldm: a multiple of 16 bytes");
    // Fragment pointers must be 32-byte aligned: rows step by 16 (16 * 80 and 16 * 272 bytes)
    // and columns by 16 (32 and 64 bytes), and ws starts at a multiple of 32.
    constexpr int kXsBytes = kTM * kTcLd * static_cast<int>(sizeof(__half));
    constexpr int kWsBytes = kTcTileN * kTcLd * static_cast<int>(sizeof(__half));
    constexpr int kCsBytes = kTM * kTcLdC * static_cast<int>(sizeof(float));
    constexpr int kSmemBytes = kXsBytes + kWsBytes > kCsBytes ? kXsBytes + kWsBytes : kCsBytes;
    static_assert(kXsBytes % 32 == 0, "ws alignment");
    static_assert(kSmemBytes <= 48 * 1024, "static shared memory");
    // The operand tiles and the staged accumulators are never live together: one buffer.
    __shared__ __align__(128) unsigned char smem[kSmemBytes];
    auto xs = reinterpret_cast<__half(*)[kTcLd]>(smem);             // [kTM][kTcLd]: X[m][k]
    auto ws = reinterpret_cast<__half(*)[kTcLd]>(smem + kXsBytes);  // [64][kTcLd]: W[n][k]
    auto cs = reinterpret_cast<float(*)[kTcLdC]>(smem);             // [kTM][kTcLdC], after the loop

    const int32_t k = p.in_features;
    const int32_t n = p.out_features;
    const int32_t wordsPerRow = ((k + 1) / 2 + 1) / 2;
    const int32_t rowBase = blockIdx.y * kTM;
    const int32_t colBase = blockIdx.x * kTcTileN;
    const int warp = threadIdx.x / 32;
    const int warpRow = (warp % kWarpsM) * kFragsM * kWmma;
    const int warpCol = (warp / kWarpsM) * kFragsN * kWmma;

    wmma::fragment<wmma::accumulator, kWmma, kWmma, kWmma, float> acc[kFragsM][kFragsN];
#pragma unroll
    for (int i = 0; i < kFragsM; ++i)
#pragma unroll
        for (int j = 0; j < kFragsN; ++j) wmma::fill_fragment(acc[i][j], 0.0f);

    for (int32_t k0 = 0; k0 < k; k0 += kTcTileK) {
        // X[rowBase .. +kTM, k0 .. +32] -> xs; zeros past M and K.
        if constexpr (kVecX) {
            constexpr int kChunks = kTcTileK / 8;
            for (int i = threadIdx.x; i < kTM * kChunks; i += kTcThreads) {
                const int r = i / kChunks, c = (i % kChunks) * 8;
                const int32_t row = rowBase + r, col = k0 + c;
                uint4 v = make_uint4(0u, 0u, 0u, 0u);
                // K % 8 == 0 and col % 8 == 0: col < k means all 8 halves are inside the row.
                if (row < m && col < k) v = *reinterpret_cast<const uint4*>(x + static_cast<int64_t>(row) * k + col);
                *reinterpret_cast<uint4*>(&xs[r][c]) = v;
            }
        } else {
            for (int i = threadIdx.x; i < kTM * kTcTileK; i += kTcThreads) {
                const int r = i / kTcTileK, c = i % kTcTileK;
                const int32_t row = rowBase + r, col = k0 + c;
                xs[r][c] = (row < m && col < k) ? x[static_cast<int64_t>(row) * k + col] : __float2half_rn(0.0f);
            }
        }
        // W[colBase .. +64, k0 .. +32] from 64 rows x 8 words -> ws, decoded in float32 and
        // rounded once to half; zeros past N and K (the odd-K pair's second weight included).
        for (int i = threadIdx.x; i < kTcTileN * kTcWordsPerTile; i += kTcThreads) {
            const int r = i / kTcWordsPerTile, w = i % kTcWordsPerTile;
            float weights[4];
            decodeWord(codes, rowScale, p, colBase + r, k0 / 4 + w, wordsPerRow, weights);
            __half2* dst = reinterpret_cast<__half2*>(&ws[r][4 * w]);  // 8-byte aligned: 80 r + 8 w bytes
            dst[0] = __floats2half2_rn(weights[0], weights[1]);
            dst[1] = __floats2half2_rn(weights[2], weights[3]);
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < kTcTileK; kk += kWmma) {
            wmma::fragment<wmma::matrix_a, kWmma, kWmma, kWmma, __half, wmma::row_major> a[kFragsM];
            wmma::fragment<wmma::matrix_b, kWmma, kWmma, kWmma, __half, wmma::col_major> b[kFragsN];
#pragma unroll
            for (int i = 0; i < kFragsM; ++i) wmma::load_matrix_sync(a[i], &xs[warpRow + kWmma * i][kk], kTcLd);
            // B[k][n] = W[n][k] = ws[n][k]: column-major B with leading dimension kTcLd.
#pragma unroll
            for (int j = 0; j < kFragsN; ++j) wmma::load_matrix_sync(b[j], &ws[warpCol + kWmma * j][kk], kTcLd);
#pragma unroll
            for (int i = 0; i < kFragsM; ++i)
#pragma unroll
                for (int j = 0; j < kFragsN; ++j) wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
        }
        // Before the next step overwrites xs/ws, and, after the last step, before cs (which
        // aliases them) is written.
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < kFragsM; ++i)
#pragma unroll
        for (int j = 0; j < kFragsN; ++j)
            wmma::store_matrix_sync(&cs[warpRow + kWmma * i][warpCol + kWmma * j], acc[i][j], kTcLdC,
                                    wmma::mem_row_major);
    __syncthreads();
    for (int i = threadIdx.x; i < kTM * kTcTileN; i += kTcThreads) {
        const int r = i / kTcTileN, c = i % kTcTileN;
        const int32_t row = rowBase + r, col = colBase + c;
        if (row < m && col < n)
            y[static_cast<int64_t>(row) * n + col] = __float2half_rn(cs[r][c] + (bias ? bias[col] : 0.0f));
    }
}

// Before any launch: cudaErrorInvalidValue for what hyperlinearCheck refuses and for null
// operands; `launch` false (with cudaSuccess) when there is nothing to compute (m == 0).
template <typename T>
cudaError_t checkCall(const T* x, const int32_t* codes, const float* rowScale, const T* y, int32_t m,
                      const HyperLinearParams& params, bool& launch) {
    launch = false;
    if (hyperlinearCheck(m, params) != kHyperLinearOk) return cudaErrorInvalidValue;
    if (m == 0) return cudaSuccess;
    if (x == nullptr || codes == nullptr || rowScale == nullptr || y == nullptr) return cudaErrorInvalidValue;
    launch = true;
    return cudaSuccess;
}

constexpr int64_t kMaxGridY = 65535;

template <typename T>
cudaError_t launchCudaCores(const T* x, const int32_t* codes, const float* rowScale, const float* bias, T* y,
                            int32_t m, const HyperLinearParams& params, cudaStream_t stream) {
    bool launch = false;
    if (const cudaError_t status = checkCall(x, codes, rowScale, y, m, params, launch); !launch) return status;
    const int64_t rowTiles = (static_cast<int64_t>(m) + kTileM - 1) / kTileM;
    if (rowTiles > kMaxGridY) return cudaErrorInvalidValue;
    const dim3 grid((params.out_features + kTileN - 1) / kTileN, static_cast<unsigned>(rowTiles));
    hyperlinearKernel<T><<<grid, kThreads, 0, stream>>>(x, codes, rowScale, bias, y, m, params);
    return cudaGetLastError();
}

template <int kWarpsM, int kFragsM>
cudaError_t launchTensorCores(const __half* x, const int32_t* codes, const float* rowScale, const float* bias,
                              __half* y, int32_t m, const HyperLinearParams& params, cudaStream_t stream) {
    constexpr int kTM = kWarpsM * kFragsM * kWmma;
    const int64_t rowTiles = (static_cast<int64_t>(m) + kTM - 1) / kTM;
    if (rowTiles > kMaxGridY) return cudaErrorInvalidValue;
    const dim3 grid((params.out_features + kTcTileN - 1) / kTcTileN, static_cast<unsigned>(rowTiles));
    const bool vecX = params.in_features % 8 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0;
    if (vecX)
        hyperlinearTensorCoreKernel<kWarpsM, kFragsM, true><<<grid, kTcThreads, 0, stream>>>(
            x, codes, rowScale, bias, y, m, params);
    else
        hyperlinearTensorCoreKernel<kWarpsM, kFragsM, false><<<grid, kTcThreads, 0, stream>>>(
            x, codes, rowScale, bias, y, m, params);
    return cudaGetLastError();
}

// tileM: 0 chooses; 1 forces the CUDA-core kernel; 32, 64 or 128 force that tensor-core row
// tile (tests and benchmarks reach every path whatever the GPU).
cudaError_t launchF16(const __half* x, const int32_t* codes, const float* rowScale, const float* bias, __half* y,
                      int32_t m, const HyperLinearParams& params, cudaStream_t stream, int tileM) {
    if (tileM != 0 && tileM != 1 && tileM != 32 && tileM != 64 && tileM != 128) return cudaErrorInvalidValue;
    bool launch = false;
    if (const cudaError_t status = checkCall(x, codes, rowScale, y, m, params, launch); !launch) return status;
    if (tileM == 0) {
        int device = 0, sms = 0;
        cudaError_t status = cudaGetDevice(&device);
        if (status == cudaSuccess) status = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
        if (status != cudaSuccess) return status;
        // Below two blocks per SM the GPU idles while each block decodes its columns over all of
        // K; above it, a taller tile saves decodes.
        const int64_t colTiles = (params.out_features + kTcTileN - 1) / kTcTileN;
        const int64_t wanted = 2 * static_cast<int64_t>(sms);
        auto blocks = [&](int64_t tm) { return colTiles * ((m + tm - 1) / tm); };
        tileM = blocks(128) >= wanted ? 128 : blocks(64) >= wanted ? 64 : 32;
    }
    switch (tileM) {
    case 1: return launchCudaCores(x, codes, rowScale, bias, y, m, params, stream);
    case 32: return launchTensorCores<2, 1>(x, codes, rowScale, bias, y, m, params, stream);
    case 64: return launchTensorCores<4, 1>(x, codes, rowScale, bias, y, m, params, stream);
    case 128: return launchTensorCores<4, 2>(x, codes, rowScale, bias, y, m, params, stream);
    default: return cudaErrorInvalidValue;
    }
}

}  // namespace

HyperLinearStatus hyperlinearCheck(int32_t m, const HyperLinearParams& params) {
    if (m < 0) return kHyperLinearBadRows;
    if (params.in_features <= 0 || params.out_features <= 0) return kHyperLinearBadFeatures;
    if (params.codebook_size < 1 || params.codebook_size > kMaxCodebookSize) return kHyperLinearBadCodebook;
    // ceil(sqrt(U)) in integers: (side - 1)^2 < U <= side^2. The decode takes the lattice side
    // as given, so a wrong one would decode other weights than the torch reference does.
    const int64_t side = params.lattice_side, u = params.codebook_size;
    if (side <= 0 || side * side < u || (side - 1) * (side - 1) >= u) return kHyperLinearBadLatticeSide;
    if (params.gain_count < 1 || params.gain_count > kMaxRings + 1) return kHyperLinearBadGainCount;
    return kHyperLinearOk;
}

const char* hyperlinearStatusName(int32_t status) {
    switch (status) {
    case kHyperLinearOk: return "ok";
    case kHyperLinearBadRows: return "the row count m must be >= 0";
    case kHyperLinearBadFeatures: return "in_features and out_features must be > 0";
    case kHyperLinearBadCodebook: return "codebook_size must be in 1..65536";
    case kHyperLinearBadLatticeSide: return "lattice_side must be ceil(sqrt(codebook_size)) (> 0)";
    case kHyperLinearBadGainCount: return "gain_count must be in 1..4 (at most 3 rings)";
    case kHyperLinearNoParams: return "params is a null pointer";
    default: return "unknown HyperLinear status";
    }
}

cudaError_t hyperlinearForwardF32(const float* x, const int32_t* codes, const float* row_scale, const float* bias,
                                  float* y, int32_t m, const HyperLinearParams& params, cudaStream_t stream) {
    return launchCudaCores(x, codes, row_scale, bias, y, m, params, stream);
}

cudaError_t hyperlinearForwardF16(const __half* x, const int32_t* codes, const float* row_scale, const float* bias,
                                  __half* y, int32_t m, const HyperLinearParams& params, cudaStream_t stream) {
    return launchF16(x, codes, row_scale, bias, y, m, params, stream, 0);
}

}  // namespace samedge

// C entry points for tests and benchmarks that load the kernel with ctypes (no TensorRT, no
// PyTorch extension build): dtype 0 = float32, 1 = float16; pointers are device pointers.
extern "C" int samedge_hyperlinear_forward(int dtype, const void* x, const int32_t* codes, const float* row_scale,
                                           const float* bias, void* y, int32_t m,
                                           const samedge::HyperLinearParams* params, void* stream) {
    if (params == nullptr) return static_cast<int>(cudaErrorInvalidValue);
    const auto s = static_cast<cudaStream_t>(stream);
    const cudaError_t status =
        dtype == 0 ? samedge::hyperlinearForwardF32(static_cast<const float*>(x), codes, row_scale, bias,
                                                    static_cast<float*>(y), m, *params, s)
                   : samedge::hyperlinearForwardF16(static_cast<const __half*>(x), codes, row_scale, bias,
                                                    static_cast<__half*>(y), m, *params, s);
    return static_cast<int>(status);
}

// The same with the path forced (tile_m as launchF16 takes it): float32 accepts 0 and 1 only,
// its one kernel being the CUDA-core one.
extern "C" int samedge_hyperlinear_forward_path(int dtype, int tile_m, const void* x, const int32_t* codes,
                                                const float* row_scale, const float* bias, void* y, int32_t m,
                                                const samedge::HyperLinearParams* params, void* stream) {
    if (params == nullptr) return static_cast<int>(cudaErrorInvalidValue);
    const auto s = static_cast<cudaStream_t>(stream);
    if (dtype == 0) {
        if (tile_m != 0 && tile_m != 1) return static_cast<int>(cudaErrorInvalidValue);
        return static_cast<int>(samedge::hyperlinearForwardF32(static_cast<const float*>(x), codes, row_scale, bias,
                                                               static_cast<float*>(y), m, *params, s));
    }
    return static_cast<int>(samedge::launchF16(static_cast<const __half*>(x), codes, row_scale, bias,
                                               static_cast<__half*>(y), m, *params, s, tile_m));
}

extern "C" int samedge_hyperlinear_check(int32_t m, const samedge::HyperLinearParams* params) {
    if (params == nullptr) return samedge::kHyperLinearNoParams;
    return samedge::hyperlinearCheck(m, *params);
}

extern "C" const char* samedge_hyperlinear_status_name(int status) { return samedge::hyperlinearStatusName(status); }

extern "C" int samedge_hyperlinear_decode_host(const int32_t* codes, const float* row_scale,
                                               const samedge::HyperLinearParams* params, float* weight) {
    if (params == nullptr) return samedge::kHyperLinearNoParams;
    const samedge::HyperLinearParams& p = *params;
    if (const samedge::HyperLinearStatus status = samedge::hyperlinearCheck(1, p); status != samedge::kHyperLinearOk)
        return status;
    const int32_t wordsPerRow = ((p.in_features + 1) / 2 + 1) / 2;
    for (int32_t n = 0; n < p.out_features; ++n)
        for (int32_t w = 0; w < wordsPerRow; ++w) {
            float weights[4];
            samedge::decodeWord(codes, row_scale, p, n, w, wordsPerRow, weights);
            for (int j = 0; j < 4 && 4 * w + j < p.in_features; ++j)
                weight[static_cast<int64_t>(n) * p.in_features + 4 * w + j] = weights[j];
        }
    return samedge::kHyperLinearOk;
}
