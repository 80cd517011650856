// Glue shared by the CPU and CUDA registrations: ORT headers, shape checks, ImpactScore attributes.
#pragma once

// Every translation unit initialises the ORT API by hand in RegisterCustomOps; the library links no
// onnxruntime symbol, so it loads into any runtime >= 1.21.
#define ORT_API_MANUAL_INIT
#include "onnxruntime_cxx_api.h"
#undef ORT_API_MANUAL_INIT
#include "onnxruntime_lite_custom_op.h"

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

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

inline std::string check_score(const std::vector<int64_t>& u, const std::vector<int64_t>& delta,
                               const std::vector<int64_t>& A, const std::vector<int64_t>& Bm,
                               const std::vector<int64_t>& Cm, simba::Dims* s) {
  std::string err = check_dims("ImpactScore", u, A, Bm, Cm, s);
  if (err.empty() && delta != u) err = "ImpactScore: delta must have u's shape [B, L, D]";
  return err;
}

// The node attributes criterion ("last" | "global") and signed (0 | 1), read when a kernel is created.
struct ImpactScoreAttrs {
  simba::Criterion criterion = simba::Criterion::kLast;
  bool signed_score = false;
  std::string error;

  ImpactScoreAttrs(const OrtApi*, const OrtKernelInfo* info) {
    Ort::ConstKernelInfo ki(info);
    std::string c = "last";
    int64_t sg = 0;
    try { c = ki.GetAttribute<std::string>("criterion"); } catch (const Ort::Exception&) {}
    try { sg = ki.GetAttribute<int64_t>("signed"); } catch (const Ort::Exception&) {}
    if (c == "global") criterion = simba::Criterion::kGlobal;
    else if (c != "last") error = "ImpactScore: criterion must be 'last' or 'global', got '" + c + "'";
    signed_score = sg != 0;
  }
  const char* name() const { return criterion == simba::Criterion::kLast ? "last" : "global"; }
};

using OpList = std::vector<std::unique_ptr<OrtCustomOp>>;

}  // namespace simba_ort
