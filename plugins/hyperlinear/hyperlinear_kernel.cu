// HyperLinear on the GPU (declarations and the code layout in hyperlinear_kernel.cuh).
//
// The decode: index p of the code stream starts at bit p * b (64-bit: a vit_h layer's stream
// has 2^26 bits, and offsets grow past 2^31 with larger layers); a thread decodes 4
// consecutive pairs of one row, whose 4 b <= 64 bits span at most 3 words starting at
// (p * b) / 32, so it loads those 3 words and takes each index out of the two words it lies
// in with one funnel shift and a mask. The index names a float2 of the pair table (read
// through the read-only cache; 51 KB at U = 1600, K = 3, so it stays cache-resident), which is
// multiplied by the row's scale: the same one IEEE multiply as reference.decode_linear.
//
// Three ways to the product, all sharing that decode (decodeGroup):
//
// * fp32 on CUDA cores (hyperlinearKernel): a block of 256 threads computes a 64 x 64 tile of
//   Y (4 x 4 outputs a thread), walking K in steps of 32 through shared memory.
// * fp16 fused on tensor cores (hyperlinearTensorCoreKernel, WMMA m16n16k16, half inputs,
//   float accumulators): a block of 8 warps computes a TM x 64 tile of Y, TM = 128, 64 or 32.
//   Each K step of 32 stages X [TM x 32] and W [64 x 32], the weights decoded in float32 and
//   rounded once to half as they go into shared memory (stored ws[n][k], which is B = W^T read
//   column-major). Padding rows and columns (M, N and K tails, odd K) are zeros in shared
//   memory, so every WMMA tile is full. Bias is added in fp32 after the accumulators are
//   staged through shared memory, where the bounds checks and the half conversion happen.
// * fp16 for large M (hyperlinearDecodeKernel + cuBLASLt): W is decoded once into the
//   workspace as half [N, ldw] and multiplied by cuBLASLt (fp16 in, fp32 compute), its bias
//   epilogue adding the bias (rounded to half, as that epilogue takes it for half outputs).
//
// Both fused kernels prefetch the next K step into registers while the tensor cores or FMAs
// work on the current one: X's values and W's raw code words are loaded before the product,
// and the words are decoded (the table gathers) and stored after it.
//
// Why the fused kernels do not keep decoded W tiles across more row tiles than TM: with the
// table, decoding a weight costs about 3/8 of a word load, a funnel shift, a mask and an
// L1-resident gather per pair, about what staging a dense half weight tile from global
// memory costs a dense GEMM, which also re-stages its B tile for every row tile. Holding a
// block's decoded 64-column strip over all of K for several row tiles would need
// 64 * K * 2 bytes of shared memory (384 KB at K = 3072): more than any GPU has. Where many
// row tiles share W, the large-M path decodes it exactly once instead.
//
// Before any CUDA call the launchers check the call (hyperlinearCheck, the table, null
// operands, the path): a refused call returns cudaErrorInvalidValue and m == 0 returns
// cudaSuccess, both without launching. The decode is __host__ __device__ so that
// samedge_hyperlinear_decode_host runs the very same code on the CPU (tests without a GPU).

#include "hyperlinear_kernel.cuh"

#include <cublasLt.h>
#include <mma.h>

#include <cstring>
#include <new>
#include <vector>

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 700
#error "the HyperLinear kernel uses WMMA half tensor cores: compile for sm_70 or newer"
#endif

namespace samedge {
namespace {

static_assert(kWordBits == 32, "the stream is read as 32-bit words, offsets split by >> 5 and & 31");

constexpr int kTileM = 64;
constexpr int kTileN = 64;
constexpr int kTileK = 32;  // weights along K per step: 16 pairs, 4 groups
constexpr int kThreads = 256;
constexpr int kGroupPairs = 4;  // pairs one thread decodes at once: 8 weights, 16 bytes of half
constexpr int kGroupsPerStep = kTileK / (2 * kGroupPairs);
static_assert(kTileN * kGroupsPerStep == kThreads, "one group of W per thread and K step");

// Paths of samedge_hyperlinear_forward_path; 32, 64, 128 are the tensor-core row tiles.
constexpr int kPathAuto = 0;
constexpr int kPathCudaCores = 1;
constexpr int kPathGemm = 2;

__device__ __forceinline__ float toFloat(float v) { return v; }
__device__ __forceinline__ float toFloat(__half v) { return __half2float(v); }
__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(__half* p, float v) { *p = __float2half_rn(v); }

// IEEE float32 operations rounded to nearest, each on its own. On the device the intrinsics
// keep nvcc from contracting a multiply and an add into an FMA; the host code (the pair table
// and the host copy of the decode) relies on the build passing -ffp-contract=off to the host
// compiler (harness.py and CMakeLists.txt do): GCC contracts across statements by default
// wherever the target has an FMA instruction (aarch64: every Jetson).
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

// The low 32 bits of (hi:lo) >> shift, shift in 0 .. 31.
__host__ __device__ __forceinline__ uint32_t funnelRight(uint32_t lo, uint32_t hi, uint32_t shift) {
#if defined(__CUDA_ARCH__)
    return __funnelshift_r(lo, hi, shift);
#else
    return static_cast<uint32_t>(((static_cast<uint64_t>(hi) << 32) | lo) >> shift);
#endif
}

template <typename T>
__host__ __device__ __forceinline__ T readOnly(const T* p) {
#if defined(__CUDA_ARCH__)
    return __ldg(p);
#else
    return *p;
#endif
}

// What the decode reads, resolved once on the host for a launch.
struct Codes {
    const int32_t* words;
    const float2* table;
    const float* rowScale;
    int64_t wordCount;
    int32_t tableSize;    // > 0 (checked)
    int32_t pairsPerRow;  // ceil(K / 2)
    int32_t bits;
    int32_t inFeatures;
    int32_t outFeatures;
};

Codes makeCodes(const int32_t* words, const float* table, const float* rowScale, const HyperLinearParams& p) {
    return Codes{words, reinterpret_cast<const float2*>(table), rowScale, hyperlinearWordCount(p),
                 hyperlinearTableSize(p), (p.in_features + 1) / 2, p.index_bits, p.in_features, p.out_features};
}

// The code words of a group: the 3 words from the one holding the group's first bit, and
// that bit's place in it. Loaded apart from the decode so that the fused kernels can have
// these loads in flight while the tensor cores work.
struct GroupWords {
    uint32_t w0, w1, w2;
    uint32_t shift;
};

__host__ __device__ __forceinline__ uint32_t loadWord(const Codes& c, int64_t word) {
    // The last indices end in the last word; the words after it are not there.
    return word < c.wordCount ? static_cast<uint32_t>(readOnly(c.words + word)) : 0u;
}

// Pairs pair0 .. pair0 + 3 of output row `row`. Groups past N or past the row's pairs (a K
// tail) load nothing: their words would be the next row's, and decodeGroup zeroes them anyway.
__host__ __device__ __forceinline__ GroupWords loadGroup(const Codes& c, int32_t row, int32_t pair0) {
    if (row >= c.outFeatures || pair0 >= c.pairsPerRow) return GroupWords{0u, 0u, 0u, 0u};
    const int64_t bit = (static_cast<int64_t>(row) * c.pairsPerRow + pair0) * c.bits;
    const int64_t word = bit >> 5;
    return GroupWords{loadWord(c, word), loadWord(c, word + 1), loadWord(c, word + 2),
                      static_cast<uint32_t>(bit & 31)};
}

// Index j (0..3) of a group, clamped to the table. Its first bit is at shift + j b <= 31 + 48
// = 79 of the 96 loaded, so it starts in word 0, 1 or 2 and ends by bit 95: it never needs a
// fourth word. Selects rather than an array, which the compiler would put in local memory.
__host__ __device__ __forceinline__ int32_t groupIndex(const Codes& c, const GroupWords& g, int j) {
    const uint32_t offset = g.shift + static_cast<uint32_t>(j * c.bits);
    const uint32_t word = offset >> 5;
    const uint32_t lo = word == 0 ? g.w0 : word == 1 ? g.w1 : g.w2;
    const uint32_t hi = word == 0 ? g.w1 : word == 1 ? g.w2 : 0u;
    const uint32_t index = funnelRight(lo, hi, offset & 31) & ((1u << c.bits) - 1u);
    const uint32_t last = static_cast<uint32_t>(c.tableSize - 1);
    return static_cast<int32_t>(index < last ? index : last);  // damaged codes: see the header
}

// The 8 weights of a group: columns 2 pair0 .. 2 pair0 + 7 of W's row `row`, the table pair
// times the row scale. Weights past N, past the row's pairs and past K (the odd-K pair's
// second weight) are zero, so they contribute nothing to a tile product.
__host__ __device__ __forceinline__ void decodeGroup(const Codes& c, const GroupWords& g, int32_t row, int32_t pair0,
                                                     float (&w)[2 * kGroupPairs]) {
#pragma unroll
    for (int j = 0; j < 2 * kGroupPairs; ++j) w[j] = 0.0f;
    if (row >= c.outFeatures) return;
    const float scale = readOnly(c.rowScale + row);
#pragma unroll
    for (int j = 0; j < kGroupPairs; ++j) {
        const int32_t pair = pair0 + j;
        if (pair >= c.pairsPerRow) break;
        const float2 t = readOnly(c.table + groupIndex(c, g, j));
        w[2 * j] = mulRn(t.x, scale);
        if (2 * pair + 1 < c.inFeatures) w[2 * j + 1] = mulRn(t.y, scale);
    }
}

__device__ __forceinline__ uint4 packHalves(const float (&w)[2 * kGroupPairs]) {
    uint4 v;
    __half2 h[4] = {__floats2half2_rn(w[0], w[1]), __floats2half2_rn(w[2], w[3]), __floats2half2_rn(w[4], w[5]),
                    __floats2half2_rn(w[6], w[7])};
    static_assert(sizeof(h) == sizeof(v), "8 halves are 16 bytes");
    memcpy(&v, h, sizeof(v));
    return v;
}

// ---- fp32 (and fp16) on CUDA cores --------------------------------------------------------

constexpr int kXPerThread = kTileM * kTileK / kThreads;  // X values a thread stages per step

template <typename T>
__global__ void __launch_bounds__(kThreads)
hyperlinearKernel(const T* __restrict__ x, Codes codes, const float* __restrict__ bias, T* __restrict__ y, int32_t m) {
    __shared__ float xs[kTileK][kTileM + 1];  // +1: no bank conflicts on the transposed store
    __shared__ float ws[kTileK][kTileN + 1];

    const int32_t k = codes.inFeatures;
    const int32_t n = codes.outFeatures;
    const int32_t rowBase = blockIdx.y * kTileM;
    const int32_t colBase = blockIdx.x * kTileN;
    const int tx = threadIdx.x % 16;  // output columns tx, tx + 16, ...
    const int ty = threadIdx.x / 16;  // output rows ty, ty + 16, ...
    // This thread's group of W in every step: row wr of the tile, pairs 4 wg .. 4 wg + 3 of the step.
    const int wr = threadIdx.x / kGroupsPerStep, wg = threadIdx.x % kGroupsPerStep;

    float xr[kXPerThread];
    GroupWords words;
    auto prefetch = [&](int32_t k0) {
#pragma unroll
        for (int s = 0; s < kXPerThread; ++s) {
            const int i = threadIdx.x + kThreads * s;
            const int32_t row = rowBase + i / kTileK, col = k0 + i % kTileK;  // a warp reads 32 consecutive values
            xr[s] = (row < m && col < k) ? toFloat(x[static_cast<int64_t>(row) * k + col]) : 0.0f;
        }
        words = loadGroup(codes, colBase + wr, k0 / 2 + kGroupPairs * wg);
    };
    auto commit = [&](int32_t k0) {
#pragma unroll
        for (int s = 0; s < kXPerThread; ++s) {
            const int i = threadIdx.x + kThreads * s;
            xs[i % kTileK][i / kTileK] = xr[s];
        }
        float w[2 * kGroupPairs];
        decodeGroup(codes, words, colBase + wr, k0 / 2 + kGroupPairs * wg, w);
#pragma unroll
        for (int j = 0; j < 2 * kGroupPairs; ++j) ws[2 * kGroupPairs * wg + j][wr] = w[j];
    };

    float acc[4][4] = {};
    prefetch(0);
    commit(0);
    __syncthreads();
    for (int32_t k0 = 0; k0 < k; k0 += kTileK) {
        const bool more = k0 + kTileK < k;
        if (more) prefetch(k0 + kTileK);
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
        __syncthreads();  // every warp is done with xs/ws before they are overwritten
        if (more) {
            commit(k0 + kTileK);
            __syncthreads();
        }
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

// ---- fp16 fused on tensor cores ------------------------------------------------------------

constexpr int kTcWarps = 8;
constexpr int kTcThreads = 32 * kTcWarps;
constexpr int kTcTileN = 64;
constexpr int kTcTileK = 32;                // two WMMA k-steps
constexpr int kTcLd = kTcTileK + 8;         // halves a row: 80 bytes, so the 8 rows of an
                                            // 8 x 16-byte fragment load hit distinct banks
constexpr int kTcLdC = kTcTileN + 4;        // floats a row of the staged accumulators
constexpr int kWmma = 16;                   // m16n16k16
constexpr int kChunk = 8;                   // X is staged 8 halves (16 bytes) at a time
constexpr int kChunksPerRow = kTcTileK / kChunk;
static_assert(kTcTileN * kGroupsPerStep == kTcThreads && kTcTileK == kTileK, "one group of W per thread");

// TM = kWarpsM * kFragsM * 16 rows; the 8 warps form a kWarpsM x (8 / kWarpsM) grid and each
// holds kFragsM x kFragsN accumulator fragments. kVecX: X rows are 16-byte aligned and K is
// a multiple of 8, so X is loaded 8 halves at a time.
template <int kWarpsM, int kFragsM, bool kVecX>
__global__ void __launch_bounds__(kTcThreads, 2)
hyperlinearTensorCoreKernel(const __half* __restrict__ x, Codes codes, const float* __restrict__ bias,
                            __half* __restrict__ y, int32_t m) {
    using namespace nvcuda;
    constexpr int kWarpsN = kTcWarps / kWarpsM;
    constexpr int kFragsN = kTcTileN / (kWmma * kWarpsN);
    constexpr int kTM = kWarpsM * kFragsM * kWmma;
    constexpr int kXChunks = kTM * kChunksPerRow;  // X chunks a step
    constexpr int kXChunksPerThread = (kXChunks + kTcThreads - 1) / kTcThreads;
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

    const int32_t k = codes.inFeatures;
    const int32_t n = codes.outFeatures;
    const int32_t rowBase = blockIdx.y * kTM;
    const int32_t colBase = blockIdx.x * kTcTileN;
    const int warp = threadIdx.x / 32;
    const int warpRow = (warp % kWarpsM) * kFragsM * kWmma;
    const int warpCol = (warp / kWarpsM) * kFragsN * kWmma;
    const int wr = threadIdx.x / kGroupsPerStep, wg = threadIdx.x % kGroupsPerStep;

    uint4 xr[kXChunksPerThread];
    GroupWords words;
    // X[rowBase .. +kTM, k0 .. +32] and W's code words for step k0 into registers; zeros past M and K.
    auto prefetch = [&](int32_t k0) {
#pragma unroll
        for (int s = 0; s < kXChunksPerThread; ++s) {
            const int i = threadIdx.x + kTcThreads * s;
            const int32_t row = rowBase + i / kChunksPerRow, col = k0 + (i % kChunksPerRow) * kChunk;
            uint4 v = make_uint4(0u, 0u, 0u, 0u);
            if (i < kXChunks && row < m) {
                const __half* src = x + static_cast<int64_t>(row) * k + col;
                if constexpr (kVecX) {
                    // K % 8 == 0 and col % 8 == 0: col < k means all 8 halves are inside the row.
                    if (col < k) v = *reinterpret_cast<const uint4*>(src);
                } else {
                    __half h[kChunk];
#pragma unroll
                    for (int e = 0; e < kChunk; ++e) h[e] = col + e < k ? src[e] : __float2half_rn(0.0f);
                    memcpy(&v, h, sizeof(v));
                }
            }
            xr[s] = v;
        }
        words = loadGroup(codes, colBase + wr, k0 / 2 + kGroupPairs * wg);
    };
    // The registers into xs / ws, W decoded in float32 and rounded once to half.
    auto commit = [&](int32_t k0) {
#pragma unroll
        for (int s = 0; s < kXChunksPerThread; ++s) {
            const int i = threadIdx.x + kTcThreads * s;
            if (i < kXChunks) *reinterpret_cast<uint4*>(&xs[i / kChunksPerRow][(i % kChunksPerRow) * kChunk]) = xr[s];
        }
        float w[2 * kGroupPairs];
        decodeGroup(codes, words, colBase + wr, k0 / 2 + kGroupPairs * wg, w);
        // 16-byte aligned: 80 wr + 16 wg bytes from ws, itself at a multiple of 32.
        *reinterpret_cast<uint4*>(&ws[wr][2 * kGroupPairs * wg]) = packHalves(w);
    };

    wmma::fragment<wmma::accumulator, kWmma, kWmma, kWmma, float> acc[kFragsM][kFragsN];
#pragma unroll
    for (int i = 0; i < kFragsM; ++i)
#pragma unroll
        for (int j = 0; j < kFragsN; ++j) wmma::fill_fragment(acc[i][j], 0.0f);

    prefetch(0);
    commit(0);
    __syncthreads();
    for (int32_t k0 = 0; k0 < k; k0 += kTcTileK) {
        const bool more = k0 + kTcTileK < k;
        if (more) prefetch(k0 + kTcTileK);
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
        if (more) {
            commit(k0 + kTcTileK);
            __syncthreads();
        }
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

// ---- fp16 for large M: W decoded once, then cuBLASLt -----------------------------------------

// W [N, ldw] as half, one group (16 bytes) a thread, consecutive threads along a row so that
// both the code words read and the weights written are contiguous; and the bias as half.
__global__ void __launch_bounds__(kThreads)
hyperlinearDecodeKernel(Codes codes, __half* __restrict__ w, int32_t ldw, const float* __restrict__ bias,
                        __half* __restrict__ biasHalf) {
    const int32_t groupsPerRow = (codes.pairsPerRow + kGroupPairs - 1) / kGroupPairs;
    const int64_t groups = static_cast<int64_t>(codes.outFeatures) * groupsPerRow;
    const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
    const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    for (int64_t i = first; i < groups; i += stride) {
        const int32_t row = static_cast<int32_t>(i / groupsPerRow);
        const int32_t pair0 = static_cast<int32_t>(i % groupsPerRow) * kGroupPairs;
        float v[2 * kGroupPairs];
        decodeGroup(codes, loadGroup(codes, row, pair0), row, pair0, v);
        // 2 pair0 + 8 <= ldw (both multiples of 8, 2 pair0 < K + 1): inside the row's padding at most.
        *reinterpret_cast<uint4*>(w + static_cast<int64_t>(row) * ldw + 2 * pair0) = packHalves(v);
    }
    if (bias != nullptr)
        for (int64_t i = first; i < codes.outFeatures; i += stride) biasHalf[i] = __float2half_rn(bias[i]);
}

// The largest power of two <= 256 that divides the address: what cuBLASLt may assume of it.
uint32_t alignmentOf(const void* p) {
    const uintptr_t address = reinterpret_cast<uintptr_t>(p);
    uint32_t alignment = 256;
    while (alignment > 1 && address % alignment != 0) alignment /= 2;
    return alignment;
}

cudaError_t toCudaError(cublasStatus_t status) {
    switch (status) {
    case CUBLAS_STATUS_SUCCESS: return cudaSuccess;
    case CUBLAS_STATUS_ALLOC_FAILED: return cudaErrorMemoryAllocation;
    case CUBLAS_STATUS_INVALID_VALUE: return cudaErrorInvalidValue;
    case CUBLAS_STATUS_NOT_SUPPORTED: return cudaErrorNotSupported;
    case CUBLAS_STATUS_ARCH_MISMATCH: return cudaErrorNoKernelImageForDevice;
    default: return cudaErrorUnknown;
    }
}

}  // namespace

// The cuBLASLt handle and the plan of the last call: descriptors and the algorithm the
// heuristic picked, rebuilt only when the shape, the bias or an operand's alignment changes
// (the heuristic costs host time every call otherwise).
struct HyperLinearGemm {
    cublasLtHandle_t handle = nullptr;
    cublasStatus_t lastStatus = CUBLAS_STATUS_SUCCESS;
    struct Key {
        int32_t m = -1, n = 0, k = 0, ldw = 0;
        bool bias = false;
        uint32_t alignX = 0, alignY = 0;
        bool operator==(const Key& o) const {
            return m == o.m && n == o.n && k == o.k && ldw == o.ldw && bias == o.bias && alignX == o.alignX &&
                   alignY == o.alignY;
        }
    } key;
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
    cublasLtMatmulAlgo_t algo{};
    bool planned = false;

    void releasePlan() {
        if (op) cublasLtMatmulDescDestroy(op);
        if (a) cublasLtMatrixLayoutDestroy(a);
        if (b) cublasLtMatrixLayoutDestroy(b);
        if (d) cublasLtMatrixLayoutDestroy(d);
        op = nullptr;
        a = b = d = nullptr;
        planned = false;
        key = Key{};
    }

    bool failed(cublasStatus_t status) {
        if (status == CUBLAS_STATUS_SUCCESS) return false;
        lastStatus = status;
        return true;
    }

    bool setBias(const void* biasHalf) {
        return !failed(
            cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &biasHalf, sizeof(biasHalf)));
    }

    // Column-major, as cuBLASLt counts: D [N, M] (= Y [M, N] row-major) = op(A) B with A = W
    // stored [K, N] (= W [N, ldw] row-major, transposed by the op) and B = X [K, M] (= X [M, K]).
    // "TN", the layout cuBLAS's tensor-core kernels prefer.
    cudaError_t plan(const Key& wanted, const void* biasHalf, size_t scratchBytes) {
        if (planned && key == wanted) return cudaSuccess;
        releasePlan();
        const cublasOperation_t transA = CUBLAS_OP_T, transB = CUBLAS_OP_N;
        const cublasLtEpilogue_t epilogue = wanted.bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
        const cudaDataType_t biasType = CUDA_R_16F;
        if (failed(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F)) ||
            failed(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &transA, sizeof(transA))) ||
            failed(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &transB, sizeof(transB))) ||
            failed(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue))) ||
            failed(cublasLtMatrixLayoutCreate(&a, CUDA_R_16F, wanted.k, wanted.n, wanted.ldw)) ||
            failed(cublasLtMatrixLayoutCreate(&b, CUDA_R_16F, wanted.k, wanted.m, wanted.k)) ||
            failed(cublasLtMatrixLayoutCreate(&d, CUDA_R_16F, wanted.n, wanted.m, wanted.n))) {
            const cudaError_t error = toCudaError(lastStatus);
            releasePlan();
            return error;
        }
        // The heuristic reads the bias pointer's alignment, so it is set before it (and again
        // every call: the workspace need not be at the same address each time).
        if (wanted.bias &&
            (failed(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &biasType,
                                                   sizeof(biasType))) ||
             !setBias(biasHalf))) {
            const cudaError_t error = toCudaError(lastStatus);
            releasePlan();
            return error;
        }
        cublasLtMatmulPreference_t preference = nullptr;
        cublasLtMatmulHeuristicResult_t result{};
        int found = 0;
        const uint64_t scratch = scratchBytes;
        const uint32_t alignA = kWorkspaceAlignment;
        bool ok = !failed(cublasLtMatmulPreferenceCreate(&preference)) &&
                  !failed(cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                               &scratch, sizeof(scratch))) &&
                  !failed(cublasLtMatmulPreferenceSetAttribute(
                      preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &alignA, sizeof(alignA))) &&
                  !failed(cublasLtMatmulPreferenceSetAttribute(
                      preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &wanted.alignX, sizeof(wanted.alignX))) &&
                  !failed(cublasLtMatmulPreferenceSetAttribute(
                      preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &wanted.alignY, sizeof(wanted.alignY))) &&
                  !failed(cublasLtMatmulPreferenceSetAttribute(
                      preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &wanted.alignY, sizeof(wanted.alignY))) &&
                  !failed(cublasLtMatmulAlgoGetHeuristic(handle, op, a, b, d, d, preference, 1, &result, &found));
        if (preference) cublasLtMatmulPreferenceDestroy(preference);
        if (ok && (found == 0 || result.state != CUBLAS_STATUS_SUCCESS)) {
            lastStatus = CUBLAS_STATUS_NOT_SUPPORTED;
            ok = false;
        }
        if (!ok) {
            const cudaError_t error = toCudaError(lastStatus);
            releasePlan();
            return error;
        }
        algo = result.algo;
        key = wanted;
        planned = true;
        return cudaSuccess;
    }
};

namespace {

struct WorkspaceParts {
    __half* weights;
    __half* bias;
    void* scratch;
};

WorkspaceParts splitWorkspace(void* workspace, const HyperLinearParams& p) {
    // The layout hyperlinearWorkspaceSize counts: W, the bias, cuBLASLt's scratch.
    const size_t n = static_cast<size_t>(p.out_features);
    const uintptr_t base = hyperlinearAlignUp(reinterpret_cast<uintptr_t>(workspace));
    const uintptr_t bias = base + hyperlinearAlignUp(sizeof(__half) * n * hyperlinearDecodedStride(p));
    const uintptr_t scratch = bias + hyperlinearAlignUp(sizeof(__half) * n);
    return {reinterpret_cast<__half*>(base), reinterpret_cast<__half*>(bias), reinterpret_cast<void*>(scratch)};
}

// Before any launch: cudaErrorInvalidValue for what hyperlinearCheck refuses, a table of the
// wrong size or alignment, and null operands; `launch` false (with cudaSuccess) when there
// is nothing to compute (m == 0).
template <typename T>
cudaError_t checkCall(const T* x, const int32_t* codes, const float* table, int32_t tableSize, const float* rowScale,
                      const T* y, int32_t m, const HyperLinearParams& params, bool& launch) {
    launch = false;
    if (hyperlinearCheck(m, params) != kHyperLinearOk) return cudaErrorInvalidValue;
    if (tableSize != hyperlinearTableSize(params)) return cudaErrorInvalidValue;
    if (m == 0) return cudaSuccess;
    if (x == nullptr || codes == nullptr || table == nullptr || rowScale == nullptr || y == nullptr)
        return cudaErrorInvalidValue;
    if (reinterpret_cast<uintptr_t>(table) % alignof(float2) != 0) return cudaErrorInvalidValue;  // read as float2
    launch = true;
    return cudaSuccess;
}

constexpr int64_t kMaxGridY = 65535;

template <typename T>
cudaError_t launchCudaCores(const T* x, const Codes& codes, const float* bias, T* y, int32_t m, cudaStream_t stream) {
    const int64_t rowTiles = (static_cast<int64_t>(m) + kTileM - 1) / kTileM;
    if (rowTiles > kMaxGridY) return cudaErrorInvalidValue;
    const dim3 grid((codes.outFeatures + kTileN - 1) / kTileN, static_cast<unsigned>(rowTiles));
    hyperlinearKernel<T><<<grid, kThreads, 0, stream>>>(x, codes, bias, y, m);
    return cudaGetLastError();
}

template <int kWarpsM, int kFragsM>
cudaError_t launchTensorCores(const __half* x, const Codes& codes, const float* bias, __half* y, int32_t m,
                              cudaStream_t stream) {
    constexpr int kTM = kWarpsM * kFragsM * kWmma;
    const int64_t rowTiles = (static_cast<int64_t>(m) + kTM - 1) / kTM;
    if (rowTiles > kMaxGridY) return cudaErrorInvalidValue;
    const dim3 grid((codes.outFeatures + kTcTileN - 1) / kTcTileN, static_cast<unsigned>(rowTiles));
    const bool vecX = codes.inFeatures % kChunk == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0;
    if (vecX)
        hyperlinearTensorCoreKernel<kWarpsM, kFragsM, true><<<grid, kTcThreads, 0, stream>>>(x, codes, bias, y, m);
    else
        hyperlinearTensorCoreKernel<kWarpsM, kFragsM, false><<<grid, kTcThreads, 0, stream>>>(x, codes, bias, y, m);
    return cudaGetLastError();
}

// The large-M path. cudaErrorNotSupported (nothing launched) when cuBLASLt has no algorithm
// for the call, so that the automatic choice can fall back to the fused kernel.
cudaError_t launchGemm(const __half* x, const Codes& codes, const float* bias, __half* y, int32_t m,
                       const HyperLinearParams& params, HyperLinearGemm& gemm, void* workspace, cudaStream_t stream) {
    const WorkspaceParts parts = splitWorkspace(workspace, params);
    const int32_t ldw = hyperlinearDecodedStride(params);
    HyperLinearGemm::Key key;
    key.m = m;
    key.n = params.out_features;
    key.k = params.in_features;
    key.ldw = ldw;
    key.bias = bias != nullptr;
    key.alignX = alignmentOf(x);
    key.alignY = alignmentOf(y);
    if (const cudaError_t status = gemm.plan(key, parts.bias, kGemmScratchBytes); status != cudaSuccess) return status;
    if (key.bias && !gemm.setBias(parts.bias)) return toCudaError(gemm.lastStatus);
    const int64_t groupsPerRow = (codes.pairsPerRow + kGroupPairs - 1) / kGroupPairs;
    const int64_t groups = static_cast<int64_t>(params.out_features) * groupsPerRow;
    const int64_t blocks = (groups + kThreads - 1) / kThreads;
    hyperlinearDecodeKernel<<<static_cast<unsigned>(blocks < 65535 ? blocks : 65535), kThreads, 0, stream>>>(
        codes, parts.weights, ldw, bias, parts.bias);
    if (const cudaError_t status = cudaGetLastError(); status != cudaSuccess) return status;
    const float alpha = 1.0f, beta = 0.0f;
    if (gemm.failed(cublasLtMatmul(gemm.handle, gemm.op, &alpha, parts.weights, gemm.a, x, gemm.b, &beta, y, gemm.d, y,
                                   gemm.d, &gemm.algo, parts.scratch, kGemmScratchBytes, stream)))
        return toCudaError(gemm.lastStatus);
    return cudaSuccess;
}

// path: 0 chooses; 1 forces the CUDA-core kernel; 2 decode + cuBLASLt; 32, 64 or 128 that
// tensor-core row tile (tests and benchmarks reach every path whatever the GPU).
cudaError_t launchF16(const __half* x, const int32_t* words, const float* table, int32_t tableSize,
                      const float* rowScale, const float* bias, __half* y, int32_t m, const HyperLinearParams& params,
                      HyperLinearGemm* gemm, void* workspace, size_t workspaceBytes, cudaStream_t stream, int path) {
    if (path != kPathAuto && path != kPathCudaCores && path != kPathGemm && path != 32 && path != 64 && path != 128)
        return cudaErrorInvalidValue;
    bool launch = false;
    if (const cudaError_t status = checkCall(x, words, table, tableSize, rowScale, y, m, params, launch); !launch)
        return status;
    const Codes codes = makeCodes(words, table, rowScale, params);
    // The workspace the large-M path needs, whatever m (hyperlinearWorkspaceSize is 0 below the threshold).
    const size_t gemmBytes = hyperlinearWorkspaceSize(params, kGemmMinRows);
    const bool gemmReady = gemm != nullptr && workspace != nullptr && workspaceBytes >= gemmBytes;
    if (path == kPathGemm) {
        if (!gemmReady) return cudaErrorInvalidValue;
        return launchGemm(x, codes, bias, y, m, params, *gemm, workspace, stream);
    }
    if (path == kPathAuto && m >= kGemmMinRows && gemmReady) {
        const cudaError_t status = launchGemm(x, codes, bias, y, m, params, *gemm, workspace, stream);
        if (status != cudaErrorNotSupported) return status;  // else: no cuBLASLt algorithm, the fused kernel does it
    }
    if (path == kPathAuto) {
        int device = 0, sms = 0;
        cudaError_t status = cudaGetDevice(&device);
        if (status == cudaSuccess) status = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
        if (status != cudaSuccess) return status;
        // A taller tile stages each W tile for more rows; below two blocks per SM the GPU idles
        // while each block walks all of K.
        const int64_t colTiles = (params.out_features + kTcTileN - 1) / kTcTileN;
        const int64_t wanted = 2 * static_cast<int64_t>(sms);
        auto blocks = [&](int64_t tm) { return colTiles * ((m + tm - 1) / tm); };
        path = blocks(128) >= wanted ? 128 : blocks(64) >= wanted ? 64 : 32;
    }
    switch (path) {
    case kPathCudaCores: return launchCudaCores(x, codes, bias, y, m, stream);
    case 32: return launchTensorCores<2, 1>(x, codes, bias, y, m, stream);
    case 64: return launchTensorCores<4, 1>(x, codes, bias, y, m, stream);
    case 128: return launchTensorCores<4, 2>(x, codes, bias, y, m, stream);
    default: return cudaErrorInvalidValue;
    }
}

cudaError_t launchF32(const float* x, const int32_t* words, const float* table, int32_t tableSize,
                      const float* rowScale, const float* bias, float* y, int32_t m, const HyperLinearParams& params,
                      cudaStream_t stream) {
    bool launch = false;
    if (const cudaError_t status = checkCall(x, words, table, tableSize, rowScale, y, m, params, launch); !launch)
        return status;
    return launchCudaCores(x, makeCodes(words, table, rowScale, params), bias, y, m, stream);
}

}  // namespace

HyperLinearStatus hyperlinearCheck(int32_t m, const HyperLinearParams& params) {
    if (m < 0) return kHyperLinearBadRows;
    if (params.in_features <= 0 || params.out_features <= 0) return kHyperLinearBadFeatures;
    if (params.codebook_size < 1 || params.codebook_size > kMaxCodebookSize) return kHyperLinearBadCodebook;
    // ceil(sqrt(U)) in integers: (side - 1)^2 < U <= side^2. The table takes the lattice side
    // as given, so a wrong one would decode other weights than the reference does.
    const int64_t side = params.lattice_side, u = params.codebook_size;
    if (side <= 0 || side * side < u || (side - 1) * (side - 1) >= u) return kHyperLinearBadLatticeSide;
    if (params.gain_count < 1 || params.gain_count > kMaxRings + 1) return kHyperLinearBadGainCount;
    if (params.index_bits < 1 || params.index_bits > kMaxIndexBits) return kHyperLinearBadIndexBits;
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
    case kHyperLinearBadIndexBits: return "index_bits must be in 1..16";
    case kHyperLinearBadTable: return "the pair table must hold codebook_size * gain_count pairs";
    default: return "unknown HyperLinear status";
    }
}

// reference.pair_table, one float32 operation at a time in its order:
//   x = float(theta mod m^2) * L / m^2,  y = float(theta mod m) * L / m,  half = L * 0.5
//   pair = (center[0] + (x - half) * gain, center[1] + (y - half) * gain),  gain = gains[ring]
// for index = theta + U * ring.
HyperLinearStatus hyperlinearPairTable(const HyperLinearParams& p, float* table) {
    if (const HyperLinearStatus status = hyperlinearCheck(0, p); status != kHyperLinearOk) return status;
    const int32_t side = p.lattice_side;
    const int32_t area = side * side;  // <= 256^2: every value below is exact in float32
    const float half = mulRn(p.side, 0.5f);
    for (int32_t ring = 0; ring < p.gain_count; ++ring) {
        const float gain = p.gains[ring];
        for (int32_t theta = 0; theta < p.codebook_size; ++theta) {
            const float x = divRn(mulRn(static_cast<float>(theta % area), p.side), static_cast<float>(area));
            const float y = divRn(mulRn(static_cast<float>(theta % side), p.side), static_cast<float>(side));
            float* entry = table + 2 * (static_cast<int64_t>(ring) * p.codebook_size + theta);
            entry[0] = addRn(p.center[0], mulRn(subRn(x, half), gain));
            entry[1] = addRn(p.center[1], mulRn(subRn(y, half), gain));
        }
    }
    return kHyperLinearOk;
}

cudaError_t hyperlinearTableUpload(const float* hostTable, int32_t size, HyperLinearDeviceTable* table) {
    if (hostTable == nullptr || table == nullptr || size <= 0) return cudaErrorInvalidValue;
    hyperlinearTableFree(table);
    const size_t bytes = sizeof(float) * 2 * static_cast<size_t>(size);
    float* pairs = nullptr;
    cudaError_t status = cudaMalloc(&pairs, bytes);
    if (status != cudaSuccess) return status;
    status = cudaMemcpy(pairs, hostTable, bytes, cudaMemcpyHostToDevice);
    if (status != cudaSuccess) {
        cudaFree(pairs);
        return status;
    }
    table->pairs = pairs;
    table->size = size;
    return cudaSuccess;
}

void hyperlinearTableFree(HyperLinearDeviceTable* table) {
    if (table == nullptr || table->pairs == nullptr) return;
    cudaFree(table->pairs);
    table->pairs = nullptr;
    table->size = 0;
}

cudaError_t hyperlinearGemmCreate(HyperLinearGemm** gemm) {
    if (gemm == nullptr) return cudaErrorInvalidValue;
    *gemm = nullptr;
    auto* created = new (std::nothrow) HyperLinearGemm();
    if (created == nullptr) return cudaErrorMemoryAllocation;
    const cublasStatus_t status = cublasLtCreate(&created->handle);
    if (status != CUBLAS_STATUS_SUCCESS) {
        delete created;
        return toCudaError(status);
    }
    *gemm = created;
    return cudaSuccess;
}

void hyperlinearGemmDestroy(HyperLinearGemm* gemm) {
    if (gemm == nullptr) return;
    gemm->releasePlan();
    if (gemm->handle) cublasLtDestroy(gemm->handle);
    delete gemm;
}

const char* hyperlinearGemmLastStatus(const HyperLinearGemm* gemm) {
    return gemm == nullptr ? "no gemm" : cublasLtGetStatusName(gemm->lastStatus);
}

cudaError_t hyperlinearForwardF32(const float* x, const int32_t* codes, const float* table, int32_t table_size,
                                  const float* row_scale, const float* bias, float* y, int32_t m,
                                  const HyperLinearParams& params, cudaStream_t stream) {
    return launchF32(x, codes, table, table_size, row_scale, bias, y, m, params, stream);
}

cudaError_t hyperlinearForwardF16(const __half* x, const int32_t* codes, const float* table, int32_t table_size,
                                  const float* row_scale, const float* bias, __half* y, int32_t m,
                                  const HyperLinearParams& params, HyperLinearGemm* gemm, void* workspace,
                                  size_t workspace_bytes, cudaStream_t stream) {
    return launchF16(x, codes, table, table_size, row_scale, bias, y, m, params, gemm, workspace, workspace_bytes,
                     stream, kPathAuto);
}

}  // namespace samedge

// C entry points for tests and benchmarks that load the kernel with ctypes (no TensorRT, no
// PyTorch extension build).
extern "C" int samedge_hyperlinear_forward(int dtype, const void* x, const int32_t* codes, const float* table,
                                           int32_t table_size, const float* row_scale, const float* bias, void* y,
                                           int32_t m, const samedge::HyperLinearParams* params, void* gemm,
                                           void* workspace, size_t workspace_bytes, void* stream) {
    return samedge_hyperlinear_forward_path(dtype, samedge::kPathAuto, x, codes, table, table_size, row_scale, bias, y,
                                            m, params, gemm, workspace, workspace_bytes, stream);
}

// Float32 accepts paths 0 and 1 only, its one kernel being the CUDA-core one.
extern "C" int samedge_hyperlinear_forward_path(int dtype, int path, const void* x, const int32_t* codes,
                                                const float* table, int32_t table_size, const float* row_scale,
                                                const float* bias, void* y, int32_t m,
                                                const samedge::HyperLinearParams* params, void* gemm, void* workspace,
                                                size_t workspace_bytes, void* stream) {
    if (params == nullptr) return static_cast<int>(cudaErrorInvalidValue);
    const auto s = static_cast<cudaStream_t>(stream);
    if (dtype == 0) {
        if (path != samedge::kPathAuto && path != samedge::kPathCudaCores)
            return static_cast<int>(cudaErrorInvalidValue);
        return static_cast<int>(samedge::launchF32(static_cast<const float*>(x), codes, table, table_size, row_scale,
                                                   bias, static_cast<float*>(y), m, *params, s));
    }
    return static_cast<int>(samedge::launchF16(static_cast<const __half*>(x), codes, table, table_size, row_scale, bias,
                                               static_cast<__half*>(y), m, *params,
                                               static_cast<samedge::HyperLinearGemm*>(gemm), workspace,
                                               workspace_bytes, s, path));
}

extern "C" int samedge_hyperlinear_check(int32_t m, const samedge::HyperLinearParams* params) {
    if (params == nullptr) return samedge::kHyperLinearNoParams;
    return samedge::hyperlinearCheck(m, *params);
}

extern "C" const char* samedge_hyperlinear_status_name(int status) { return samedge::hyperlinearStatusName(status); }

extern "C" int64_t samedge_hyperlinear_word_count(const samedge::HyperLinearParams* params) {
    return params == nullptr ? -1 : samedge::hyperlinearWordCount(*params);
}

extern "C" int32_t samedge_hyperlinear_table_size(const samedge::HyperLinearParams* params) {
    return params == nullptr ? -1 : samedge::hyperlinearTableSize(*params);
}

extern "C" size_t samedge_hyperlinear_workspace_size(const samedge::HyperLinearParams* params, int64_t m) {
    return params == nullptr ? 0 : samedge::hyperlinearWorkspaceSize(*params, m);
}

extern "C" int32_t samedge_hyperlinear_gemm_min_rows(void) { return samedge::kGemmMinRows; }

extern "C" int samedge_hyperlinear_pair_table(const samedge::HyperLinearParams* params, float* table) {
    if (params == nullptr) return samedge::kHyperLinearNoParams;
    return samedge::hyperlinearPairTable(*params, table);
}

extern "C" int samedge_hyperlinear_gemm_create(void** gemm) {
    if (gemm == nullptr) return static_cast<int>(cudaErrorInvalidValue);
    samedge::HyperLinearGemm* created = nullptr;
    const cudaError_t status = samedge::hyperlinearGemmCreate(&created);
    *gemm = created;
    return static_cast<int>(status);
}

extern "C" void samedge_hyperlinear_gemm_destroy(void* gemm) {
    samedge::hyperlinearGemmDestroy(static_cast<samedge::HyperLinearGemm*>(gemm));
}

extern "C" const char* samedge_hyperlinear_gemm_last_status(const void* gemm) {
    return samedge::hyperlinearGemmLastStatus(static_cast<const samedge::HyperLinearGemm*>(gemm));
}

extern "C" int samedge_hyperlinear_decode_host(const int32_t* codes, const float* table, int32_t table_size,
                                               const float* row_scale, const samedge::HyperLinearParams* params,
                                               float* weight) {
    using namespace samedge;
    if (params == nullptr) return kHyperLinearNoParams;
    const HyperLinearParams& p = *params;
    if (const HyperLinearStatus status = hyperlinearCheck(1, p); status != kHyperLinearOk) return status;
    std::vector<float> computed;
    if (table == nullptr) {
        computed.resize(2 * static_cast<size_t>(hyperlinearTableSize(p)));
        hyperlinearPairTable(p, computed.data());
        table = computed.data();
        table_size = hyperlinearTableSize(p);
    }
    if (table_size != hyperlinearTableSize(p)) return kHyperLinearBadTable;
    const Codes c = makeCodes(codes, table, row_scale, p);
    for (int32_t row = 0; row < p.out_features; ++row)
        for (int32_t pair0 = 0; pair0 < c.pairsPerRow; pair0 += kGroupPairs) {
            float w[2 * kGroupPairs];
            decodeGroup(c, loadGroup(c, row, pair0), row, pair0, w);
            for (int j = 0; j < 2 * kGroupPairs && 2 * pair0 + j < p.in_features; ++j)
                weight[static_cast<int64_t>(row) * p.in_features + 2 * pair0 + j] = w[j];
        }
    return kHyperLinearOk;
}
