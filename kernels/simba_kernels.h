// Kernels of the `simba` ONNX domain, free of ONNX Runtime types (the ORT glue is simba_ort_ops.cc).
// Mamba-1 ops in cpu_kernels.cc, Mamba-2's in cpu_kernels_ssd.cc.
//
// Layout is that of the PyTorch ops (CONTRIBUTING.md "Shapes"), row-major:
//   u, delta, z, y [B, L, D];  A [D, N];  Bm, Cm [B, L, N];  Dskip, delta_bias [D];  state [B, D, N];
//   score [B, L].
// SelectiveScan takes the RAW delta (dt_proj without its bias) and fuses softplus(delta + delta_bias),
// exactly as `selective_scan(..., delta_bias=b, delta_softplus=True)` does; ImpactScore takes the
// post-softplus delta, as `impact_score_ref` does, or (with its optional delta_bias) the raw one and fuses
// the softplus as `impact_score(..., delta_bias=b, delta_softplus=True)` does. Everything is computed in fp32.
#pragma once

#include <cstddef>
#include <cstdint>

namespace simba {

// IEEE binary16 storage; kernels load it to fp32 and store fp32 results rounded to nearest even.
struct half_t {
  uint16_t bits;
};

constexpr int64_t kBlockD = 16;

struct Dims {
  int64_t batch, len, dim, nstate;  // B, L, D, N
  int64_t blocks() const { return (dim + kBlockD - 1) / kBlockD; }
  int64_t jobs() const { return batch * blocks(); }  // one CPU job = one (batch row, channel block)
};

template <typename T>
struct ScanArgs {
  Dims s;
  const T *u, *delta, *Bm, *Cm, *z;
  const float *A, *Dskip, *delta_bias;
  T* y;
  float* last_state;
};

enum class Criterion : int { kLast = 0, kGlobal = 1 };

template <typename T>
struct ScoreArgs {
  Dims s;
  const T *u, *Bm, *Cm;
  // delta [B, L, D] fp32: post-softplus when delta_bias is null; RAW when it is given, and the kernel forms
  // softplus(delta + delta_bias) itself (the graph then needs no separate softplus of a [B, L, D] tensor).
  const float *delta, *delta_bias, *A;
  Criterion criterion;
  bool signed_score;
  float* partial;  // [B, blocks, L] scratch: the max over one block's channels
};

// SelectiveScanScore: the scan (ScanArgs) and, from the decays exp(delta_t·A) it forms, the scores of `criterion`
// into partial (as ScoreArgs), +inf at the last `protect` positions (always kept, nothing computed for them).
template <typename T>
struct ScanScoreArgs {
  ScanArgs<T> scan;
  Criterion criterion;
  bool signed_score;
  int64_t protect;
  float* partial;  // [B, blocks, L]
};

// CausalConv1d: u[b, t, d] = act(bias[d] + Σ_k wt[k, d]·x[b, t-K+1+k, d]) (x before t = 0 reads 0), in the token-major
// layout [B, L, D] of the scan (no transposes); act = SiLU when silu. wt is the weight transposed to [K, D] (fp32).
template <typename T>
struct ConvArgs {
  int64_t batch, len, dim, K;
  const T* x;
  const float *wt, *bias;
  bool silu;
  T* u;
  static constexpr int64_t kRows = 64;  // rows per job
  int64_t chunks() const { return (len + kRows - 1) / kRows; }
  int64_t jobs() const { return batch * chunks(); }
};

// Mamba-2 (SsdScan, SsdScanScore): x, y [B, L, H, P]; dt [B, L, H] fp32; A, Dskip, dt_bias [H]; Bm, Cm [B, L, G, N];
// state [B, H, P, N]. Per head the step size delta = softplus(dt + dt_bias) (dt_softplus) or dt + dt_bias and the
// decay exp(delta·A) are scalars; head h reads group h / (H / G).
struct SsdDims {
  int64_t batch, len, heads, headdim, groups, nstate;  // B, L, H, P, G, N
  int64_t blocks() const { return (headdim + kBlockD - 1) / kBlockD; }  // channel blocks of one head
  int64_t score_blocks() const { return heads * blocks(); }  // partial maxima per position
  int64_t jobs() const { return batch * score_blocks(); }  // one CPU job = (batch row, head, channel block)
};

template <typename T>
struct SsdArgs {
  SsdDims s;
  const T *x, *Bm, *Cm;
  const float *dt, *A, *Dskip, *dt_bias;
  bool dt_softplus;
  T* y;
  float* state;
  // SsdScanScore: the job's scores of `criterion` into partial [B, H·blocks, L], +inf at the last `protect`
  // positions; null for SsdScan.
  Criterion criterion;
  bool signed_score;
  int64_t protect;
  float* partial;
};

// The kernels are compiled once per instruction set (cpu_kernels*.cc built three times: `base` for any x86-64
// or other CPU, `avx2` with AVX2+FMA and `avx512` with AVX-512F on x86-64); the ORT glue picks one.
#define SIMBA_DECLARE_CPU_KERNELS(isa)                                                        \
  namespace isa {                                                                              \
  /* Runs job `job` in [0, s.jobs()): the scan of one batch row over kBlockD channels. */     \
  template <typename T>                                                                        \
  void selective_scan_job(const ScanArgs<T>& a, int64_t job);                                  \
  /* Fills partial[b, block, :]; impact_score_reduce then takes the max over blocks. */        \
  template <typename T>                                                                        \
  void impact_score_job(const ScoreArgs<T>& a, int64_t job);                                   \
  /* selective_scan_job and the job's scores (partial[b, block, :]) in one pass. */            \
  template <typename T>                                                                        \
  void scan_score_job(const ScanScoreArgs<T>& a, int64_t job);                                 \
  /* Rows [c·kRows, (c+1)·kRows) of batch row b, job = b·chunks + c. */                        \
  template <typename T>                                                                        \
  void causal_conv1d_job(const ConvArgs<T>& a, int64_t job);                                   \
  /* The Mamba-2 scan (and score) of one batch row, head and block of the head's channels. */  \
  template <typename T>                                                                        \
  void ssd_scan_job(const SsdArgs<T>& a, int64_t job);                                         \
  /* score[b, t] = max over k of partial[b, k, t] (k < blocks). */                             \
  void impact_score_reduce(int64_t batch, int64_t blocks, int64_t L, const float* partial,     \
                           float* score);                                                      \
  float half_to_float(uint16_t h);                                                             \
  uint16_t float_to_half(float f);                                                             \
  }
SIMBA_DECLARE_CPU_KERNELS(base)
SIMBA_DECLARE_CPU_KERNELS(avx2)
SIMBA_DECLARE_CPU_KERNELS(avx512)

}  // namespace simba
