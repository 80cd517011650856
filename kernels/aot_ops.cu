// Host side of the ahead-of-time compiled Triton kernels (aot_ops.h): finds the cubin for this GPU in the table
// `python3 -m simba_convert.ops.aot` generated, loads them once per device, and launches them with the launch
// rules of the PyTorch side: scan/triton.py's `scan_forward` (the "auto" forward of inference: split-sequence
// below 1024 programs from L = 256, else one sequential pass; its "chunk" kernel for short, small launches is
// replaced by the sequential one here) and score/triton.py's `impact_score_triton` (`last`, fused softplus,
// `default_config`'s block sizes, chunks and warps), conv1d/triton.py's `causal_conv1d_triton` and
// pruning/select_triton.py's `select_kept_dense_rows_triton` (its block: the row's power of two, >= 16). The CUDA
// driver API is looked up with dlopen, so the library still loads where no driver is installed (the CPU kernels
// need none).
#include <cuda.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <dlfcn.h>

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "aot_ops.h"
#include "simba_aot_kernels.h"

namespace {

constexpr int kBlockD = 32, kNP = 16, kChunk = 16;  // simba_convert/ops/aot.py: BLOCK_D, NP, CHUNK
constexpr int kOpScan = 0, kOpScoreSums = 1, kOpScoreLast = 2, kOpConv = 3, kOpSelect = 4;  // aot.py specs()
constexpr int kConvWidth = 4, kConvBlockL = 32, kConvBlockD = 128;  // aot.py: the conv spec
constexpr int kScoreBlockT = 32;
constexpr int kSelectMinLog2 = 4, kSelectMaxLog2 = 14;  // aot.py SELECT_BLOCKS
constexpr int64_t kSplitMinLen = 256, kSplitBelowPrograms = 1024, kSplitTargetPrograms = 8192;
constexpr int64_t kSplitMinSteps = 64, kSplitMaxSegments = 16;  // scan/triton.py SPLIT_*
constexpr float kLog2e = 1.4426950408889634f;
constexpr int kMaxDevices = 64;

thread_local std::string last_error;

int fail(int code, const std::string& msg) {
  last_error = msg;
  return code;
}

struct Driver {
  CUresult (*module_load_data)(CUmodule*, const void*) = nullptr;
  CUresult (*module_get_function)(CUfunction*, CUmodule, const char*) = nullptr;
  CUresult (*launch_kernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                            CUstream, void**, void**) = nullptr;
  CUresult (*func_set_attribute)(CUfunction, CUfunction_attribute, int) = nullptr;
  CUresult (*get_error_string)(CUresult, const char**) = nullptr;
  bool ok = false;
};

const Driver& driver() {
  static const Driver d = [] {
    Driver r;
    void* h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!h) return r;
    r.module_load_data = reinterpret_cast<decltype(r.module_load_data)>(dlsym(h, "cuModuleLoadData"));
    r.module_get_function = reinterpret_cast<decltype(r.module_get_function)>(dlsym(h, "cuModuleGetFunction"));
    r.launch_kernel = reinterpret_cast<decltype(r.launch_kernel)>(dlsym(h, "cuLaunchKernel"));
    r.func_set_attribute = reinterpret_cast<decltype(r.func_set_attribute)>(dlsym(h, "cuFuncSetAttribute"));
    r.get_error_string = reinterpret_cast<decltype(r.get_error_string)>(dlsym(h, "cuGetErrorString"));
    r.ok = r.module_load_data && r.module_get_function && r.launch_kernel && r.func_set_attribute;
    return r;
  }();
  return d;
}

std::string driver_message(CUresult res) {
  const char* s = nullptr;
  if (driver().get_error_string) driver().get_error_string(res, &s);
  return s ? s : ("CUresult " + std::to_string(static_cast<int>(res)));
}

// The table entry for (kind, half, aligned) on a GPU of compute capability `cc` (major*10 + minor): the exact
// architecture, or sm_80's cubin on a later 8.x GPU (binary compatible within a major version).
int find_kernel(int cc, int op, int variant, int half, int aligned) {
  for (int pass = 0; pass < 2; ++pass) {
    for (int i = 0; i < simba_aot_kernel_count; ++i) {
      const simba_aot_kernel& k = simba_aot_kernels[i];
      if (k.op != op || k.variant != variant || k.half != half || k.aligned != aligned) continue;
      if (pass == 0 ? k.arch == cc : (k.arch / 10 == cc / 10 && k.arch % 10 == 0 && cc / 10 == 8)) return i;
    }
  }
  return -1;
}

struct Loaded {
  std::once_flag once[kMaxDevices];
  std::vector<CUfunction> fn[kMaxDevices];
  std::string error[kMaxDevices];
};

Loaded& loaded() {
  static Loaded l;
  return l;
}

int compute_capability(int dev) {
  int major = 0, minor = 0;
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
  cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
  return major * 10 + minor;
}

// Every cubin of the table for compute capability `cc` loaded into device `dev`'s primary context (once per device).
int functions(int dev, int cc, const std::vector<CUfunction>** out) {
  Loaded& l = loaded();
  std::call_once(l.once[dev], [&] {
    cudaFree(nullptr);  // makes the device's primary context current on this thread
    std::vector<CUfunction> fns(simba_aot_kernel_count, nullptr);
    for (int i = 0; i < simba_aot_kernel_count; ++i) {
      const simba_aot_kernel& k = simba_aot_kernels[i];
      if (find_kernel(cc, k.op, k.variant, k.half, k.aligned) != i) continue;
      CUmodule mod = nullptr;
      CUresult r = driver().module_load_data(&mod, k.cubin);
      if (r == CUDA_SUCCESS) r = driver().module_get_function(&fns[i], mod, k.function);
      if (r == CUDA_SUCCESS && k.shared > 49152)
        r = driver().func_set_attribute(fns[i], CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, k.shared);
      if (r != CUDA_SUCCESS) {
        l.error[dev] = "loading " + std::string(k.function) + " for sm_" + std::to_string(k.arch) + ": " +
                       driver_message(r);
        fns.assign(simba_aot_kernel_count, nullptr);
        break;
      }
    }
    l.fn[dev] = std::move(fns);
  });
  if (!l.error[dev].empty()) return fail(kSimbaAotDriverError, l.error[dev]);
  *out = &l.fn[dev];
  return 0;
}

int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Segments of scan_forward's "auto" inference forward (resolve_forward / auto_splits / _segments): 1 = one pass.
int64_t segments(int64_t B, int64_t L, int64_t D, int64_t* seg_len) {
  *seg_len = L;
  const int64_t programs = B * cdiv(D, kBlockD);
  if (L < kSplitMinLen || programs >= kSplitBelowPrograms) return 1;
  const int64_t splits = std::max<int64_t>(
      1, std::min({cdiv(kSplitTargetPrograms, programs), L / kSplitMinSteps, kSplitMaxSegments}));
  *seg_len = cdiv(L, splits);
  return cdiv(L, *seg_len);
}

size_t align256(size_t n) { return (n + 255) / 256 * 256; }

// Carves float buffers out of a workspace (or, with base == nullptr, only counts its bytes).
struct Carver {
  char* base;
  size_t off = 0;
  float* take(size_t floats) {
    float* p = base ? reinterpret_cast<float*>(base + off) : nullptr;
    off += align256(sizeof(float) * floats);
    return p;
  }
};

struct ScanWorkspace {
  float *a2t, *b, *c, *hend, *dsum;
};

size_t scan_layout(int half, int64_t B, int64_t L, int64_t D, int N, char* base, ScanWorkspace* w) {
  int64_t seg_len = L;
  const int64_t S = segments(B, L, D, &seg_len);
  Carver c{base};
  w->a2t = c.take(N * D);
  w->b = half ? c.take(B * L * N) : nullptr;
  w->c = half ? c.take(B * L * N) : nullptr;
  w->hend = S > 1 ? c.take(B * (S - 1) * D * N) : nullptr;
  w->dsum = S > 1 ? c.take(B * (S - 1) * D) : nullptr;
  return c.off;
}

// score/triton.py default_config("last", programs, fused_softplus=True, L) and _launch_last's chunk count.
struct ScoreLaunch {
  int variant, block_d;
  int64_t chunks, chunk_tiles, n_dblk;
};

ScoreLaunch score_launch(int64_t B, int64_t L, int64_t D) {
  const int64_t programs = B * cdiv(D, 32), n_tiles = cdiv(L, kScoreBlockT);
  ScoreLaunch s{programs >= 2048 ? 2 : 1, 32, 1, n_tiles, 0};
  if (programs <= 256 && L >= 128) {
    const int64_t want = std::max<int64_t>(1, std::min<int64_t>({32, L / 64, n_tiles}));
    s.chunk_tiles = cdiv(n_tiles, want);
    s.chunks = cdiv(n_tiles, s.chunk_tiles);
    if (s.chunks > 1) s = ScoreLaunch{0, 16, s.chunks, s.chunk_tiles, 0};
    else s = ScoreLaunch{1, 32, 1, n_tiles, 0};  // one chunk: the unchunked kernel (never with L >= 128 today)
  }
  s.n_dblk = cdiv(D, s.block_d);
  return s;
}

struct ScoreWorkspace {
  float *a2t, *part, *sums;
};

size_t score_layout(int64_t B, int64_t L, int64_t D, int N, char* base, ScoreWorkspace* w) {
  const ScoreLaunch s = score_launch(B, L, D);
  Carver c{base};
  w->a2t = c.take(N * D);
  w->part = c.take(B * s.n_dblk * L);
  w->sums = s.chunks > 1 ? c.take(B * s.chunks * D) : nullptr;
  return c.off;
}

__global__ void log2e_transposed_kernel(const float* __restrict__ A, float* __restrict__ out, int64_t D, int N) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;  // over [N, D]
  if (i < D * N) out[i] = A[(i % D) * N + i / D] * kLog2e;
}

__global__ void upcast_kernel(const __half* __restrict__ x, float* __restrict__ out, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = __half2float(x[i]);
}

// score[b, t] = max over the channel blocks of part[b, :, t] (the torch.amax of impact_score_triton); the last
// `protect` positions of each row score +inf (SelectiveScanScore's contract).
__global__ void score_max_kernel(const float* __restrict__ part, float* __restrict__ score, int64_t B, int64_t L,
                                 int64_t n_dblk, int64_t protect) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;  // over [B, L]
  if (i >= B * L) return;
  const int64_t b = i / L, t = i % L;
  if (t >= L - protect) {
    score[i] = __int_as_float(0x7f800000);
    return;
  }
  const float* p = part + b * n_dblk * L + t;
  float m = p[0];
  for (int64_t j = 1; j < n_dblk; ++j) m = fmaxf(m, p[j * L]);
  score[i] = m;
}

int launch(CUfunction fn, const simba_aot_kernel& k, unsigned gx, unsigned gy, unsigned gz, cudaStream_t stream,
           std::vector<void*>& params) {
  CUdeviceptr null_scratch = 0;
  for (int i = 0; i < k.scratch_params; ++i) params.push_back(&null_scratch);
  CUresult r = driver().launch_kernel(fn, gx, gy, gz, k.threads, 1, 1, k.shared, reinterpret_cast<CUstream>(stream),
                                      params.data(), nullptr);
  params.resize(params.size() - k.scratch_params);
  if (r != CUDA_SUCCESS) return fail(kSimbaAotDriverError, std::string(k.function) + ": " + driver_message(r));
  return 0;
}

// A device, its compute capability and (after current_device) its loaded functions.
struct Device {
  int index = 0, cc = 0;
  const std::vector<CUfunction>* fns = nullptr;
};

// The current device and its compute capability (no cubin loaded); non-zero when AOT cannot run here.
int locate_device(Device* d) {
  if (!driver().ok) return fail(kSimbaAotUnsupported, "the CUDA driver library (libcuda.so.1) did not load");
  cudaError_t e = cudaGetDevice(&d->index);
  if (e != cudaSuccess) return static_cast<int>(e);
  if (d->index >= kMaxDevices) return fail(kSimbaAotUnsupported, "device index out of range");
  d->cc = compute_capability(d->index);
  return 0;
}

int current_device(Device* d) {
  if (int rc = locate_device(d)) return rc;
  return functions(d->index, d->cc, &d->fns);
}

// The start of every launcher: sizes the 32-bit kernels take, no work on an empty input (*empty), the current
// device's functions. Non-zero: the code to return.
int begin(const char* what, int64_t B, int64_t L, int64_t D, Device* dev, bool* empty) {
  *empty = L == 0 || B == 0 || D == 0;
  if (B * L * D >= (int64_t{1} << 31) || B > 65535)
    return fail(kSimbaAotUnsupported, std::string("the compiled ") + what + " takes 32-bit sizes");
  return *empty ? 0 : current_device(dev);
}

// A workspace for one call: the caller's, or (workspace == nullptr) a stream-ordered allocation freed after the
// call's launches on the same stream.
struct CallWorkspace {
  void* ptr = nullptr;
  bool owned = false;
  cudaStream_t stream = nullptr;
  ~CallWorkspace() {
    if (owned) cudaFreeAsync(ptr, stream);
  }
};

int get_workspace(void* given, size_t given_bytes, size_t need, cudaStream_t stream, CallWorkspace* ws) {
  ws->stream = stream;
  if (given) {
    if (given_bytes < need) return fail(kSimbaAotUnsupported, "workspace too small");
    ws->ptr = given;
    return 0;
  }
  cudaError_t e = cudaMallocAsync(&ws->ptr, std::max<size_t>(need, 256), stream);
  if (e != cudaSuccess) return static_cast<int>(e);
  ws->owned = true;
  return 0;
}

std::vector<void*> param_list(CUdeviceptr* ptrs, int n_ptrs, const int32_t* ints, int n_ints) {
  std::vector<void*> params;
  for (int i = 0; i < n_ptrs; ++i) params.push_back(&ptrs[i]);
  for (int i = 0; i < n_ints; ++i) params.push_back(const_cast<int32_t*>(&ints[i]));
  return params;
}

CUdeviceptr dptr(const void* p) { return reinterpret_cast<CUdeviceptr>(p); }

}  // namespace

extern "C" {

size_t simba_aot_selective_scan_workspace(int half, int64_t B, int64_t L, int64_t D, int N) {
  ScanWorkspace w{};
  return scan_layout(half, B, L, D, N, nullptr, &w);
}

size_t simba_aot_impact_score_last_workspace(int64_t B, int64_t L, int64_t D, int N) {
  ScoreWorkspace w{};
  return score_layout(B, L, D, N, nullptr, &w);
}

int64_t simba_aot_scan_segments(int64_t B, int64_t L, int64_t D, int64_t* seg_len) {
  return segments(B, L, D, seg_len);
}

void simba_aot_score_plan(int64_t B, int64_t L, int64_t D, int64_t* out) {
  const ScoreLaunch s = score_launch(B, L, D);
  out[0] = s.variant;
  out[1] = s.block_d;
  out[2] = s.chunks;
  out[3] = s.chunk_tiles;
}

const char* simba_aot_last_error(void) { return last_error.c_str(); }
const char* simba_aot_triton_version_string(void) { return simba_aot_triton_version; }

int simba_aot_available(void) {
  Device d;
  return locate_device(&d) == 0 && find_kernel(d.cc, kOpScan, 0, 0, 1) >= 0 ? 1 : 0;
}

int simba_aot_selective_scan(int half, const void* u, const void* delta, const float* A, const void* Bm,
                             const void* Cm, const float* Dskip, const void* z, const float* delta_bias, void* y,
                             float* last_state, int64_t B, int64_t L, int64_t D, int N, void* workspace,
                             size_t workspace_bytes, void* stream_ptr) {
  if (N != kNP) return fail(kSimbaAotUnsupported, "the compiled scan has d_state 16, got " + std::to_string(N));
  Device dev;
  bool empty = false;
  if (int rc = begin("scan", B, L, D, &dev, &empty); rc != 0 || empty) return rc;
  const int aligned = D % 16 == 0 ? 1 : 0;
  int64_t seg_len = L;
  const int64_t S = segments(B, L, D, &seg_len);
  const int idx[2] = {find_kernel(dev.cc, kOpScan, S > 1 ? 1 : 0, half, aligned),
                      find_kernel(dev.cc, kOpScan, 2, half, aligned)};
  if (idx[0] < 0 || (S > 1 && idx[1] < 0))
    return fail(kSimbaAotUnsupported, "no scan cubin for sm_" + std::to_string(dev.cc));
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  ScanWorkspace w{};
  CallWorkspace ws;
  if (int rc = get_workspace(workspace, workspace_bytes, scan_layout(half, B, L, D, N, nullptr, &w), stream, &ws))
    return rc;
  scan_layout(half, B, L, D, N, static_cast<char*>(ws.ptr), &w);
  log2e_transposed_kernel<<<static_cast<unsigned>(cdiv(D * N, 256)), 256, 0, stream>>>(A, w.a2t, D, N);
  const void* bp = Bm;
  const void* cp = Cm;
  if (half) {
    const int64_t n = B * L * N;
    upcast_kernel<<<static_cast<unsigned>(cdiv(n, 256)), 256, 0, stream>>>(static_cast<const __half*>(Bm), w.b, n);
    upcast_kernel<<<static_cast<unsigned>(cdiv(n, 256)), 256, 0, stream>>>(static_cast<const __half*>(Cm), w.c, n);
    bp = w.b;
    cp = w.c;
  }
  if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return static_cast<int>(e);
  // SCAN_ARGS without the constexprs: 14 pointers (those the specialisation never reads still take their slots),
  // then L, Dm, N, n_chunks, seg_len, n_seg and the non-unit strides of u, delta, z, B, C (fp32 rows), y.
  CUdeviceptr ptrs[14] = {dptr(u), dptr(delta), dptr(z), dptr(bp), dptr(cp), dptr(w.a2t), dptr(Dskip),
                          dptr(delta_bias), dptr(u), dptr(y), dptr(last_state), dptr(y),
                          dptr(w.hend ? static_cast<void*>(w.hend) : y), dptr(w.dsum ? static_cast<void*>(w.dsum) : y)};
  const int32_t LD = static_cast<int32_t>(L * D), Di = static_cast<int32_t>(D), LN = static_cast<int32_t>(L * N);
  const int32_t ints[18] = {static_cast<int32_t>(L), Di, N, static_cast<int32_t>(cdiv(L, kChunk)),
                            static_cast<int32_t>(seg_len), static_cast<int32_t>(S),
                            LD, Di, LD, Di, LD, Di, LN, N, LN, N, LD, Di};
  std::vector<void*> params = param_list(ptrs, 14, ints, 18);
  const unsigned gx = static_cast<unsigned>(cdiv(D, kBlockD)), gy = static_cast<unsigned>(B);
  if (S > 1) {
    if (int rc = launch((*dev.fns)[idx[0]], simba_aot_kernels[idx[0]], gx, gy, static_cast<unsigned>(S - 1), stream,
                        params))
      return rc;
    return launch((*dev.fns)[idx[1]], simba_aot_kernels[idx[1]], gx, gy, static_cast<unsigned>(S), stream, params);
  }
  return launch((*dev.fns)[idx[0]], simba_aot_kernels[idx[0]], gx, gy, 1, stream, params);
}

int simba_aot_impact_score_last(int half, const void* u, const void* delta, const float* delta_bias, const float* A,
                                const void* Bm, const void* Cm, float* score, int64_t B, int64_t L, int64_t D, int N,
                                int64_t protect, void* workspace, size_t workspace_bytes, void* stream_ptr) {
  if (N != kNP) return fail(kSimbaAotUnsupported, "the compiled score has d_state 16, got " + std::to_string(N));
  Device dev;
  bool empty = false;
  if (int rc = begin("score", B, L, D, &dev, &empty); rc != 0 || empty) return rc;
  const int aligned = D % 16 == 0 ? 1 : 0;
  const ScoreLaunch s = score_launch(B, L, D);
  const int last_idx = find_kernel(dev.cc, kOpScoreLast, s.variant, half, aligned);
  const int sums_idx = find_kernel(dev.cc, kOpScoreSums, 0, half, aligned);
  if (last_idx < 0 || (s.chunks > 1 && sums_idx < 0))
    return fail(kSimbaAotUnsupported, "no score cubin for sm_" + std::to_string(dev.cc));
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  ScoreWorkspace w{};
  CallWorkspace ws;
  if (int rc = get_workspace(workspace, workspace_bytes, score_layout(B, L, D, N, nullptr, &w), stream, &ws)) return rc;
  score_layout(B, L, D, N, static_cast<char*>(ws.ptr), &w);
  log2e_transposed_kernel<<<static_cast<unsigned>(cdiv(D * N, 256)), 256, 0, stream>>>(A, w.a2t, D, N);
  if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return static_cast<int>(e);
  const int32_t Li = static_cast<int32_t>(L), Di = static_cast<int32_t>(D), LD = static_cast<int32_t>(L * D);
  const int32_t sums_b = static_cast<int32_t>(s.chunks * D);
  if (s.chunks > 1) {
    // SUMS_ARGS: delta, bias, mask, sums; L, D, s_db, s_dl, s_mb, s_ml, s_sb, s_sc, CHUNK
    CUdeviceptr ptrs[4] = {dptr(delta), dptr(delta_bias), dptr(w.part), dptr(w.sums)};
    const int32_t ints[9] = {Li, Di, LD, Di, 0, 0, sums_b, Di, static_cast<int32_t>(s.chunk_tiles * kScoreBlockT)};
    std::vector<void*> params = param_list(ptrs, 4, ints, 9);
    if (int rc = launch((*dev.fns)[sums_idx], simba_aot_kernels[sums_idx], static_cast<unsigned>(B),
                        static_cast<unsigned>(s.n_dblk), static_cast<unsigned>(s.chunks), stream, params))
      return rc;
  }
  // LAST_ARGS: u, delta, bias, a2t, B, C, tlast, mask, sums, part; L, D, s_ub, s_ul, s_db, s_dl, s_bb, s_bl,
  // s_cb, s_cl, s_mb, s_ml, s_sb, s_sc, s_pb, s_pd, CHUNK_TILES (B and C in their own type, [B, L, N])
  CUdeviceptr ptrs[10] = {dptr(u), dptr(delta), dptr(delta_bias), dptr(w.a2t), dptr(Bm), dptr(Cm), dptr(w.part),
                          dptr(w.part), dptr(w.sums ? w.sums : w.part), dptr(w.part)};
  const int32_t LN = static_cast<int32_t>(L * N);
  const int32_t ints[17] = {Li, Di, LD, Di, LD, Di, LN, N, LN, N, 0, 0, sums_b, Di,
                            static_cast<int32_t>(s.n_dblk * L), Li, static_cast<int32_t>(s.chunk_tiles)};
  std::vector<void*> params = param_list(ptrs, 10, ints, 17);
  if (int rc = launch((*dev.fns)[last_idx], simba_aot_kernels[last_idx], static_cast<unsigned>(B),
                      static_cast<unsigned>(s.n_dblk), static_cast<unsigned>(s.chunks), stream, params))
    return rc;
  score_max_kernel<<<static_cast<unsigned>(cdiv(B * L, 256)), 256, 0, stream>>>(w.part, score, B, L, s.n_dblk,
                                                                                 protect);
  cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? 0 : static_cast<int>(e);
}

int simba_aot_causal_conv1d(int half, const void* x, const float* weight, const float* bias, void* u, int64_t B,
                            int64_t L, int64_t D, int K, int silu, void* stream_ptr) {
  if (K != kConvWidth) return fail(kSimbaAotUnsupported, "the compiled conv has width 4, got " + std::to_string(K));
  Device dev;
  bool empty = false;
  if (int rc = begin("conv", B, L, D, &dev, &empty); rc != 0 || empty) return rc;
  const int idx = find_kernel(dev.cc, kOpConv, silu ? 0 : 1, half, D % 16 == 0 ? 1 : 0);
  if (idx < 0) return fail(kSimbaAotUnsupported, "no conv cubin for sm_" + std::to_string(dev.cc));
  // CONV_ARGS without the constexprs: x, w, bias, state (unread), out; L, D, s_xb, s_xl, s_wd, s_sb, s_sd, s_sk,
  // s_ob, s_ol (x and out contiguous [B, L, D], weight [D, K])
  CUdeviceptr ptrs[5] = {dptr(x), dptr(weight), dptr(bias), dptr(x), dptr(u)};
  const int32_t LD = static_cast<int32_t>(L * D), Di = static_cast<int32_t>(D);
  const int32_t ints[10] = {static_cast<int32_t>(L), Di, LD, Di, K, 0, 0, 0, LD, Di};
  std::vector<void*> params = param_list(ptrs, 5, ints, 10);
  return launch((*dev.fns)[idx], simba_aot_kernels[idx], static_cast<unsigned>(cdiv(L, kConvBlockL)),
                static_cast<unsigned>(cdiv(D, kConvBlockD)), static_cast<unsigned>(B),
                static_cast<cudaStream_t>(stream_ptr), params);
}

int simba_aot_select_kept(const float* score, int64_t* slots, int64_t B, int64_t L, int64_t k, int64_t protect,
                          void* stream_ptr) {
  int log2 = kSelectMinLog2;
  while ((int64_t{1} << log2) < L && log2 <= kSelectMaxLog2) ++log2;
  if (log2 > kSelectMaxLog2)
    return fail(kSimbaAotUnsupported, "the compiled selection holds rows of up to 16384 scores, got " +
                                          std::to_string(L));
  Device dev;
  bool empty = false;
  if (int rc = begin("selection", B, L, 1, &dev, &empty); rc != 0 || empty || k == 0) return rc;
  const int idx = find_kernel(dev.cc, kOpSelect, log2, 0, 1);
  if (idx < 0) return fail(kSimbaAotUnsupported, "no selection cubin for sm_" + std::to_string(dev.cc));
  // SELECT_ARGS without BLOCK: scores, slots; L, n_prot, k, s_row, o_row (both contiguous)
  CUdeviceptr ptrs[2] = {dptr(score), dptr(slots)};
  const int32_t Li = static_cast<int32_t>(L), ki = static_cast<int32_t>(k);
  const int32_t ints[5] = {Li, static_cast<int32_t>(std::min(protect, L)), ki, Li, ki};
  std::vector<void*> params = param_list(ptrs, 2, ints, 5);
  return launch((*dev.fns)[idx], simba_aot_kernels[idx], static_cast<unsigned>(B), 1, 1,
                static_cast<cudaStream_t>(stream_ptr), params);
}

}  // extern "C"
