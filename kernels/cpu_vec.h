// Vector helpers of the CPU kernels (cpu_kernels.cc: Mamba-1; cpu_kernels_ssd.cc: Mamba-2), compiled into each of
// them once per instruction set (build.sh: -DSIMBA_CPU_ISA=base|avx2|avx512). Everything here has internal linkage.
#pragma once

#include "simba_kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

#ifndef SIMBA_CPU_ISA
#define SIMBA_CPU_ISA base  // build.sh compiles the kernels again with -DSIMBA_CPU_ISA=avx2 -mavx2 -mfma (and avx512)
#endif

namespace simba {
namespace SIMBA_CPU_ISA {

namespace {

// The per-channel maths runs on GCC/Clang vector types of the target's native width (V lanes: 8 with AVX2,
// 4 with SSE2), NV of them per channel block. Plain loops over the lanes were left scalar by GCC 12 once
// their body held softplus or silu, and vectors wider than the target's registers were scalarised in part.
#if defined(__AVX512F__)
constexpr int64_t V = 16;
#elif defined(__AVX2__)
constexpr int64_t V = 8;
#else
constexpr int64_t V = 4;
#endif
constexpr int64_t W = kBlockD, NV = W / V;
static_assert(W % V == 0, "a channel block is a whole number of vectors");
typedef float vf __attribute__((vector_size(V * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(V * sizeof(int32_t))));

#define SIMBA_INLINE __attribute__((always_inline)) inline

SIMBA_INLINE vf splat(float x) { return vf{} + x; }

// exp(x) for x <= 88: 2^k·e^r with k = round(x/ln2) and a degree-7 polynomial on |r| <= ln2/2
// (relative error ~1e-7, like libm's expf). Arguments below -87 return exp(-87) ~ 1.6e-38 instead of a
// subnormal: an absolute error below 2e-38.
// With AVX-512, k is rounded by vrndscaleps and 2^k applied by vscalefps (the same k, r and p, so the same
// results on [-87, 88], and true subnormals below): 12 instructions instead of 17, the scan's and the score's
// inner loops being nearly all exp.
SIMBA_INLINE vf vexp(vf x) {
#if defined(__AVX512F__)
  const vf k = (vf)_mm512_maskz_roundscale_ps(0xffff, (__m512)(x * 1.44269504088896341f), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#else
  x = x < -87.0f ? splat(-87.0f) : x;
  x = x > 88.0f ? splat(88.0f) : x;
  vf k = x * 1.44269504088896341f + 12582912.0f;  // adding 1.5·2^23 rounds to an integer
  k -= 12582912.0f;
#endif
  vf r = x - k * 0.693145751953125f;  // ln2 split in a short high part ...
  r -= k * 1.42860682030941723e-06f;  // ... and the rest, so r is exact
  vf p = splat(1.98412698e-4f);
  p = p * r + 1.38888889e-3f;
  p = p * r + 8.33333333e-3f;
  p = p * r + 4.16666667e-2f;
  p = p * r + 1.66666667e-1f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
#if defined(__AVX512F__)
  return (vf)_mm512_maskz_scalef_ps(0xffff, (__m512)p, (__m512)k);  // maskz: GCC 12 warns on the undefined passthrough of the unmasked forms
#else
  const vi bits = (__builtin_convertvector(k, vi) + 127) << 23;
  return p * (vf)bits;
#endif
}

// log(u) for u >= 1 (normal, finite): u = 2^k·m with m in [sqrt(1/2), sqrt(2)), log m = 2·atanh(s),
// s = (m-1)/(m+1), |s| <= 0.172, odd series to s^9 (truncation < 1e-9).
SIMBA_INLINE vf vlog(vf u) {
  const vi bits = (vi)u;
  vi k = ((bits >> 23) & 0xff) - 127;
  const vi mbits = (bits & 0x7fffff) | 0x3f800000;
  vf m = (vf)mbits;
  const vi big = m > 1.41421356f;
  m = big ? m * 0.5f : m;
  k = big ? k + 1 : k;
  const vf s = (m - 1.0f) / (m + 1.0f), s2 = s * s;
  vf p = splat(0.111111111f);
  p = p * s2 + 0.142857143f;
  p = p * s2 + 0.2f;
  p = p * s2 + 0.333333333f;
  p = p * s2 + 1.0f;
  return __builtin_convertvector(k, vf) * 0.693147181f + 2.0f * s * p;
}

// torch.nn.functional.softplus (threshold 20). log1p(e) = log(1+e)·e/((1+e)-1) corrects the rounding
// of 1+e (Goldberg), so tiny e keep their relative accuracy.
SIMBA_INLINE vf vsoftplus(vf x) {
  const vf e = vexp(x), w = 1.0f + e, d = w - 1.0f;
  const vi tiny = d == 0.0f;
  const vf l = tiny ? e : vlog(w) * (e / (tiny ? splat(1.0f) : d));
  return x > 20.0f ? x : l;
}
SIMBA_INLINE vf vsilu(vf x) { return x / (1.0f + vexp(-x)); }

inline float load(float v) { return v; }
inline float load(half_t v) { return half_to_float(v.bits); }
inline void store(float* p, float v) { *p = v; }
inline void store(half_t* p, float v) { p->bits = float_to_half(v); }

// One channel block: NV native vectors; lanes past the block's last channel hold 0 and are never stored.
struct Blk {
  vf v[NV];
};

// Unaligned vector load/store of V floats: a constant-size memcpy, so the value stays in a register.
SIMBA_INLINE vf loadu(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
SIMBA_INLINE void storeu(float* p, vf v) { std::memcpy(p, &v, sizeof(v)); }

// The partial-block paths, out of line: a variable-size copy takes its buffer's address, and inlined it kept the
// hot loops' vectors on the stack.
template <typename T>
__attribute__((noinline)) Blk load_partial(const T* p, int64_t n) {
  float tmp[W] = {};
  for (int64_t j = 0; j < n; ++j) tmp[j] = load(p[j]);
  Blk b;
  std::memcpy(&b, tmp, sizeof(b));
  return b;
}
template <typename T>
__attribute__((noinline)) void store_partial(T* p, const Blk& b, int64_t n) {
  float tmp[W];
  std::memcpy(tmp, &b, sizeof(tmp));
  for (int64_t j = 0; j < n; ++j) store(&p[j], tmp[j]);
}

// The first n (<= W) channels from p.
template <typename T>
SIMBA_INLINE Blk load_blk(const T* p, int64_t n) {
  return load_partial(p, n);
}
template <>
SIMBA_INLINE Blk load_blk<float>(const float* p, int64_t n) {
  if (n != W) return load_partial(p, n);
  Blk b;
  for (int64_t k = 0; k < NV; ++k) b.v[k] = loadu(p + k * V);
  return b;
}
template <typename T>
SIMBA_INLINE void store_blk(T* p, const Blk& b, int64_t n) {
  store_partial(p, b, n);
}
template <>
SIMBA_INLINE void store_blk<float>(float* p, const Blk& b, int64_t n) {
  if (n != W) return store_partial(p, b, n);
  for (int64_t k = 0; k < NV; ++k) storeu(p + k * V, b.v[k]);
}
SIMBA_INLINE float lane(const Blk& b, int64_t j) { return b.v[j / V][j % V]; }

// Horizontal max of one vector: log2(V) shuffle-and-max steps.
SIMBA_INLINE float hmax(vf m) {
#if defined(__SSE2__)
#if defined(__AVX512F__)
  __m256 lo, hi;  // halves by memcpy: GCC 12 warns on the undefined passthrough inside the cast/extract intrinsics
  std::memcpy(&lo, &m, sizeof(lo));
  std::memcpy(&hi, reinterpret_cast<const char*>(&m) + sizeof(lo), sizeof(hi));
  const __m256 a = _mm256_max_ps(lo, hi);
#elif defined(__AVX__)
  const __m256 a = (__m256)m;
#endif
#if defined(__AVX__)
  __m128 b = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
#else
  __m128 b = (__m128)m;
#endif
  b = _mm_max_ps(b, _mm_movehl_ps(b, b));
  b = _mm_max_ss(b, _mm_shuffle_ps(b, b, 1));
  return _mm_cvtss_f32(b);
#else
  float x[V];
  std::memcpy(x, &m, sizeof(x));
  float best = x[0];
  for (int64_t j = 1; j < V; ++j) best = std::max(best, x[j]);
  return best;
#endif
}

// The sum of a channel block's lanes (lanes past the block's last channel hold 0).
SIMBA_INLINE float hsum(const Blk& b) {
  vf s = b.v[0];
  for (int64_t k = 1; k < NV; ++k) s += b.v[k];
  float x[V];
  std::memcpy(x, &s, sizeof(x));
  float total = 0.0f;
  for (int64_t j = 0; j < V; ++j) total += x[j];
  return total;
}

// max over the first nd lanes of v (of |v| unless signed_score), in vector registers: the score of one position.
// (Through a float array on the stack it cost as much as the rest of the fused score.)
SIMBA_INLINE float lane_max(const Blk& v, int64_t nd, bool signed_score) {
  const vf ninf = splat(-std::numeric_limits<float>::infinity());
  vf m = ninf;
  for (int64_t k = 0; k < NV; ++k) {
    vf a = signed_score ? v.v[k] : (vf)((vi)v.v[k] & 0x7fffffff);
    if (nd < W) {
      vi lane = {};
      for (int64_t j = 0; j < V; ++j) lane[j] = static_cast<int32_t>(k * V + j);
      a = lane < static_cast<int32_t>(nd) ? a : ninf;
    }
    m = m > a ? m : a;
  }
  return hmax(m);
}

// Rows ahead that the scans prefetch: a job walks a 64-byte column of rows D floats apart, which the hardware
// prefetchers do not follow.
constexpr int64_t kAhead = 16;

template <typename X>
void grow(std::vector<X>& v, int64_t n) {
  if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
}

}  // namespace
}  // namespace SIMBA_CPU_ISA
}  // namespace simba
