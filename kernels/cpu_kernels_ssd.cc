// CPU kernels of SsdScan and SsdScanScore: the Mamba-2 scan and its impact score (maths: simba_convert/ops/ssd.py,
// simba_convert/ops/impact_score_ssd.py, ops/README.md "Impact score, Mamba-2").
//
// One job handles one batch row, one head and a block of kBlockD of the head's P channels for the whole sequence,
// the state [kBlockD, N] in vector registers/L1 as Mamba-1's kernels hold theirs. Per head the step size and the
// decay are scalars, so a position costs one exp per job, not one per state as in Mamba-1: the scan is
// sequential (the recurrence), the chunked SSD form only groups the same sums differently.
#include "cpu_vec.h"

namespace simba {
namespace SIMBA_CPU_ISA {
namespace {

struct SsdScratch {
  std::vector<float> dl, dA;  // delta_t and exp(delta_t·A) of the job's head, per position
  std::vector<float> E;       // `last`: exp(A·R_t) per position
  std::vector<float> CT;      // `last`: C at the last position, fp32 [N]
  std::vector<Blk> G;         // `global`: the reverse-scan state [N] in blocks of kBlockD
};

SsdScratch& ssd_scratch() {
  static thread_local SsdScratch s;
  return s;
}

// exp(A·x[t]) for t in [0, L) into out, V positions per vector.
void exp_times(const float* x, float A, int64_t L, float* out) {
  for (int64_t t0 = 0; t0 < L; t0 += V) {
    const int64_t n = std::min<int64_t>(V, L - t0);
    float tmp[V] = {};
    std::memcpy(tmp, x + t0, static_cast<size_t>(n) * sizeof(float));
    const vf e = vexp(loadu(tmp) * A);
    std::memcpy(out + t0, &e, static_cast<size_t>(n) * sizeof(float));
  }
}

// The job's head: delta and decay at every position, V positions per vector (softplus and exp as the Mamba-1
// kernels form them).
template <typename T>
void head_steps(const SsdArgs<T>& a, int64_t b, int64_t h, SsdScratch& scr) {
  const SsdDims& s = a.s;
  const int64_t L = s.len, H = s.heads;
  grow(scr.dl, L);
  grow(scr.dA, L);
  const float bias = a.dt_bias[h];
  for (int64_t t0 = 0; t0 < L; t0 += V) {
    const int64_t n = std::min<int64_t>(V, L - t0);
    float tmp[V] = {};
    for (int64_t j = 0; j < n; ++j) tmp[j] = a.dt[(b * L + t0 + j) * H + h] + bias;
    vf d = loadu(tmp);
    if (a.dt_softplus) d = vsoftplus(d);
    std::memcpy(&scr.dl[t0], &d, static_cast<size_t>(n) * sizeof(float));
  }
  exp_times(scr.dl.data(), a.A[h], L, scr.dA.data());
}

// Σ_n x[n]·y[n] over N values, kBlockD at a time in vector lanes (a scalar loop is a chain of N dependent FMAs).
template <typename T>
SIMBA_INLINE float dot(const T* x, const float* y, int64_t N) {
  Blk acc = {};
  for (int64_t n0 = 0; n0 < N; n0 += W) {
    const int64_t m = std::min(W, N - n0);
    const Blk u = load_blk(x + n0, m), v = load_blk(y + n0, m);
    for (int64_t k = 0; k < NV; ++k) acc.v[k] += u.v[k] * v.v[k];
  }
  return hsum(acc);
}

// The scores of one job into out[0, L): max over its channels of |coef_t · x_t| (signed: of coef_t · x_t), with
//   last:   coef_t = (C_T·B_t) · exp(A·R_t) · delta_t,  R_t = Σ_{k>t} delta_k (summed from the end);
//   global: coef_t = (B_t·G_t) · delta_t,  G_t = C_t + exp(delta_{t+1}·A) · G_{t+1} from the end;
// the last `protect` positions score +inf.
template <typename T>
void head_scores(const SsdArgs<T>& a, int64_t b, int64_t h, int64_t g, int64_t p0, int64_t np, SsdScratch& scr,
                 float* out) {
  const SsdDims& s = a.s;
  const int64_t L = s.len, H = s.heads, P = s.headdim, G = s.groups, N = s.nstate;
  const int64_t first_protected = std::max<int64_t>(0, L - a.protect), nbn = (N + W - 1) / W;
  const bool last = a.criterion == Criterion::kLast;
  if (L == 0) return;
  if (last) {
    // R_t summed from the end, as the reference's reverse cumsum. libm's exp, not vexp: far from the end exp(A·R_t)
    // underflows to 0 (or a subnormal) as the reference's does, where vexp stops at exp(-87) and would rank
    // tokens that tie at 0 in PyTorch.
    grow(scr.E, L);
    const float A = a.A[h];
    float R = 0.0f;
    for (int64_t t = L - 1; t >= 0; --t) {
      scr.E[t] = std::exp(A * R);
      R += scr.dl[t];
    }
    scr.CT.resize(static_cast<size_t>(N));
    for (int64_t n = 0; n < N; ++n) scr.CT[n] = load(a.Cm[((b * L + L - 1) * G + g) * N + n]);
  } else {
    scr.G.assign(static_cast<size_t>(nbn), Blk{});
  }
  for (int64_t t = L - 1; t >= 0; --t) {
    const int64_t row = b * L + t;
    const T* Bt = a.Bm + (row * G + g) * N;
    float coef;
    if (last) {
      if (t >= first_protected) coef = 0.0f;
      else coef = dot(Bt, scr.CT.data(), N) * scr.E[t] * scr.dl[t];
    } else {
      const T* Ct = a.Cm + (row * G + g) * N;
      const float dec = t + 1 < L ? scr.dA[t + 1] : 0.0f;  // nothing past the end: G_T = C_T
      Blk acc = {};
      for (int64_t c = 0; c < nbn; ++c) {  // lanes past N hold 0 in C and B, so they stay 0 in G
        const int64_t n0 = c * W, m = std::min(W, N - n0);
        const Blk cc = load_blk(Ct + n0, m), bb = load_blk(Bt + n0, m);
        for (int64_t k = 0; k < NV; ++k) {
          scr.G[c].v[k] = cc.v[k] + dec * scr.G[c].v[k];
          acc.v[k] += scr.G[c].v[k] * bb.v[k];
        }
      }
      coef = hsum(acc) * scr.dl[t];
    }
    if (t >= first_protected) {
      out[t] = std::numeric_limits<float>::infinity();
      continue;
    }
    const Blk xx = load_blk(a.x + (row * H + h) * P + p0, np);
    Blk v;
    for (int64_t k = 0; k < NV; ++k) v.v[k] = xx.v[k] * coef;
    out[t] = lane_max(v, np, a.signed_score);
  }
}

}  // namespace

template <typename T>
void ssd_scan_job(const SsdArgs<T>& a, int64_t job) {
  const SsdDims& s = a.s;
  const int64_t L = s.len, H = s.heads, P = s.headdim, G = s.groups, N = s.nstate, nb = s.blocks();
  const int64_t b = job / (H * nb), h = job / nb % H, blk = job % nb;
  const int64_t p0 = blk * W, np = std::min(W, P - p0), g = h / (H / G);
  SsdScratch& scr = ssd_scratch();
  head_steps(a, b, h, scr);
  std::vector<Blk> st(static_cast<size_t>(N), Blk{});
  const float Dh = a.Dskip[h];
  for (int64_t t = 0; t < L; ++t) {
    const int64_t row = b * L + t, off = (row * H + h) * P + p0;
    if (t + kAhead < L) __builtin_prefetch(a.x + off + kAhead * H * P);
    const Blk xx = load_blk(a.x + off, np);
    const float dl = scr.dl[t], dA = scr.dA[t];
    Blk dx, acc, out;
    for (int64_t k = 0; k < NV; ++k) {
      dx.v[k] = xx.v[k] * dl;
      acc.v[k] = vf{};
    }
    const T* Bt = a.Bm + (row * G + g) * N;
    const T* Ct = a.Cm + (row * G + g) * N;
    for (int64_t n = 0; n < N; ++n) {
      const float bn = load(Bt[n]), cn = load(Ct[n]);
      for (int64_t k = 0; k < NV; ++k) {
        st[n].v[k] = dA * st[n].v[k] + dx.v[k] * bn;
        acc.v[k] += st[n].v[k] * cn;
      }
    }
    for (int64_t k = 0; k < NV; ++k) out.v[k] = acc.v[k] + Dh * xx.v[k];
    store_blk(a.y + off, out, np);
  }
  for (int64_t j = 0; j < np; ++j)
    for (int64_t n = 0; n < N; ++n) a.state[((b * H + h) * P + p0 + j) * N + n] = lane(st[n], j);
  if (a.partial) head_scores(a, b, h, g, p0, np, scr, a.partial + (b * s.score_blocks() + h * nb + blk) * L);
}

template void ssd_scan_job<float>(const SsdArgs<float>&, int64_t);
template void ssd_scan_job<half_t>(const SsdArgs<half_t>&, int64_t);

}  // namespace SIMBA_CPU_ISA
}  // namespace simba
