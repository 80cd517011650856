// CUDA kernels of SelectiveScan and ImpactScore, and their extern "C" launchers (cuda_kernels.h).
// Only kernels live here: nvcc cannot parse the ORT lite custom-op header (ONNX.md pitfall 8), so the
// ORT glue is cuda_ops.cc, compiled by the host compiler.
//
// One thread per (batch row, channel) walks the sequence with its N-state in registers; a block's
// threads share a batch row, so the per-step B/C rows are staged once per block in shared memory.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "cuda_kernels.h"
#include "select_kept.h"

namespace {

constexpr int kThreads = 128;
constexpr int kTile = 32;  // time steps of B/C staged in shared memory at once

__device__ __forceinline__ float ld(float x) { return x; }
__device__ __forceinline__ float ld(__half x) { return __half2float(x); }
__device__ __forceinline__ void st(float* p, float v) { *p = v; }
__device__ __forceinline__ void st(__half* p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ float softplus(float x) { return x > 20.f ? x : log1pf(__expf(x)); }

// Stages rows [t0, t0 + n) of a [B, L, N] tensor into s[kTile][N] (fp32) for batch row b.
template <typename T>
__device__ void stage(const T* x, float* s, int64_t b, int64_t L, int N, int64_t t0, int n) {
  for (int i = threadIdx.x; i < n * N; i += blockDim.x) s[i] = ld(x[(b * L + t0) * N + i]);
}

template <typename T, int NMAX>
__global__ void __launch_bounds__(kThreads) selective_scan_kernel(
    const T* __restrict__ u, const T* __restrict__ delta, const float* __restrict__ A, const T* __restrict__ Bm,
    const T* __restrict__ Cm, const float* __restrict__ Dskip, const T* __restrict__ z,
    const float* __restrict__ dbias, T* __restrict__ y, float* __restrict__ last, int64_t L, int64_t D, int N) {
  extern __shared__ float smem[];
  float* sB = smem;
  float* sC = smem + kTile * N;
  const int64_t b = blockIdx.y, d = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const bool live = d < D;
  float a[NMAX], h[NMAX];
#pragma unroll
  for (int n = 0; n < NMAX; ++n) {
    a[n] = (live && n < N) ? A[d * N + n] : 0.f;
    h[n] = 0.f;
  }
  const float bias = live ? dbias[d] : 0.f, dsk = live ? Dskip[d] : 0.f;
  for (int64_t t0 = 0; t0 < L; t0 += kTile) {
    const int nt = static_cast<int>(L - t0 < kTile ? L - t0 : kTile);
    __syncthreads();
    stage(Bm, sB, b, L, N, t0, nt);
    stage(Cm, sC, b, L, N, t0, nt);
    __syncthreads();
    if (!live) continue;
    for (int i = 0; i < nt; ++i) {
      const int64_t idx = (b * L + t0 + i) * D + d;
      const float dl = softplus(ld(delta[idx]) + bias), uu = ld(u[idx]), du = dl * uu;
      float acc = 0.f;
#pragma unroll
      for (int n = 0; n < NMAX; ++n) {
        if (n < N) {
          h[n] = __expf(dl * a[n]) * h[n] + du * sB[i * N + n];
          acc += h[n] * sC[i * N + n];
        }
      }
      const float zz = ld(z[idx]);
      st(&y[idx], (acc + dsk * uu) * (zz / (1.f + __expf(-zz))));
    }
  }
  if (live) {
#pragma unroll
    for (int n = 0; n < NMAX; ++n)
      if (n < N) last[(b * D + d) * N + n] = h[n];
  }
}

// Order-preserving float <-> int map, so atomicMax on ints gives the max of floats.
__device__ __forceinline__ int f2key(float f) {
  const int i = __float_as_int(f);
  return i >= 0 ? i : i ^ 0x7fffffff;
}
__device__ __forceinline__ float key2f(int k) { return __int_as_float(k >= 0 ? k : k ^ 0x7fffffff); }

__global__ void fill_keys(int* key, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) key[i] = f2key(-__int_as_float(0x7f800000));
}

// Keys back to floats; the last `protect` positions of each row (length L) become +inf (always kept).
__global__ void keys_to_float(int* key, int64_t n, int64_t L, int64_t protect) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float inf = __int_as_float(0x7f800000);
  reinterpret_cast<float*>(key)[i] = (L > 0 && i % L >= L - protect) ? inf : key2f(key[i]);
}

// Max over the block's channels of v for one time step -> one atomicMax per warp.
__device__ __forceinline__ void block_max(float v, int* key) {
  for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
  if ((threadIdx.x & 31) == 0) atomicMax(key, f2key(v));
}

// criterion 0 = last: contribution of token t to y_T; 1 = global: to all y_t..y_T (reverse scan G).
// delta: post-softplus fp32 when dbias is null; else RAW (softplus(delta + dbias) formed here, as the scan does),
// of u's type T when raw_is_t (SelectiveScanScore's input), else fp32 (ImpactScore's).
template <typename T, int NMAX>
__global__ void __launch_bounds__(kThreads) impact_score_kernel(
    const T* __restrict__ u, const void* __restrict__ delta, int raw_is_t, const float* __restrict__ dbias,
    const float* __restrict__ A, const T* __restrict__ Bm, const T* __restrict__ Cm, int* __restrict__ key,
    int64_t L, int64_t D, int N, int criterion, int signed_score) {
  extern __shared__ float smem[];
  float* sB = smem;
  float* sC = smem + kTile * N;
  const int64_t b = blockIdx.y, d = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const bool live = d < D;
  const float ninf = -__int_as_float(0x7f800000);
  float a[NMAX], g[NMAX], cT[NMAX];
#pragma unroll
  for (int n = 0; n < NMAX; ++n) {
    a[n] = (live && n < N) ? A[d * N + n] : 0.f;
    g[n] = 0.f;
    cT[n] = n < N ? ld(Cm[(b * L + L - 1) * N + n]) : 0.f;
  }
  const float bias = (live && dbias) ? dbias[d] : 0.f;
  float R = 0.f, dnext = 0.f;  // last: Σ_{k>t} delta_k ; global: delta_{t+1}
  for (int64_t t1 = L; t1 > 0; t1 -= kTile) {
    const int64_t t0 = t1 - kTile > 0 ? t1 - kTile : 0;
    const int nt = static_cast<int>(t1 - t0);
    __syncthreads();
    stage(Bm, sB, b, L, N, t0, nt);
    stage(Cm, sC, b, L, N, t0, nt);
    __syncthreads();
    for (int i = nt - 1; i >= 0; --i) {
      const int64_t idx = (b * L + t0 + i) * D + d;
      const float dv = !live ? 0.f : raw_is_t ? ld(static_cast<const T*>(delta)[idx]) : static_cast<const float*>(delta)[idx];
      const float dl = dbias ? softplus(dv + bias) : dv;
      float acc = 0.f;
#pragma unroll
      for (int n = 0; n < NMAX; ++n) {
        if (n < N) {
          if (criterion == 0) {
            acc += __expf(a[n] * R) * (sB[i * N + n] * cT[n]);
          } else {
            g[n] = sC[i * N + n] + __expf(dnext * a[n]) * g[n];
            acc += g[n] * sB[i * N + n];
          }
        }
      }
      R += dl;
      dnext = dl;
      float v = live ? ld(u[idx]) * dl * acc : ninf;
      if (live && !signed_score) v = fabsf(v);
      block_max(v, &key[b * L + t0 + i]);
    }
  }
}

template <typename T, int NMAX>
cudaError_t launch_scan(const void* u, const void* delta, const float* A, const void* Bm, const void* Cm,
                        const float* Dskip, const void* z, const float* dbias, void* y, float* last,
                        int64_t B, int64_t L, int64_t D, int N, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((D + kThreads - 1) / kThreads), static_cast<unsigned>(B));
  const size_t shm = 2 * kTile * N * sizeof(float);
  selective_scan_kernel<T, NMAX><<<grid, kThreads, shm, stream>>>(
      static_cast<const T*>(u), static_cast<const T*>(delta), A, static_cast<const T*>(Bm),
      static_cast<const T*>(Cm), Dskip, static_cast<const T*>(z), dbias, static_cast<T*>(y), last, L, D, N);
  return cudaGetLastError();
}

template <typename T, int NMAX>
cudaError_t launch_score(const void* u, const void* delta, int raw_is_t, const float* dbias, const float* A, const void* Bm,
                         const void* Cm, float* score, int64_t B, int64_t L, int64_t D, int N, int criterion,
                         int signed_score, int64_t protect, cudaStream_t stream) {
  int* key = reinterpret_cast<int*>(score);
  const int64_t n = B * L;
  const unsigned fill_blocks = static_cast<unsigned>((n + 255) / 256);
  fill_keys<<<fill_blocks, 256, 0, stream>>>(key, n);
  const dim3 grid(static_cast<unsigned>((D + kThreads - 1) / kThreads), static_cast<unsigned>(B));
  const size_t shm = 2 * kTile * N * sizeof(float);
  impact_score_kernel<T, NMAX><<<grid, kThreads, shm, stream>>>(
      static_cast<const T*>(u), delta, raw_is_t, dbias, A, static_cast<const T*>(Bm), static_cast<const T*>(Cm), key, L, D, N,
      criterion, signed_score);
  keys_to_float<<<fill_blocks, 256, 0, stream>>>(key, n, L, protect);
  return cudaGetLastError();
}

// One thread per (b, t, d): u = act(bias + Σ_k w[d, k]·x[b, t-K+1+k, d]), layout [B, L, D] (coalesced over d).
template <typename T>
__global__ void causal_conv1d_kernel(const T* __restrict__ x, const float* __restrict__ w,
                                     const float* __restrict__ bias, T* __restrict__ u, int64_t L, int64_t D,
                                     int K, int silu, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const int64_t d = i % D, t = (i / D) % L, row0 = i / D - t;  // row0 = b·L
  float acc = bias[d];
  for (int k = 0; k < K; ++k) {
    const int64_t src = t - (K - 1) + k;
    if (src >= 0) acc += w[d * K + k] * ld(x[(row0 + src) * D + d]);
  }
  if (silu) acc = acc / (1.f + __expf(-acc));
  st(&u[i], acc);
}

// Picks the register-array size for N (16, 32 or 64) and the element type.
template <template <typename, int> class Fn, typename... Args>
int dispatch(int half, int N, Args... args) {
  if (N < 1 || N > kSimbaCudaMaxState) return static_cast<int>(cudaErrorInvalidValue);
  cudaError_t e;
  if (half) {
    e = N <= 16 ? Fn<__half, 16>::run(args...) : N <= 32 ? Fn<__half, 32>::run(args...) : Fn<__half, 64>::run(args...);
  } else {
    e = N <= 16 ? Fn<float, 16>::run(args...) : N <= 32 ? Fn<float, 32>::run(args...) : Fn<float, 64>::run(args...);
  }
  return static_cast<int>(e);
}

template <typename T, int NMAX>
struct ScanFn {
  template <typename... A>
  static cudaError_t run(A... a) { return launch_scan<T, NMAX>(a...); }
};
template <typename T, int NMAX>
struct ScoreFn {
  template <typename... A>
  static cudaError_t run(A... a) { return launch_score<T, NMAX>(a...); }
};

}  // namespace

extern "C" int simba_cuda_selective_scan(int half, const void* u, const void* delta, const float* A, const void* Bm,
                                         const void* Cm, const float* Dskip, const void* z, const float* dbias,
                                         void* y, float* last, int64_t B, int64_t L, int64_t D, int N, void* stream) {
  if (B == 0 || D == 0) return 0;
  return dispatch<ScanFn>(half, N, u, delta, A, Bm, Cm, Dskip, z, dbias, y, last, B, L, D, N,
                          static_cast<cudaStream_t>(stream));
}

extern "C" int simba_cuda_impact_score(int half, const void* u, const float* delta, const float* A, const void* Bm,
                                       const void* Cm, float* score, int64_t B, int64_t L, int64_t D, int N,
                                       int criterion, int signed_score, void* stream) {
  return simba_cuda_impact_score_raw(half, u, delta, 0, nullptr, A, Bm, Cm, score, B, L, D, N, criterion,
                                     signed_score, 0, stream);
}

extern "C" int simba_cuda_impact_score_raw(int half, const void* u, const void* delta, int raw_is_t,
                                           const float* dbias, const float* A, const void* Bm, const void* Cm,
                                           float* score, int64_t B, int64_t L, int64_t D, int N, int criterion,
                                           int signed_score, int64_t protect, void* stream) {
  if (B == 0 || L == 0 || D == 0) return 0;
  return dispatch<ScoreFn>(half, N, u, delta, raw_is_t, dbias, A, Bm, Cm, score, B, L, D, N, criterion, signed_score,
                           protect, static_cast<cudaStream_t>(stream));
}

extern "C" int simba_cuda_select_kept_host(const float* score, int64_t* slots, int64_t B, int64_t L, int64_t k,
                                           int64_t protect, void* stream) {
  if (B == 0 || k == 0) return 0;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  std::vector<float> host(static_cast<size_t>(B * L));
  std::vector<int64_t> out(static_cast<size_t>(B * k));
  cudaError_t e = cudaMemcpyAsync(host.data(), score, sizeof(float) * host.size(), cudaMemcpyDeviceToHost, s);
  if (e == cudaSuccess) e = cudaStreamSynchronize(s);
  if (e != cudaSuccess) return static_cast<int>(e);
  for (int64_t b = 0; b < B; ++b)
    simba::select_kept_row(host.data() + b * L, L, k, protect < L ? protect : L, out.data() + b * k);
  e = cudaMemcpyAsync(slots, out.data(), sizeof(int64_t) * out.size(), cudaMemcpyHostToDevice, s);
  if (e == cudaSuccess) e = cudaStreamSynchronize(s);  // `out` is freed on return
  return static_cast<int>(e);
}

extern "C" const char* simba_cuda_error_string(int code) {
  return cudaGetErrorString(static_cast<cudaError_t>(code));
}

extern "C" int simba_cuda_causal_conv1d(int half, const void* x, const float* weight, const float* bias, void* u,
                                        int64_t B, int64_t L, int64_t D, int K, int silu, void* stream) {
  const int64_t n = B * L * D;
  if (n == 0) return 0;
  const unsigned blocks = static_cast<unsigned>((n + 255) / 256);
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  if (half)
    causal_conv1d_kernel<__half><<<blocks, 256, 0, st>>>(static_cast<const __half*>(x), weight, bias,
                                                         static_cast<__half*>(u), L, D, K, silu, n);
  else
    causal_conv1d_kernel<float><<<blocks, 256, 0, st>>>(static_cast<const float*>(x), weight, bias,
                                                        static_cast<float*>(u), L, D, K, silu, n);
  return static_cast<int>(cudaGetLastError());
}
