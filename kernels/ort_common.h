// Glue shared by the CPU and CUDA registrations: ORT headers, shape checks, the ops' attributes.
#pragma once

// Every translation unit initialises the ORT API by hand in RegisterCustomOps; the library links no
// onnxruntime symbol, so it loads into any runtime >= 1.21.
#define ORT_API_MANUAL_INIT
#include "onnxruntime_cxx_api.h"
#undef ORT_API_MANUAL_INIT
#include "onnxruntime_lite_custom_op.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "select_kept.h"
#include "simba_kernels.h"

namespace simba_ort {

using Ort::Custom::Tensor;

inline bool trace() {
  static const bool on = std::getenv("SIMBA_OPS_TRACE") != nullptr;
  return on;
}

inline Ort::Status bad(const std::string& msg) { return Ort::Status(msg.c_str(), ORT_INVALID_ARGUMENT); }

inline bool same(const std::vector<int64_t>& a, std::initializer_list<int64_t> b) {
  return a == std::vector<int64_t>(b);
}

// u [B,L,D], A [D,N], B/C [B,L,N] -> dims; returns an error message, empty when the shapes agree.
inline std::string check_dims(const char* op, const std::vector<int64_t>& u, const std::vector<int64_t>& A,
                              const std::vector<int64_t>& Bm, const std::vector<int64_t>& Cm, simba::Dims* s) {
  if (u.size() != 3 || A.size() != 2) return std::string(op) + ": u must be [B, L, D] and A [D, N]";
  *s = simba::Dims{u[0], u[1], u[2], A[1]};
  if (A[0] != s->dim) return std::string(op) + ": A must be [D, N] with D = u.shape[2]";
  if (!same(Bm, {s->batch, s->len, s->nstate}) || !same(Cm, {s->batch, s->len, s->nstate}))
    return std::string(op) + ": B and C must be [B, L, N]";
  return {};
}

inline std::string check_scan(const std::vector<int64_t>& u, const std::vector<int64_t>& delta,
                              const std::vector<int64_t>& A, const std::vector<int64_t>& Bm,
                              const std::vector<int64_t>& Cm, const std::vector<int64_t>& D,
                              const std::vector<int64_t>& z, const std::vector<int64_t>& bias, simba::Dims* s) {
  std::string err = check_dims("SelectiveScan", u, A, Bm, Cm, s);
  if (err.empty() && (delta != u || z != u)) err = "SelectiveScan: delta and z must have u's shape [B, L, D]";
  if (err.empty() && (!same(D, {s->dim}) || !same(bias, {s->dim})))
    err = "SelectiveScan: D and delta_bias must be [D]";
  return err;
}

// bias: the optional delta_bias's shape (null when the input is absent: delta is post-softplus).
inline std::string check_score(const std::vector<int64_t>& u, const std::vector<int64_t>& delta,
                               const std::vector<int64_t>& A, const std::vector<int64_t>& Bm,
                               const std::vector<int64_t>& Cm, const std::vector<int64_t>* bias, simba::Dims* s) {
  std::string err = check_dims("ImpactScore", u, A, Bm, Cm, s);
  if (err.empty() && delta != u) err = "ImpactScore: delta must have u's shape [B, L, D]";
  if (err.empty() && bias && !same(*bias, {s->dim})) err = "ImpactScore: delta_bias must be [D]";
  return err;
}

// The optional delta_bias input of ImpactScore, or null when the node does not give it.
inline const Ort::Custom::Tensor<float>* given(std::optional<const Ort::Custom::Tensor<float>*> t) {
  return t.has_value() && *t != nullptr ? *t : nullptr;
}

// The node attributes criterion ("last" | "global"), signed (0 | 1) and (SelectiveScanScore) protect (>= 0),
// read when a kernel is created.
struct ImpactScoreAttrs {
  simba::Criterion criterion = simba::Criterion::kLast;
  bool signed_score = false;
  int64_t protect = 0;
  std::string error;

  ImpactScoreAttrs(const OrtApi*, const OrtKernelInfo* info) {
    Ort::ConstKernelInfo ki(info);
    std::string c = "last";
    int64_t sg = 0;
    try { c = ki.GetAttribute<std::string>("criterion"); } catch (const Ort::Exception&) {}
    try { sg = ki.GetAttribute<int64_t>("signed"); } catch (const Ort::Exception&) {}
    try { protect = ki.GetAttribute<int64_t>("protect"); } catch (const Ort::Exception&) {}
    if (c == "global") criterion = simba::Criterion::kGlobal;
    else if (c != "last") error = "criterion must be 'last' or 'global', got '" + c + "'";
    if (protect < 0) error = "protect must be >= 0, got " + std::to_string(protect);
    signed_score = sg != 0;
  }
  const char* name() const { return criterion == simba::Criterion::kLast ? "last" : "global"; }
};

// CausalConv1d's attributes: silu (0 | 1, default 1) and kernel_size (the weight's K, checked).
struct ConvAttrs {
  bool silu = true;
  int64_t kernel_size = 0;

  ConvAttrs(const OrtApi*, const OrtKernelInfo* info) {
    Ort::ConstKernelInfo ki(info);
    try { silu = ki.GetAttribute<int64_t>("silu") != 0; } catch (const Ort::Exception&) {}
    try { kernel_size = ki.GetAttribute<int64_t>("kernel_size"); } catch (const Ort::Exception&) {}
  }
};

// x [B, L, D], weight [D, K] (K = kernel_size when it is given), bias [D].
inline std::string check_conv(const std::vector<int64_t>& x, const std::vector<int64_t>& w,
                              const std::vector<int64_t>& bias, int64_t kernel_size) {
  if (x.size() != 3 || w.size() != 2) return "CausalConv1d: x must be [B, L, D] and weight [D, K]";
  if (w[0] != x[2] || w[1] < 1) return "CausalConv1d: weight must be [D, K] with D = x.shape[2]";
  if (kernel_size > 0 && w[1] != kernel_size) return "CausalConv1d: weight's K differs from kernel_size";
  if (!same(bias, {x[2]})) return "CausalConv1d: bias must be [D]";
  return {};
}

// SsdScan / SsdScanScore: x [B, L, H, P], dt [B, L, H], A, D, dt_bias [H], B and C [B, L, G, N] with H a multiple of G.
inline std::string check_ssd(const char* op, const std::vector<int64_t>& x, const std::vector<int64_t>& dt,
                             const std::vector<int64_t>& A, const std::vector<int64_t>& Bm,
                             const std::vector<int64_t>& Cm, const std::vector<int64_t>& D,
                             const std::vector<int64_t>& bias, simba::SsdDims* s) {
  const std::string name(op);
  if (x.size() != 4 || Bm.size() != 4) return name + ": x must be [B, L, H, P] and B, C [B, L, G, N]";
  *s = simba::SsdDims{x[0], x[1], x[2], x[3], Bm[2], Bm[3]};
  if (Cm != Bm || Bm[0] != x[0] || Bm[1] != x[1]) return name + ": B and C must be [B, L, G, N] with x's B and L";
  if (s->groups < 1 || s->heads % s->groups) return name + ": the H heads must be a multiple of the G >= 1 groups";
  if (!same(dt, {x[0], x[1], x[2]})) return name + ": dt must be [B, L, H]";
  if (!same(A, {x[2]}) || !same(D, {x[2]}) || !same(bias, {x[2]})) return name + ": A, D and dt_bias must be [H]";
  return {};
}

// SsdScan's attribute dt_softplus (0 | 1), and SsdScanScore's score attributes besides.
struct SsdAttrs : ImpactScoreAttrs {
  bool dt_softplus = false;

  SsdAttrs(const OrtApi* api, const OrtKernelInfo* info) : ImpactScoreAttrs(api, info) {
    try { dt_softplus = Ort::ConstKernelInfo(info).GetAttribute<int64_t>("dt_softplus") != 0; } catch (const Ort::Exception&) {}
  }
};

// SelectKept's attribute protect (>= 0): the last min(protect, L) positions are always kept.
struct KeepAttrs {
  int64_t protect = 0;
  std::string error;  // a bad attribute, reported by check_select when the node runs

  KeepAttrs(const OrtApi*, const OrtKernelInfo* info) {
    try { protect = Ort::ConstKernelInfo(info).GetAttribute<int64_t>("protect"); } catch (const Ort::Exception&) {}
    if (protect < 0) error = "SelectKept: protect must be >= 0, got " + std::to_string(protect);
  }
};

// score [B, L], k [1] (host memory) with min(protect, L) <= k <= L -> B, L, K (traced as running on `ep`).
inline std::string check_select(const char* ep, const std::vector<int64_t>& score,
                                const std::vector<int64_t>& k_shape, const int64_t* k, const KeepAttrs& at,
                                int64_t* B, int64_t* L, int64_t* K) {
  if (!at.error.empty()) return at.error;
  if (score.size() != 2) return "SelectKept: score must be [B, L]";
  int64_t n = 1;
  for (int64_t d : k_shape) n *= d;
  if (n != 1 || k_shape.size() > 1) return "SelectKept: k must hold one count ([1] or a scalar)";
  *B = score[0];
  *L = score[1];
  *K = *k;
  if (*K < std::min(at.protect, *L) || *K > *L)
    return "SelectKept: need min(protect, L) <= k <= L, got k = " + std::to_string(*K) + ", L = " +
           std::to_string(*L) + ", protect = " + std::to_string(at.protect);
  if (trace()) std::fprintf(stderr, "[simba] SelectKept %s B=%lld L=%lld k=%lld protect=%lld\n", ep, (long long)*B,
                            (long long)*L, (long long)*K, (long long)at.protect);
  return {};
}

using OpList = std::vector<std::unique_ptr<OrtCustomOp>>;

}  // namespace simba_ort
