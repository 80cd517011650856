// CPU kernels of SelectiveScan and ImpactScore (maths: simba_convert/ops/README.md, SIMBA.md §2-§3).
//
// One job handles one batch row and a block of kBlockD channels for the whole sequence; the innermost
// loops run over the block's channels, so they vectorise without -ffast-math (no reductions across lanes).
#include "simba_kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#ifndef SIMBA_CPU_ISA
#define SIMBA_CPU_ISA base  // build.sh compiles this file again with -DSIMBA_CPU_ISA=avx2 -mavx2 -mfma
#endif

namespace simba {
namespace SIMBA_CPU_ISA {

// ---- fp16 <-> fp32 (round to nearest even), independent of F16C so the library runs on any x86-64/ARM
float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
  if (exp == 0x1fu) {
    bits = sign | 0x7f800000u | (man << 13);  // inf / nan
  } else if (exp != 0) {
    bits = sign | ((exp + 112u) << 23) | (man << 13);
  } else if (man == 0) {
    bits = sign;
  } else {  // subnormal: normalise
    int e = -1;
    do { ++e; man <<= 1; } while ((man & 0x400u) == 0);
    bits = sign | ((112u - e) << 23) | ((man & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  x &= 0x7fffffffu;
  if (x >= 0x7f800000u) return sign | 0x7c00u | (x > 0x7f800000u ? 0x200u : 0u);  // inf / nan
  if (x >= 0x477ff000u) return sign | 0x7c00u;                                    // rounds to inf
  if (x < 0x38800000u) {                                                          // half subnormal or 0
    if (x < 0x33000000u) return sign;
    const uint32_t e = x >> 23, man = (x & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - e;  // 14..24
    uint32_t r = man >> shift;
    const uint32_t rem = man & ((1u << shift) - 1u), halfway = 1u << (shift - 1u);
    if (rem > halfway || (rem == halfway && (r & 1u))) ++r;
    return sign | static_cast<uint16_t>(r);
  }
  uint32_t r = x + 0x0fffu + ((x >> 13) & 1u) - 0x38000000u;  // rebias and round to nearest even
  return sign | static_cast<uint16_t>(r >> 13);
}

namespace {

inline float load(float v) { return v; }
inline float load(half_t v) { return half_to_float(v.bits); }
inline void store(float* p, float v) { *p = v; }
inline void store(half_t* p, float v) { p->bits = float_to_half(v); }

// exp(x) for x <= 88: 2^k·e^r with k = round(x/ln2) and a degree-7 polynomial on |r| <= ln2/2
// (relative error ~1e-7, like libm's expf); branch-free so that the channel loops vectorise. Arguments
// below -87 return exp(-87) ~ 1.6e-38 instead of a subnormal: an absolute error below 2e-38.
inline float fast_exp(float x) {
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  float k = x * 1.44269504088896341f + 12582912.0f;  // adding 1.5·2^23 rounds to an integer
  k -= 12582912.0f;
  float r = x - k * 0.693145751953125f;              // ln2 split in a short high part ...
  r -= k * 1.42860682030941723e-06f;                 // ... and the rest, so r is exact
  float p = 1.98412698e-4f;
  p = p * r + 1.38888889e-3f;
  p = p * r + 8.33333333e-3f;
  p = p * r + 4.16666667e-2f;
  p = p * r + 1.66666667e-1f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  return p * scale;
}

// log(u) for u >= 1 (normal, finite): u = 2^k·m with m in [sqrt(1/2), sqrt(2)), log m = 2·atanh(s),
// s = (m-1)/(m+1), |s| <= 0.172, odd series to s^9 (truncation < 1e-9); branch-free like fast_exp.
inline float fast_log(float u) {
  int32_t bits;
  std::memcpy(&bits, &u, 4);
  int32_t k = ((bits >> 23) & 0xff) - 127;
  const int32_t mbits = (bits & 0x7fffff) | 0x3f800000;
  float m;
  std::memcpy(&m, &mbits, 4);
  const bool big = m > 1.41421356f;
  m = big ? m * 0.5f : m;
  k = big ? k + 1 : k;
  const float s = (m - 1.0f) / (m + 1.0f), s2 = s * s;
  float p = 0.111111111f;
  p = p * s2 + 0.142857143f;
  p = p * s2 + 0.2f;
  p = p * s2 + 0.333333333f;
  p = p * s2 + 1.0f;
  return static_cast<float>(k) * 0.693147181f + 2.0f * s * p;
}

// torch.nn.functional.softplus (threshold 20). log1p(e) = log(1+e)·e/((1+e)-1) corrects the rounding
// of 1+e (Goldberg), so tiny e keep their relative accuracy.
inline float softplus(float x) {
  const float e = fast_exp(x), w = 1.0f + e, d = w - 1.0f;
  const float l = d == 0.0f ? e : fast_log(w) * (e / d);
  return x > 20.0f ? x : l;
}
inline float silu(float x) { return x / (1.0f + fast_exp(-x)); }

}  // namespace

template <typename T>
void selective_scan_job(const ScanArgs<T>& a, int64_t job) {
  constexpr int64_t W = kBlockD;
  const Dims& s = a.s;
  const int64_t L = s.len, D = s.dim, N = s.nstate;
  const int64_t b = job / s.blocks(), d0 = (job % s.blocks()) * W, nd = std::min(W, D - d0);
  // State and A transposed to [N][W]; channels past D are zero lanes that are never stored.
  std::vector<float> h(N * W, 0.0f), At(N * W, 0.0f);
  for (int64_t j = 0; j < nd; ++j)
    for (int64_t n = 0; n < N; ++n) At[n * W + j] = a.A[(d0 + j) * N + n];
  float bias[W] = {}, dskip[W] = {}, dl[W] = {}, du[W] = {}, uu[W] = {}, acc[W];
  for (int64_t j = 0; j < nd; ++j) {
    bias[j] = a.delta_bias[d0 + j];
    dskip[j] = a.Dskip[d0 + j];
  }
  for (int64_t t = 0; t < L; ++t) {
    const int64_t row = b * L + t;
    const T* ut = a.u + row * D + d0;
    const T* dt = a.delta + row * D + d0;
    float raw[W] = {}, zz[W] = {}, gate[W];
    const T* zt = a.z + row * D + d0;
    for (int64_t j = 0; j < nd; ++j) {
      raw[j] = load(dt[j]) + bias[j];
      uu[j] = load(ut[j]);
      zz[j] = load(zt[j]);
    }
    for (int64_t j = 0; j < W; ++j) {  // full width, so that it vectorises; lanes past nd are unused
      dl[j] = softplus(raw[j]);
      du[j] = dl[j] * uu[j];
      gate[j] = silu(zz[j]);
      acc[j] = 0.0f;
    }
    const T* Bt = a.Bm + row * N;
    const T* Ct = a.Cm + row * N;
    for (int64_t n = 0; n < N; ++n) {
      const float bn = load(Bt[n]), cn = load(Ct[n]);
      float* hn = &h[n * W];
      const float* an = &At[n * W];
      for (int64_t j = 0; j < W; ++j) {
        hn[j] = fast_exp(dl[j] * an[j]) * hn[j] + du[j] * bn;
        acc[j] += hn[j] * cn;
      }
    }
    T* yt = a.y + row * D + d0;
    for (int64_t j = 0; j < nd; ++j) store(&yt[j], (acc[j] + dskip[j] * uu[j]) * gate[j]);
  }
  for (int64_t j = 0; j < nd; ++j)
    for (int64_t n = 0; n < N; ++n) a.last_state[(b * D + d0 + j) * N + n] = h[n * W + j];
}

template <typename T>
void impact_score_job(const ScoreArgs<T>& a, int64_t job) {
  constexpr int64_t W = kBlockD;
  const Dims& s = a.s;
  const int64_t L = s.len, D = s.dim, N = s.nstate;
  const int64_t b = job / s.blocks(), blk = job % s.blocks(), d0 = blk * W, nd = std::min(W, D - d0);
  float* out = a.partial + (b * s.blocks() + blk) * L;
  if (L == 0) return;
  std::vector<float> At(N * W, 0.0f), G(N * W, 0.0f), CT(N);
  for (int64_t j = 0; j < nd; ++j)
    for (int64_t n = 0; n < N; ++n) At[n * W + j] = a.A[(d0 + j) * N + n];
  for (int64_t n = 0; n < N; ++n) CT[n] = load(a.Cm[(b * L + L - 1) * N + n]);
  // last: R = Σ_{k>t} delta_k, accumulated from the end as the reference's reverse cumsum does.
  // global: delta_{t+1} (0 past the end) for the decay of the reverse scan G.
  float R[W] = {}, dnext[W] = {}, dl[W] = {}, acc[W];
  for (int64_t t = L - 1; t >= 0; --t) {
    const int64_t row = b * L + t;
    for (int64_t j = 0; j < nd; ++j) dl[j] = a.delta[row * D + d0 + j];
    for (int64_t j = 0; j < W; ++j) acc[j] = 0.0f;
    const T* Bt = a.Bm + row * N;
    if (a.criterion == Criterion::kLast) {
      for (int64_t n = 0; n < N; ++n) {
        const float w = load(Bt[n]) * CT[n];
        const float* an = &At[n * W];
        for (int64_t j = 0; j < W; ++j) acc[j] += fast_exp(an[j] * R[j]) * w;
      }
      for (int64_t j = 0; j < W; ++j) R[j] += dl[j];
    } else {
      const T* Ct = a.Cm + row * N;
      for (int64_t n = 0; n < N; ++n) {
        const float bn = load(Bt[n]), cn = load(Ct[n]);
        float* gn = &G[n * W];
        const float* an = &At[n * W];
        for (int64_t j = 0; j < W; ++j) {
          gn[j] = cn + fast_exp(dnext[j] * an[j]) * gn[j];
          acc[j] += gn[j] * bn;
        }
      }
      for (int64_t j = 0; j < W; ++j) dnext[j] = dl[j];
    }
    float best = -std::numeric_limits<float>::infinity();
    const T* ut = a.u + row * D + d0;
    for (int64_t j = 0; j < nd; ++j) {
      float v = load(ut[j]) * dl[j] * acc[j];
      best = std::max(best, a.signed_score ? v : std::fabs(v));
    }
    out[t] = best;
  }
}

void impact_score_reduce(const Dims& s, const float* partial, float* score) {
  const int64_t L = s.len, nb = s.blocks();
  for (int64_t b = 0; b < s.batch; ++b) {
    float* o = score + b * L;
    const float* p = partial + b * nb * L;
    std::copy(p, p + L, o);
    for (int64_t k = 1; k < nb; ++k)
      for (int64_t t = 0; t < L; ++t) o[t] = std::max(o[t], p[k * L + t]);
  }
}

template void selective_scan_job<float>(const ScanArgs<float>&, int64_t);
template void selective_scan_job<half_t>(const ScanArgs<half_t>&, int64_t);
template void impact_score_job<float>(const ScoreArgs<float>&, int64_t);
template void impact_score_job<half_t>(const ScoreArgs<half_t>&, int64_t);

}  // namespace SIMBA_CPU_ISA
}  // namespace simba
