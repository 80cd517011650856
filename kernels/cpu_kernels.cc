// CPU kernels of SelectiveScan and ImpactScore (maths: simba_convert/ops/README.md, SIMBA.md §2-§3).
//
// One job handles one batch row and a block of kBlockD channels for the whole sequence; the innermost
// loops run over the block's channels, so they vectorise without -ffast-math (no reductions across lanes).
#include "cpu_vec.h"

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

// A's rows of the block, transposed: At[n] holds A[d0 .. d0+W, n] (zero lanes past the last channel).
std::vector<Blk> transposed_A(const float* A, int64_t d0, int64_t nd, int64_t N) {
  std::vector<float> tmp(static_cast<size_t>(N * W), 0.0f);
  for (int64_t j = 0; j < nd; ++j)
    for (int64_t n = 0; n < N; ++n) tmp[n * W + j] = A[(d0 + j) * N + n];
  std::vector<Blk> At(static_cast<size_t>(N));
  std::memcpy(At.data(), tmp.data(), tmp.size() * sizeof(float));
  return At;
}

// `last`: exp(A·R_t) is taken exactly at the last position of every kChain-position segment and carried down the
// segment as the product with the scan's own decays exp(delta_t·A) (within 1.4e-6 relative of the exact exps on
// the bundled model, and no kept token changed: kernels/README.md).
constexpr int64_t kChain = 16;
// `global` keeps the decays of at most this many positions (the last ones; kStoredDecays·N·64 bytes, 4 MiB at
// N = 16); earlier positions get theirs from exact exps again.
constexpr int64_t kStoredDecays = 4096;

struct Scratch {
  std::vector<Blk> dl, R, decay;
};

Scratch& scratch() {
  static thread_local Scratch s;
  return s;
}

// One channel block of one batch row: the state, A, and where the rows are.
template <typename T>
struct Job {
  const ScanArgs<T>& a;
  int64_t L, D, N, b, blk, d0, nd;
  std::vector<Blk> At, h;
  Blk bias, dskip;

  Job(const ScanArgs<T>& args, int64_t job)
      : a(args), L(args.s.len), D(args.s.dim), N(args.s.nstate), b(job / args.s.blocks()),
        blk(job % args.s.blocks()), d0(blk * W), nd(std::min(W, D - d0)),
        At(transposed_A(args.A, d0, nd, N)), h(static_cast<size_t>(N), Blk{}),
        bias(load_blk(args.delta_bias + d0, nd)), dskip(load_blk(args.Dskip + d0, nd)) {}

  int64_t row(int64_t t) const { return b * L + t; }
  Blk delta(int64_t t) const {  // softplus(delta_t + delta_bias)
    const Blk raw = load_blk(a.delta + row(t) * D + d0, nd);
    Blk dl;
    for (int64_t k = 0; k < NV; ++k) dl.v[k] = vsoftplus(raw.v[k] + bias.v[k]);
    return dl;
  }

  // One scan step at t with delta dl; the decays exp(dl·A) go to dec[n] when dec is given.
  void step(int64_t t, const Blk& dl, Blk* dec) {
    const int64_t r = row(t);
    if (t + kAhead < L) {
      const int64_t ahead = (r + kAhead) * D + d0;
      __builtin_prefetch(a.u + ahead);
      __builtin_prefetch(a.delta + ahead);
      __builtin_prefetch(a.z + ahead);
    }
    const Blk uu = load_blk(a.u + r * D + d0, nd), zz = load_blk(a.z + r * D + d0, nd);
    Blk du, acc, out;
    for (int64_t k = 0; k < NV; ++k) {
      du.v[k] = dl.v[k] * uu.v[k];
      acc.v[k] = vf{};
    }
    const T* Bt = a.Bm + r * N;
    const T* Ct = a.Cm + r * N;
    for (int64_t n = 0; n < N; ++n) {
      const float bn = load(Bt[n]), cn = load(Ct[n]);
      for (int64_t k = 0; k < NV; ++k) {
        const vf dA = vexp(dl.v[k] * At[n].v[k]);
        if (dec) dec[n].v[k] = dA;
        h[n].v[k] = dA * h[n].v[k] + du.v[k] * bn;
        acc.v[k] += h[n].v[k] * cn;
      }
    }
    for (int64_t k = 0; k < NV; ++k) out.v[k] = (acc.v[k] + dskip.v[k] * uu.v[k]) * vsilu(zz.v[k]);
    store_blk(a.y + r * D + d0, out, nd);
  }

  void finish() const {
    for (int64_t j = 0; j < nd; ++j)
      for (int64_t n = 0; n < N; ++n) a.last_state[(b * D + d0 + j) * N + n] = lane(h[n], j);
  }

  // The score of position t from its reach acc (Σ_n decay·B·C of the criterion).
  float score(int64_t t, const Blk& dl, const Blk& acc, bool signed_score) const {
    const Blk uu = load_blk(a.u + row(t) * D + d0, nd);
    Blk v;
    for (int64_t k = 0; k < NV; ++k) v.v[k] = uu.v[k] * dl.v[k] * acc.v[k];
    return lane_max(v, nd, signed_score);
  }
};

// `last`: the sequence in segments of kChain positions, each scanned forward and then scored backward while its
// rows and decays are still in L1. R (Σ_{k>t} delta_k, summed from the end as the reference's reverse cumsum
// does) is needed before the scan reaches t, so a first pass forms delta and R from the end.
template <typename T>
void scan_score_last(Job<T>& j, const ScanScoreArgs<T>& sc, float* out) {
  const int64_t L = j.L, N = j.N, first_protected = std::max<int64_t>(0, L - sc.protect);
  Scratch& scr = scratch();
  grow(scr.dl, L);
  grow(scr.R, L);
  grow(scr.decay, kChain * N);
  for (int64_t t = 0; t < L; ++t) {  // forward, so that the prefetches run ahead of the strided rows
    if (t + kAhead < L) __builtin_prefetch(j.a.delta + j.row(t + kAhead) * j.D + j.d0);
    scr.dl[t] = j.delta(t);
  }
  Blk R = {};
  for (int64_t t = L - 1; t >= 0; --t) {
    scr.R[t] = R;
    for (int64_t k = 0; k < NV; ++k) R.v[k] += scr.dl[t].v[k];
  }
  std::vector<float> CT(static_cast<size_t>(N));
  for (int64_t n = 0; n < N; ++n) CT[n] = load(j.a.Cm[(j.b * L + L - 1) * N + n]);
  std::vector<Blk> E(static_cast<size_t>(N));
  for (int64_t t0 = 0; t0 < L; t0 += kChain) {
    const int64_t t1 = std::min(L, t0 + kChain);
    for (int64_t t = t0; t < t1; ++t) j.step(t, scr.dl[t], &scr.decay[(t - t0) * N]);
    for (int64_t t = std::max(first_protected, t0); t < t1; ++t) out[t] = std::numeric_limits<float>::infinity();
    if (t0 >= first_protected) continue;  // the whole segment is kept whatever its scores
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < NV; ++k) E[n].v[k] = vexp(j.At[n].v[k] * scr.R[t1 - 1].v[k]);
    for (int64_t t = t1 - 1; t >= t0; --t) {
      if (t < first_protected) {
        const T* Bt = j.a.Bm + j.row(t) * N;
        Blk acc;
        for (int64_t k = 0; k < NV; ++k) {
          vf p0 = {}, p1 = {};  // two partial sums: one would be a chain of N dependent FMAs
          int64_t n = 0;
          for (; n + 1 < N; n += 2) {
            p0 += E[n].v[k] * (load(Bt[n]) * CT[n]);
            p1 += E[n + 1].v[k] * (load(Bt[n + 1]) * CT[n + 1]);
          }
          if (n < N) p0 += E[n].v[k] * (load(Bt[n]) * CT[n]);
          acc.v[k] = p0 + p1;
        }
        out[t] = j.score(t, scr.dl[t], acc, sc.signed_score);
      }
      const Blk* dec = &scr.decay[(t - t0) * N];  // exp(A·R_{t-1}) = exp(A·R_t)·exp(delta_t·A)
      for (int64_t n = 0; n < N; ++n)
        for (int64_t k = 0; k < NV; ++k) E[n].v[k] *= dec[n].v[k];
    }
  }
}

// `global`: G_t = C_t + exp(delta_{t+1}·A)·G_{t+1} from the end, with the decays the scan stored (exact exps
// again before the last kStoredDecays positions): the same numbers as impact_score_job.
template <typename T>
void scan_score_global(Job<T>& j, const ScanScoreArgs<T>& sc, float* out) {
  const int64_t L = j.L, N = j.N, first_protected = std::max<int64_t>(0, L - sc.protect);
  const int64_t first_stored = std::max<int64_t>(0, L - kStoredDecays);
  Scratch& scr = scratch();
  grow(scr.dl, L);
  grow(scr.decay, (L - first_stored) * N);
  for (int64_t t = 0; t < L; ++t) {
    scr.dl[t] = j.delta(t);
    j.step(t, scr.dl[t], t >= first_stored ? &scr.decay[(t - first_stored) * N] : nullptr);
  }
  std::vector<Blk> G(static_cast<size_t>(N), Blk{});
  for (int64_t t = L - 1; t >= 0; --t) {
    const T* Bt = j.a.Bm + j.row(t) * N;
    const T* Ct = j.a.Cm + j.row(t) * N;
    const bool end = t + 1 >= L, stored = t + 1 >= first_stored;
    Blk acc = {};
    for (int64_t n = 0; n < N; ++n) {
      const float bn = load(Bt[n]), cn = load(Ct[n]);
      for (int64_t k = 0; k < NV; ++k) {
        const vf dA = end ? vf{} : stored ? scr.decay[(t + 1 - first_stored) * N + n].v[k]
                                          : vexp(scr.dl[t + 1].v[k] * j.At[n].v[k]);
        G[n].v[k] = cn + dA * G[n].v[k];
        acc.v[k] += G[n].v[k] * bn;
      }
    }
    out[t] = t >= first_protected ? std::numeric_limits<float>::infinity()
                                  : j.score(t, scr.dl[t], acc, sc.signed_score);
  }
}

}  // namespace

template <typename T>
void selective_scan_job(const ScanArgs<T>& a, int64_t job) {
  Job<T> j(a, job);
  for (int64_t t = 0; t < j.L; ++t) j.step(t, j.delta(t), nullptr);
  j.finish();
}

template <typename T>
void scan_score_job(const ScanScoreArgs<T>& a, int64_t job) {
  Job<T> j(a.scan, job);
  float* out = a.partial + (j.b * a.scan.s.blocks() + j.blk) * j.L;
  if (a.criterion == Criterion::kLast)
    scan_score_last(j, a, out);
  else
    scan_score_global(j, a, out);
  j.finish();
}

template <typename T>
void impact_score_job(const ScoreArgs<T>& a, int64_t job) {
  const Dims& s = a.s;
  const int64_t L = s.len, D = s.dim, N = s.nstate;
  const int64_t b = job / s.blocks(), blk = job % s.blocks(), d0 = blk * W, nd = std::min(W, D - d0);
  float* out = a.partial + (b * s.blocks() + blk) * L;
  if (L == 0) return;
  const std::vector<Blk> At = transposed_A(a.A, d0, nd, N);
  std::vector<Blk> G(static_cast<size_t>(N), Blk{});
  std::vector<float> CT(static_cast<size_t>(N));
  for (int64_t n = 0; n < N; ++n) CT[n] = load(a.Cm[(b * L + L - 1) * N + n]);
  const bool raw = a.delta_bias != nullptr;
  const Blk bias = raw ? load_blk(a.delta_bias + d0, nd) : Blk{};
  const bool last = a.criterion == Criterion::kLast;
  // last: R = Σ_{k>t} delta_k, accumulated from the end as the reference's reverse cumsum does.
  // global: delta_{t+1} (0 past the end) for the decay of the reverse scan G.
  Blk R = {}, dnext = {};
  for (int64_t t = L - 1; t >= 0; --t) {
    const int64_t row = b * L + t;
    Blk dl = load_blk(a.delta + row * D + d0, nd), acc = {}, v;
    if (raw)
      for (int64_t k = 0; k < NV; ++k) dl.v[k] = vsoftplus(dl.v[k] + bias.v[k]);
    const T* Bt = a.Bm + row * N;
    if (last) {
      for (int64_t n = 0; n < N; ++n) {
        const float w = load(Bt[n]) * CT[n];
        for (int64_t k = 0; k < NV; ++k) acc.v[k] += vexp(At[n].v[k] * R.v[k]) * w;
      }
      for (int64_t k = 0; k < NV; ++k) R.v[k] += dl.v[k];
    } else {
      const T* Ct = a.Cm + row * N;
      for (int64_t n = 0; n < N; ++n) {
        const float bn = load(Bt[n]), cn = load(Ct[n]);
        for (int64_t k = 0; k < NV; ++k) {
          G[n].v[k] = cn + vexp(dnext.v[k] * At[n].v[k]) * G[n].v[k];
          acc.v[k] += G[n].v[k] * bn;
        }
      }
      dnext = dl;
    }
    const Blk uu = load_blk(a.u + row * D + d0, nd);
    for (int64_t k = 0; k < NV; ++k) v.v[k] = uu.v[k] * dl.v[k] * acc.v[k];
    out[t] = lane_max(v, nd, a.signed_score);
  }
}

template <typename T>
void causal_conv1d_job(const ConvArgs<T>& a, int64_t job) {
  const int64_t L = a.len, D = a.dim, K = a.K, b = job / a.chunks(), c = job % a.chunks();
  const int64_t t0 = c * ConvArgs<T>::kRows, t1 = std::min(L, t0 + ConvArgs<T>::kRows);
  const int64_t Dv = std::is_same<T, float>::value ? D - D % V : 0;  // channels done as whole float vectors
  for (int64_t t = t0; t < t1; ++t) {
    T* out = a.u + (b * L + t) * D;
    const int64_t k0 = std::max<int64_t>(0, K - 1 - t);  // taps before the start read zeros
    for (int64_t d0 = 0; d0 < Dv; d0 += V) {
      vf acc = loadu(a.bias + d0);
      for (int64_t k = k0; k < K; ++k)
        acc += loadu(a.wt + k * D + d0) * loadu(reinterpret_cast<const float*>(a.x + (b * L + t - (K - 1) + k) * D + d0));
      storeu(reinterpret_cast<float*>(out + d0), a.silu ? vsilu(acc) : acc);
    }
    for (int64_t d = Dv; d < D; ++d) {  // the rest (and every channel of fp16) one at a time
      float acc = a.bias[d];
      for (int64_t k = k0; k < K; ++k) acc += a.wt[k * D + d] * load(a.x[(b * L + t - (K - 1) + k) * D + d]);
      store(&out[d], a.silu ? acc / (1.0f + std::exp(-acc)) : acc);
    }
  }
}

void impact_score_reduce(int64_t batch, int64_t blocks, int64_t L, const float* partial, float* score) {
  for (int64_t b = 0; b < batch; ++b) {
    float* o = score + b * L;
    const float* p = partial + b * blocks * L;
    std::copy(p, p + L, o);
    for (int64_t k = 1; k < blocks; ++k)
      for (int64_t t = 0; t < L; ++t) o[t] = std::max(o[t], p[k * L + t]);
  }
}

template void selective_scan_job<float>(const ScanArgs<float>&, int64_t);
template void selective_scan_job<half_t>(const ScanArgs<half_t>&, int64_t);
template void scan_score_job<float>(const ScanScoreArgs<float>&, int64_t);
template void scan_score_job<half_t>(const ScanScoreArgs<half_t>&, int64_t);
template void causal_conv1d_job<float>(const ConvArgs<float>&, int64_t);
template void causal_conv1d_job<half_t>(const ConvArgs<half_t>&, int64_t);
template void impact_score_job<float>(const ScoreArgs<float>&, int64_t);
template void impact_score_job<half_t>(const ScoreArgs<half_t>&, int64_t);

}  // namespace SIMBA_CPU_ISA
}  // namespace simba
