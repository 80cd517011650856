// ONNX Runtime entry point of libsimba_ort_ops.so: registers the `simba` domain (SelectiveScan,
// ImpactScore, SelectiveScanScore, CausalConv1d, SelectKept; Mamba-2's SsdScan, SsdScanScore) for the CPU execution
// provider
// (fp32 and fp16) and, when built with SIMBA_WITH_CUDA, the Mamba-1 ops for the CUDA one (cuda_ops.cc). Op contracts: kernels/README.md and simba_kernels.h.
// Built against the API-21 headers (ORT 1.21); older runtimes get an error status instead of a crash.
#include <algorithm>
#include <cstdio>
#include <mutex>
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

#include "ort_common.h"

#ifdef SIMBA_WITH_CUDA
#include "cuda_ops.h"
#endif

namespace simba_ort {
namespace {

template <typename T>
struct KernelType;  // ORT element type -> kernel storage type
template <>
struct KernelType<float> { using type = float; };
template <>
struct KernelType<Ort::Float16_t> { using type = simba::half_t; };
static_assert(sizeof(Ort::Float16_t) == sizeof(simba::half_t), "fp16 storage must be 2 bytes");

template <typename K>
const K* as_kernel(const void* p) { return static_cast<const K*>(p); }

template <typename K>
struct CpuKernels {
  void (*scan)(const simba::ScanArgs<K>&, int64_t);
  void (*score)(const simba::ScoreArgs<K>&, int64_t);
  void (*scan_score)(const simba::ScanScoreArgs<K>&, int64_t);
  void (*conv)(const simba::ConvArgs<K>&, int64_t);
  void (*ssd)(const simba::SsdArgs<K>&, int64_t);
};

// The widest kernels the CPU runs: AVX-512F (16 lanes; ~1.25x AVX2 on the EPYC of BENCHMARKS.md), AVX2+FMA
// (about 4x the SSE2 baseline), else the portable build. SIMBA_OPS_ISA=base|avx2 caps the choice (tests run
// every build the CPU supports).
enum class Isa { kBase, kAvx2, kAvx512 };

Isa cpu_isa() {
#ifdef SIMBA_HAVE_AVX2
  static const Isa isa = [] {
    const std::string cap = std::getenv("SIMBA_OPS_ISA") ? std::getenv("SIMBA_OPS_ISA") : "";
    if (cap == "base" || !(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))) return Isa::kBase;
    if (cap == "avx2" || !__builtin_cpu_supports("avx512f")) return Isa::kAvx2;
    return Isa::kAvx512;
  }();
  return isa;
#else
  return Isa::kBase;
#endif
}

const char* isa_name() {
  switch (cpu_isa()) {
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    default: return "base";
  }
}

template <typename K>
CpuKernels<K> cpu_kernels() {
#ifdef SIMBA_HAVE_AVX2
  if (cpu_isa() == Isa::kAvx512)
    return {simba::avx512::selective_scan_job<K>, simba::avx512::impact_score_job<K>, simba::avx512::scan_score_job<K>,
            simba::avx512::causal_conv1d_job<K>, simba::avx512::ssd_scan_job<K>};
  if (cpu_isa() == Isa::kAvx2)
    return {simba::avx2::selective_scan_job<K>, simba::avx2::impact_score_job<K>, simba::avx2::scan_score_job<K>,
            simba::avx2::causal_conv1d_job<K>, simba::avx2::ssd_scan_job<K>};
#endif
  return {simba::base::selective_scan_job<K>, simba::base::impact_score_job<K>, simba::base::scan_score_job<K>,
          simba::base::causal_conv1d_job<K>, simba::base::ssd_scan_job<K>};
}

// Denormal operands and results cost ~100 cycles each on Intel cores (the `last` score's decays underflow through
// them: the pruned mamba-tiny file ran 2.2x slower on a Xeon than with them flushed, BENCHMARKS.md). Our jobs flush
// them (FTZ and DAZ), as the GPU kernels do; values below 2^-126 are far below anything a score ranks or a scan
// output shows. MXCSR is restored after each job: ORT's own kernels on the same threads are unaffected.
#if defined(__x86_64__) || defined(__i386__)
struct FlushDenormals {
  unsigned saved = _mm_getcsr();
  FlushDenormals() { _mm_setcsr(saved | 0x8040u); }
  ~FlushDenormals() { _mm_setcsr(saved); }
};
#else
struct FlushDenormals {};
#endif

// Runs job(args, i) for i in [0, jobs) on ORT's intra-op thread pool, denormals flushed.
template <typename Args>
void run_jobs(OrtKernelContext* ctx, const Args& args, void (*job)(const Args&, int64_t), int64_t jobs) {
  if (jobs <= 0) return;
  struct Work {
    const Args* args;
    void (*job)(const Args&, int64_t);
  } work{&args, job};
  auto fn = [](void* data, size_t i) {
    auto* w = static_cast<Work*>(data);
    FlushDenormals flush;
    w->job(*w->args, static_cast<int64_t>(i));
  };
  Ort::KernelContext(ctx).ParallelFor(fn, static_cast<size_t>(jobs), 0, &work);
}

template <typename T>
Ort::Status SelectiveScanCpu(OrtKernelContext* ctx, const Tensor<T>& u, const Tensor<T>& delta,
                             const Tensor<float>& A, const Tensor<T>& B, const Tensor<T>& C,
                             const Tensor<float>& D, const Tensor<T>& z, const Tensor<float>& delta_bias,
                             Tensor<T>& y, Tensor<float>& last_state) {
  using K = typename KernelType<T>::type;
  simba::Dims s{};
  std::string err = check_scan(u.Shape(), delta.Shape(), A.Shape(), B.Shape(), C.Shape(), D.Shape(),
                               z.Shape(), delta_bias.Shape(), &s);
  if (!err.empty()) return bad(err);
  if (trace()) std::fprintf(stderr, "[simba] SelectiveScan cpu-%s B=%lld L=%lld D=%lld N=%lld\n",
                            isa_name(), (long long)s.batch, (long long)s.len, (long long)s.dim, (long long)s.nstate);
  simba::ScanArgs<K> a{s,
                       as_kernel<K>(u.Data()), as_kernel<K>(delta.Data()), as_kernel<K>(B.Data()),
                       as_kernel<K>(C.Data()), as_kernel<K>(z.Data()),
                       A.Data(), D.Data(), delta_bias.Data(),
                       reinterpret_cast<K*>(y.Allocate(u.Shape())),
                       last_state.Allocate({s.batch, s.dim, s.nstate})};
  run_jobs(ctx, a, cpu_kernels<K>().scan, s.jobs());
  return Ort::Status{nullptr};
}

template <typename T>
struct ImpactScoreCpu : ImpactScoreAttrs {
  using ImpactScoreAttrs::ImpactScoreAttrs;

  Ort::Status Compute(OrtKernelContext* ctx, const Tensor<T>& u, const Tensor<float>& delta,
                      const Tensor<float>& A, const Tensor<T>& B, const Tensor<T>& C,
                      std::optional<const Tensor<float>*> delta_bias, Tensor<float>& score) {
    using K = typename KernelType<T>::type;
    if (!error.empty()) return bad(error);
    const Tensor<float>* bias = given(delta_bias);
    const std::vector<int64_t> bias_shape = bias ? bias->Shape() : std::vector<int64_t>{};
    simba::Dims s{};
    std::string err = check_score(u.Shape(), delta.Shape(), A.Shape(), B.Shape(), C.Shape(),
                                  bias ? &bias_shape : nullptr, &s);
    if (!err.empty()) return bad(err);
    if (trace()) std::fprintf(stderr, "[simba] ImpactScore cpu-%s %s%s B=%lld L=%lld D=%lld N=%lld\n",
                              isa_name(), name(), bias ? " raw-delta" : "",
                              (long long)s.batch, (long long)s.len, (long long)s.dim, (long long)s.nstate);
    float* out = score.Allocate({s.batch, s.len});
    std::vector<float> partial(static_cast<size_t>(s.batch * s.blocks() * s.len));
    simba::ScoreArgs<K> a{s, as_kernel<K>(u.Data()), as_kernel<K>(B.Data()), as_kernel<K>(C.Data()),
                          delta.Data(), bias ? bias->Data() : nullptr, A.Data(), criterion, signed_score,
                          partial.data()};
    run_jobs(ctx, a, cpu_kernels<K>().score, s.jobs());
    simba::base::impact_score_reduce(s.batch, s.blocks(), s.len, partial.data(), out);
    return Ort::Status{nullptr};
  }
};

template <typename T>
struct SelectiveScanScoreCpu : ImpactScoreAttrs {
  using ImpactScoreAttrs::ImpactScoreAttrs;

  Ort::Status Compute(OrtKernelContext* ctx, const Tensor<T>& u, const Tensor<T>& delta, const Tensor<float>& A,
                      const Tensor<T>& B, const Tensor<T>& C, const Tensor<float>& D, const Tensor<T>& z,
                      const Tensor<float>& delta_bias, Tensor<T>& y, Tensor<float>& last_state,
                      Tensor<float>& score) {
    using K = typename KernelType<T>::type;
    if (!error.empty()) return bad("SelectiveScanScore: " + error);
    simba::Dims s{};
    std::string err = check_scan(u.Shape(), delta.Shape(), A.Shape(), B.Shape(), C.Shape(), D.Shape(),
                                 z.Shape(), delta_bias.Shape(), &s);
    if (!err.empty()) return bad(err);
    if (trace()) std::fprintf(stderr, "[simba] SelectiveScanScore cpu-%s %s protect=%lld B=%lld L=%lld D=%lld N=%lld\n",
                              isa_name(), name(), (long long)protect, (long long)s.batch, (long long)s.len,
                              (long long)s.dim, (long long)s.nstate);
    float* out = score.Allocate({s.batch, s.len});
    std::vector<float> partial(static_cast<size_t>(s.batch * s.blocks() * s.len));
    simba::ScanScoreArgs<K> a{{s, as_kernel<K>(u.Data()), as_kernel<K>(delta.Data()), as_kernel<K>(B.Data()),
                               as_kernel<K>(C.Data()), as_kernel<K>(z.Data()), A.Data(), D.Data(), delta_bias.Data(),
                               reinterpret_cast<K*>(y.Allocate(u.Shape())),
                               last_state.Allocate({s.batch, s.dim, s.nstate})},
                              criterion, signed_score, protect, partial.data()};
    run_jobs(ctx, a, cpu_kernels<K>().scan_score, s.jobs());
    simba::base::impact_score_reduce(s.batch, s.blocks(), s.len, partial.data(), out);
    return Ort::Status{nullptr};
  }
};

template <typename T>
struct CausalConv1dCpu : ConvAttrs {
  using ConvAttrs::ConvAttrs;

  Ort::Status Compute(OrtKernelContext* ctx, const Tensor<T>& x, const Tensor<float>& weight,
                      const Tensor<float>& bias, Tensor<T>& u) {
    using K = typename KernelType<T>::type;
    std::string err = check_conv(x.Shape(), weight.Shape(), bias.Shape(), kernel_size);
    if (!err.empty()) return bad(err);
    const std::vector<int64_t>& xs = x.Shape();
    const int64_t D = xs[2], Kw = weight.Shape()[1];
    if (trace()) std::fprintf(stderr, "[simba] CausalConv1d cpu-%s B=%lld L=%lld D=%lld K=%lld\n", isa_name(),
                              (long long)xs[0], (long long)xs[1], (long long)D, (long long)Kw);
    std::vector<float> wt(static_cast<size_t>(Kw * D));  // [K, D]: the kernel reads rows of channels
    for (int64_t d = 0; d < D; ++d)
      for (int64_t k = 0; k < Kw; ++k) wt[k * D + d] = weight.Data()[d * Kw + k];
    simba::ConvArgs<K> a{xs[0], xs[1], D, Kw, as_kernel<K>(x.Data()), wt.data(), bias.Data(), silu,
                         reinterpret_cast<K*>(u.Allocate(xs))};
    run_jobs(ctx, a, cpu_kernels<K>().conv, a.jobs());
    return Ort::Status{nullptr};
  }
};

// SsdScan (partial null) and SsdScanScore: the Mamba-2 scan, and its scores reduced over heads and channel blocks.
template <typename T>
Ort::Status RunSsd(OrtKernelContext* ctx, const SsdAttrs& at, const char* op, const Tensor<T>& x,
                   const Tensor<float>& dt, const Tensor<float>& A, const Tensor<T>& B, const Tensor<T>& C,
                   const Tensor<float>& D, const Tensor<float>& dt_bias, Tensor<T>& y, Tensor<float>& state,
                   Tensor<float>* score) {
  using K = typename KernelType<T>::type;
  if (score && !at.error.empty()) return bad(std::string(op) + ": " + at.error);
  simba::SsdDims s{};
  std::string err = check_ssd(op, x.Shape(), dt.Shape(), A.Shape(), B.Shape(), C.Shape(), D.Shape(),
                              dt_bias.Shape(), &s);
  if (!err.empty()) return bad(err);
  if (trace()) std::fprintf(stderr, "[simba] %s cpu-%s%s%s B=%lld L=%lld H=%lld P=%lld G=%lld N=%lld\n", op, isa_name(),
                            at.dt_softplus ? " softplus" : "", score ? (at.criterion == simba::Criterion::kLast ? " last" : " global") : "",
                            (long long)s.batch, (long long)s.len, (long long)s.heads, (long long)s.headdim,
                            (long long)s.groups, (long long)s.nstate);
  std::vector<float> partial(score ? static_cast<size_t>(s.batch * s.score_blocks() * s.len) : 0);
  simba::SsdArgs<K> a{s, as_kernel<K>(x.Data()), as_kernel<K>(B.Data()), as_kernel<K>(C.Data()),
                      dt.Data(), A.Data(), D.Data(), dt_bias.Data(), at.dt_softplus,
                      reinterpret_cast<K*>(y.Allocate(x.Shape())),
                      state.Allocate({s.batch, s.heads, s.headdim, s.nstate}),
                      at.criterion, at.signed_score, at.protect, score ? partial.data() : nullptr};
  run_jobs(ctx, a, cpu_kernels<K>().ssd, s.jobs());
  if (score)
    simba::base::impact_score_reduce(s.batch, s.score_blocks(), s.len, partial.data(),
                                     score->Allocate({s.batch, s.len}));
  return Ort::Status{nullptr};
}

template <typename T>
struct SsdScanCpu : SsdAttrs {
  using SsdAttrs::SsdAttrs;

  Ort::Status Compute(OrtKernelContext* ctx, const Tensor<T>& x, const Tensor<float>& dt, const Tensor<float>& A,
                      const Tensor<T>& B, const Tensor<T>& C, const Tensor<float>& D, const Tensor<float>& dt_bias,
                      Tensor<T>& y, Tensor<float>& state) {
    return RunSsd<T>(ctx, *this, "SsdScan", x, dt, A, B, C, D, dt_bias, y, state, nullptr);
  }
};

template <typename T>
struct SsdScanScoreCpu : SsdAttrs {
  using SsdAttrs::SsdAttrs;

  Ort::Status Compute(OrtKernelContext* ctx, const Tensor<T>& x, const Tensor<float>& dt, const Tensor<float>& A,
                      const Tensor<T>& B, const Tensor<T>& C, const Tensor<float>& D, const Tensor<float>& dt_bias,
                      Tensor<T>& y, Tensor<float>& state, Tensor<float>& score) {
    return RunSsd<T>(ctx, *this, "SsdScanScore", x, dt, A, B, C, D, dt_bias, y, state, &score);
  }
};

// SelectKept: select_kept_row (select_kept.h) for each row, on ORT's thread pool.
struct SelectKeptCpu : KeepAttrs {
  using KeepAttrs::KeepAttrs;

  Ort::Status Compute(OrtKernelContext* ctx, const Tensor<float>& score, const Tensor<int64_t>& k,
                      Tensor<int64_t>& slots) {
    int64_t B = 0, L = 0, K = 0;
    std::string err = check_select("cpu", score.Shape(), k.Shape(), k.Data(), *this, &B, &L, &K);
    if (!err.empty()) return bad(err);
    struct Args {
      const float* score;
      int64_t* out;
      int64_t L, K, protect;
    } a{score.Data(), slots.Allocate({B, K}), L, K, std::min(protect, L)};
    auto job = [](const Args& a, int64_t b) {
      simba::select_kept_row(a.score + b * a.L, a.L, a.K, a.protect, a.out + b * a.K);
    };
    if (K > 0) run_jobs<Args>(ctx, a, job, B);
    return Ort::Status{nullptr};
  }
};

// The ops and the domain must outlive every session that uses them (ONNX.md pitfall 12).
std::mutex g_mutex;
OpList g_ops;
std::unique_ptr<Ort::CustomOpDomain> g_domain;

void build_domain() {
  using Ort::Custom::CreateLiteCustomOp;
  constexpr const char* kCpu = "CPUExecutionProvider";
  g_domain = std::make_unique<Ort::CustomOpDomain>("simba");
  g_ops.emplace_back(CreateLiteCustomOp("SelectiveScan", kCpu, SelectiveScanCpu<float>));
  g_ops.emplace_back(CreateLiteCustomOp("SelectiveScan", kCpu, SelectiveScanCpu<Ort::Float16_t>));
  g_ops.emplace_back(CreateLiteCustomOp<ImpactScoreCpu<float>>("ImpactScore", kCpu));
  g_ops.emplace_back(CreateLiteCustomOp<ImpactScoreCpu<Ort::Float16_t>>("ImpactScore", kCpu));
  g_ops.emplace_back(CreateLiteCustomOp<SelectiveScanScoreCpu<float>>("SelectiveScanScore", kCpu));
  g_ops.emplace_back(CreateLiteCustomOp<SelectiveScanScoreCpu<Ort::Float16_t>>("SelectiveScanScore", kCpu));
  g_ops.emplace_back(CreateLiteCustomOp<CausalConv1dCpu<float>>("CausalConv1d", kCpu));
  g_ops.emplace_back(CreateLiteCustomOp<CausalConv1dCpu<Ort::Float16_t>>("CausalConv1d", kCpu));
  g_ops.emplace_back(CreateLiteCustomOp<SelectKeptCpu>("SelectKept", kCpu));
  // Mamba-2's ops have CPU kernels only: in a CUDA session onnxruntime runs them on the CPU provider.
  g_ops.emplace_back(CreateLiteCustomOp<SsdScanCpu<float>>("SsdScan", kCpu));
  g_ops.emplace_back(CreateLiteCustomOp<SsdScanCpu<Ort::Float16_t>>("SsdScan", kCpu));
  g_ops.emplace_back(CreateLiteCustomOp<SsdScanScoreCpu<float>>("SsdScanScore", kCpu));
  g_ops.emplace_back(CreateLiteCustomOp<SsdScanScoreCpu<Ort::Float16_t>>("SsdScanScore", kCpu));
#ifdef SIMBA_WITH_CUDA
  add_cuda_ops(g_ops);
#endif
  for (auto& op : g_ops) g_domain->Add(op.get());
}

}  // namespace
}  // namespace simba_ort

extern "C" __attribute__((visibility("default"))) OrtStatus* ORT_API_CALL
RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  const OrtApi* api = api_base->GetApi(ORT_API_VERSION);
  if (api == nullptr) {
    // Only API 1 is certain to exist in an older runtime; use it to report the problem.
    return api_base->GetApi(1)->CreateStatus(
        ORT_FAIL, "libsimba_ort_ops needs onnxruntime >= 1.21 (C API version 21)");
  }
  Ort::InitApi(api);
  try {
    std::lock_guard<std::mutex> lock(simba_ort::g_mutex);
    if (!simba_ort::g_domain) simba_ort::build_domain();
    Ort::UnownedSessionOptions(options).Add(*simba_ort::g_domain);
  } catch (const std::exception& e) {
    return api->CreateStatus(ORT_FAIL, e.what());
  }
  return nullptr;
}
