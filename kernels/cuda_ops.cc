// ORT glue of the CUDA kernels: validates shapes, allocates outputs on the CUDA EP and launches on the
// EP's compute stream (no device synchronisation). Inputs and outputs are device pointers.
#include "cuda_ops.h"

#include <cstdio>

#include "cuda_kernels.h"
#ifdef SIMBA_WITH_AOT
#include <cstdlib>
#include <cstring>

#include "aot_ops.h"
#endif

namespace simba_ort {
namespace {

template <typename T>
constexpr int is_half() { return std::is_same<T, Ort::Float16_t>::value ? 1 : 0; }

Ort::Status cuda_status(int code, const char* op) {
  if (code == 0) return Ort::Status{nullptr};
  std::string msg = std::string(op) + " (CUDA): " + simba_cuda_error_string(code);
  return Ort::Status(msg.c_str(), ORT_EP_FAIL);
}

#ifdef SIMBA_WITH_AOT
// Our Triton kernels compiled ahead of time (aot_ops.h) run where they have a cubin for the GPU and shape;
// SIMBA_ORT_AOT=0 keeps the hand-written kernels (for comparisons). kSimbaAotUnsupported means "use those".
bool aot_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("SIMBA_ORT_AOT");
    return !(v && std::strcmp(v, "0") == 0);
  }();
  return on;
}

Ort::Status aot_status(int code, const char* op) {
  if (code == 0) return Ort::Status{nullptr};
  std::string msg = std::string(op) + " (Triton AOT): " +
                    (code < 0 ? std::string(simba_aot_last_error()) : std::string(simba_cuda_error_string(code)));
  return Ort::Status(msg.c_str(), ORT_EP_FAIL);
}
#endif

std::string check_state(int64_t N) {
  if (N >= 1 && N <= kSimbaCudaMaxState) return {};
  return "the CUDA kernels support d_state N in [1, " + std::to_string(kSimbaCudaMaxState) + "], got " +
         std::to_string(N);
}

template <typename T>
Ort::Status SelectiveScanCuda(OrtKernelContext* ctx, const Tensor<T>& u, const Tensor<T>& delta,
                              const Tensor<float>& A, const Tensor<T>& B, const Tensor<T>& C,
                              const Tensor<float>& D, const Tensor<T>& z, const Tensor<float>& delta_bias,
                              Tensor<T>& y, Tensor<float>& last_state) {
  simba::Dims s{};
  std::string err = check_scan(u.Shape(), delta.Shape(), A.Shape(), B.Shape(), C.Shape(), D.Shape(),
                               z.Shape(), delta_bias.Shape(), &s);
  if (err.empty()) err = check_state(s.nstate);
  if (!err.empty()) return bad(err);
  if (trace()) std::fprintf(stderr, "[simba] SelectiveScan cuda B=%lld L=%lld D=%lld N=%lld\n",
                            (long long)s.batch, (long long)s.len, (long long)s.dim, (long long)s.nstate);
  T* out = y.Allocate(u.Shape());
  float* last = last_state.Allocate({s.batch, s.dim, s.nstate});
  void* stream = Ort::KernelContext(ctx).GetGPUComputeStream();
#ifdef SIMBA_WITH_AOT
  if (aot_enabled()) {
    const int rc = simba_aot_selective_scan(is_half<T>(), u.Data(), delta.Data(), A.Data(), B.Data(), C.Data(),
                                            D.Data(), z.Data(), delta_bias.Data(), out, last, s.batch, s.len, s.dim,
                                            static_cast<int>(s.nstate), nullptr, 0, stream);
    if (rc != kSimbaAotUnsupported) {
      if (trace()) std::fprintf(stderr, "[simba] SelectiveScan ran the Triton AOT kernel\n");
      return aot_status(rc, "SelectiveScan");
    }
  }
#endif
  return cuda_status(
      simba_cuda_selective_scan(is_half<T>(), u.Data(), delta.Data(), A.Data(), B.Data(), C.Data(), D.Data(),
                                z.Data(), delta_bias.Data(), out, last, s.batch, s.len, s.dim,
                                static_cast<int>(s.nstate), stream),
      "SelectiveScan");
}

template <typename T>
struct ImpactScoreCuda : ImpactScoreAttrs {
  using ImpactScoreAttrs::ImpactScoreAttrs;

  Ort::Status Compute(OrtKernelContext* ctx, const Tensor<T>& u, const Tensor<float>& delta,
                      const Tensor<float>& A, const Tensor<T>& B, const Tensor<T>& C,
                      std::optional<const Tensor<float>*> delta_bias, Tensor<float>& score) {
    if (!error.empty()) return bad("ImpactScore: " + error);
    const Tensor<float>* bias = given(delta_bias);
    const std::vector<int64_t> bias_shape = bias ? bias->Shape() : std::vector<int64_t>{};
    simba::Dims s{};
    std::string err = check_score(u.Shape(), delta.Shape(), A.Shape(), B.Shape(), C.Shape(),
                                  bias ? &bias_shape : nullptr, &s);
    if (err.empty()) err = check_state(s.nstate);
    if (!err.empty()) return bad(err);
    if (trace()) std::fprintf(stderr, "[simba] ImpactScore cuda %s%s B=%lld L=%lld D=%lld N=%lld\n", name(),
                              bias ? " raw-delta" : "", (long long)s.batch, (long long)s.len, (long long)s.dim,
                              (long long)s.nstate);
    float* out = score.Allocate({s.batch, s.len});
    void* stream = Ort::KernelContext(ctx).GetGPUComputeStream();
    const int crit = criterion == simba::Criterion::kLast ? 0 : 1;
    return cuda_status(
        simba_cuda_impact_score_raw(is_half<T>(), u.Data(), delta.Data(), 0, bias ? bias->Data() : nullptr,
                                    A.Data(), B.Data(), C.Data(), out, s.batch, s.len, s.dim,
                                    static_cast<int>(s.nstate), crit, signed_score ? 1 : 0, 0, stream),
        "ImpactScore");
  }
};

// The scan, then the score of its raw delta (two launches on the EP's stream; the CPU kernel fuses them).
template <typename T>
struct SelectiveScanScoreCuda : ImpactScoreAttrs {
  using ImpactScoreAttrs::ImpactScoreAttrs;

  Ort::Status Compute(OrtKernelContext* ctx, const Tensor<T>& u, const Tensor<T>& delta, const Tensor<float>& A,
                      const Tensor<T>& B, const Tensor<T>& C, const Tensor<float>& D, const Tensor<T>& z,
                      const Tensor<float>& delta_bias, Tensor<T>& y, Tensor<float>& last_state,
                      Tensor<float>& score) {
    if (!error.empty()) return bad("SelectiveScanScore: " + error);
    simba::Dims s{};
    std::string err = check_scan(u.Shape(), delta.Shape(), A.Shape(), B.Shape(), C.Shape(), D.Shape(),
                                 z.Shape(), delta_bias.Shape(), &s);
    if (err.empty()) err = check_state(s.nstate);
    if (!err.empty()) return bad(err);
    if (trace()) std::fprintf(stderr, "[simba] SelectiveScanScore cuda %s protect=%lld B=%lld L=%lld D=%lld N=%lld\n",
                              name(), (long long)protect, (long long)s.batch, (long long)s.len, (long long)s.dim,
                              (long long)s.nstate);
    T* out = y.Allocate(u.Shape());
    float* last = last_state.Allocate({s.batch, s.dim, s.nstate});
    float* sc = score.Allocate({s.batch, s.len});
    void* stream = Ort::KernelContext(ctx).GetGPUComputeStream();
    const int N = static_cast<int>(s.nstate);
#ifdef SIMBA_WITH_AOT
    if (aot_enabled() && criterion == simba::Criterion::kLast && !signed_score) {
      int rc = simba_aot_selective_scan(is_half<T>(), u.Data(), delta.Data(), A.Data(), B.Data(), C.Data(),
                                        D.Data(), z.Data(), delta_bias.Data(), out, last, s.batch, s.len, s.dim, N,
                                        nullptr, 0, stream);
      if (rc == 0)
        rc = simba_aot_impact_score_last(is_half<T>(), u.Data(), delta.Data(), delta_bias.Data(), A.Data(),
                                         B.Data(), C.Data(), sc, s.batch, s.len, s.dim, N, protect, nullptr, 0,
                                         stream);
      if (rc != kSimbaAotUnsupported) {
        if (trace()) std::fprintf(stderr, "[simba] SelectiveScanScore ran the Triton AOT kernels\n");
        return aot_status(rc, "SelectiveScanScore");
      }
    }
#endif
    Ort::Status st = cuda_status(
        simba_cuda_selective_scan(is_half<T>(), u.Data(), delta.Data(), A.Data(), B.Data(), C.Data(), D.Data(),
                                  z.Data(), delta_bias.Data(), out, last, s.batch, s.len, s.dim, N, stream),
        "SelectiveScanScore");
    if (!st.IsOK()) return st;
    const int crit = criterion == simba::Criterion::kLast ? 0 : 1;
    return cuda_status(
        simba_cuda_impact_score_raw(is_half<T>(), u.Data(), delta.Data(), 1, delta_bias.Data(), A.Data(), B.Data(),
                                    C.Data(), sc, s.batch, s.len, s.dim, N, crit, signed_score ? 1 : 0, protect,
                                    stream),
        "SelectiveScanScore");
  }
};

template <typename T>
struct CausalConv1dCuda : ConvAttrs {
  using ConvAttrs::ConvAttrs;

  Ort::Status Compute(OrtKernelContext* ctx, const Tensor<T>& x, const Tensor<float>& weight,
                      const Tensor<float>& bias, Tensor<T>& u) {
    std::string err = check_conv(x.Shape(), weight.Shape(), bias.Shape(), kernel_size);
    if (!err.empty()) return bad(err);
    const std::vector<int64_t>& xs = x.Shape();
    T* out = u.Allocate(xs);
    void* stream = Ort::KernelContext(ctx).GetGPUComputeStream();
#ifdef SIMBA_WITH_AOT
    if (aot_enabled()) {
      const int rc = simba_aot_causal_conv1d(is_half<T>(), x.Data(), weight.Data(), bias.Data(), out, xs[0], xs[1],
                                             xs[2], static_cast<int>(weight.Shape()[1]), silu ? 1 : 0, stream);
      if (rc != kSimbaAotUnsupported) return aot_status(rc, "CausalConv1d");
    }
#endif
    return cuda_status(simba_cuda_causal_conv1d(is_half<T>(), x.Data(), weight.Data(), bias.Data(), out, xs[0], xs[1],
                                                xs[2], static_cast<int>(weight.Shape()[1]), silu ? 1 : 0, stream),
                       "CausalConv1d");
  }
};

// SelectKept: the compiled Triton selection where it has a cubin (rows up to 16384 on sm_80/sm_90), else the host
// fallback. k is a CPU input (SelectKeptInputMemory): the count is read without a device synchronisation.
struct SelectKeptCuda : KeepAttrs {
  using KeepAttrs::KeepAttrs;

  Ort::Status Compute(OrtKernelContext* ctx, const Tensor<float>& score, const Tensor<int64_t>& k,
                      Tensor<int64_t>& slots) {
    int64_t B = 0, L = 0, K = 0;
    std::string err = check_select("cuda", score.Shape(), k.Shape(), k.Data(), *this, &B, &L, &K);
    if (!err.empty()) return bad(err);
    int64_t* out = slots.Allocate({B, K});
    if (B == 0 || K == 0) return Ort::Status{nullptr};
    void* stream = Ort::KernelContext(ctx).GetGPUComputeStream();
#ifdef SIMBA_WITH_AOT
    if (aot_enabled()) {
      const int rc = simba_aot_select_kept(score.Data(), out, B, L, K, protect, stream);
      if (rc != kSimbaAotUnsupported) return aot_status(rc, "SelectKept");
    }
#endif
    return cuda_status(simba_cuda_select_kept_host(score.Data(), out, B, L, K, protect, stream), "SelectKept");
  }
};

OrtMemType ORT_API_CALL SelectKeptInputMemory(const OrtCustomOp*, size_t index) {
  return index == 1 ? OrtMemTypeCPUInput : OrtMemTypeDefault;
}

}  // namespace

void add_cuda_ops(OpList& ops) {
  using Ort::Custom::CreateLiteCustomOp;
  constexpr const char* kCuda = "CUDAExecutionProvider";
  ops.emplace_back(CreateLiteCustomOp("SelectiveScan", kCuda, SelectiveScanCuda<float>));
  ops.emplace_back(CreateLiteCustomOp("SelectiveScan", kCuda, SelectiveScanCuda<Ort::Float16_t>));
  ops.emplace_back(CreateLiteCustomOp<ImpactScoreCuda<float>>("ImpactScore", kCuda));
  ops.emplace_back(CreateLiteCustomOp<ImpactScoreCuda<Ort::Float16_t>>("ImpactScore", kCuda));
  ops.emplace_back(CreateLiteCustomOp<SelectiveScanScoreCuda<float>>("SelectiveScanScore", kCuda));
  ops.emplace_back(CreateLiteCustomOp<SelectiveScanScoreCuda<Ort::Float16_t>>("SelectiveScanScore", kCuda));
  ops.emplace_back(CreateLiteCustomOp<CausalConv1dCuda<float>>("CausalConv1d", kCuda));
  ops.emplace_back(CreateLiteCustomOp<CausalConv1dCuda<Ort::Float16_t>>("CausalConv1d", kCuda));
  ops.emplace_back(CreateLiteCustomOp<SelectKeptCuda>("SelectKept", kCuda));
  ops.back()->GetInputMemoryType = SelectKeptInputMemory;
}

}  // namespace simba_ort
