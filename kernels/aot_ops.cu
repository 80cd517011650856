// Host side of the ahead-of-time compiled Triton kernels (aot_ops.h): finds the cubin for this GPU in the table
// `python3 -m simba_convert.ops.aot` generated, loads it once per device, and launches it with the launch rules
// of scan/triton.py's `scan_forward` (the "auto" forward of inference: split-sequence below 1024 programs from
// L = 256, else one sequential pass; the PyTorch side's "chunk" kernel for short, small launches is replaced by the
// sequential one here). The CUDA driver API is looked up with dlopen, so the library still loads where no driver
// is installed (the CPU kernels need none).
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
int find_kernel(int cc, int kind, int half, int aligned) {
  for (int pass = 0; pass < 2; ++pass) {
    for (int i = 0; i < simba_aot_kernel_count; ++i) {
      const simba_aot_kernel& k = simba_aot_kernels[i];
      if (k.kind != kind || k.half != half || k.aligned != aligned) continue;
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

// Every cubin of the table loaded into the current device's primary context (once per device).
int functions(int dev, const std::vector<CUfunction>** out) {
  Loaded& l = loaded();
  std::call_once(l.once[dev], [&] {
    cudaFree(nullptr);  // makes the device's primary context current on this thread
    std::vector<CUfunction> fns(simba_aot_kernel_count, nullptr);
    int cc_major = 0, cc_minor = 0;
    cudaDeviceGetAttribute(&cc_major, cudaDevAttrComputeCapabilityMajor, dev);
    cudaDeviceGetAttribute(&cc_minor, cudaDevAttrComputeCapabilityMinor, dev);
    const int cc = cc_major * 10 + cc_minor;
    for (int i = 0; i < simba_aot_kernel_count; ++i) {
      const simba_aot_kernel& k = simba_aot_kernels[i];
      if (find_kernel(cc, k.kind, k.half, k.aligned) != i) continue;
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

struct Workspace {
  float *a2t, *b, *c, *hend, *dsum;
};

size_t layout(int half, int64_t B, int64_t L, int64_t D, int N, char* base, Workspace* w) {
  const int64_t S = [&] { int64_t s; return segments(B, L, D, &s); }();
  size_t off = 0;
  auto take = [&](size_t bytes) {
    float* p = base ? reinterpret_cast<float*>(base + off) : nullptr;
    off += align256(bytes);
    return p;
  };
  w->a2t = take(sizeof(float) * N * D);
  w->b = half ? take(sizeof(float) * B * L * N) : nullptr;
  w->c = half ? take(sizeof(float) * B * L * N) : nullptr;
  w->hend = S > 1 ? take(sizeof(float) * B * (S - 1) * D * N) : nullptr;
  w->dsum = S > 1 ? take(sizeof(float) * B * (S - 1) * D) : nullptr;
  return off;
}

__global__ void log2e_transposed_kernel(const float* __restrict__ A, float* __restrict__ out, int64_t D, int N) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;  // over [N, D]
  if (i < D * N) out[i] = A[(i % D) * N + i / D] * kLog2e;
}

__global__ void upcast_kernel(const __half* __restrict__ x, float* __restrict__ out, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = __half2float(x[i]);
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

}  // namespace

extern "C" {

size_t simba_aot_selective_scan_workspace(int half, int64_t B, int64_t L, int64_t D, int N) {
  Workspace w{};
  return layout(half, B, L, D, N, nullptr, &w);
}

const char* simba_aot_last_error(void) { return last_error.c_str(); }
const char* simba_aot_triton_version_string(void) { return simba_aot_triton_version; }

int simba_aot_available(void) {
  if (!driver().ok) return 0;
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev >= kMaxDevices) return 0;
  int major = 0, minor = 0;
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
  cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
  return find_kernel(major * 10 + minor, 0, 0, 1) >= 0 ? 1 : 0;
}

int simba_aot_selective_scan(int half, const void* u, const void* delta, const float* A, const void* Bm,
                             const void* Cm, const float* Dskip, const void* z, const float* delta_bias, void* y,
                             float* last_state, int64_t B, int64_t L, int64_t D, int N, void* workspace,
                             size_t workspace_bytes, void* stream_ptr) {
  if (!driver().ok) return fail(kSimbaAotUnsupported, "the CUDA driver library (libcuda.so.1) did not load");
  if (N != kNP) return fail(kSimbaAotUnsupported, "the compiled scan has d_state 16, got " + std::to_string(N));
  if (B * L * std::max<int64_t>(D, N) >= (int64_t{1} << 31) || B > 65535)
    return fail(kSimbaAotUnsupported, "the compiled scan takes 32-bit sizes");
  if (L == 0 || B == 0 || D == 0) return 0;
  int dev = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e != cudaSuccess) return static_cast<int>(e);
  if (dev >= kMaxDevices) return fail(kSimbaAotUnsupported, "device index out of range");
  int major = 0, minor = 0;
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
  cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
  const int cc = major * 10 + minor, aligned = D % 16 == 0 ? 1 : 0;
  int64_t seg_len = L;
  const int64_t S = segments(B, L, D, &seg_len);
  const int kinds[2] = {S > 1 ? 1 : 0, 2};
  int idx[2] = {find_kernel(cc, kinds[0], half, aligned), find_kernel(cc, kinds[1], half, aligned)};
  if (idx[0] < 0 || (S > 1 && idx[1] < 0))
    return fail(kSimbaAotUnsupported, "no scan cubin for sm_" + std::to_string(cc));
  const std::vector<CUfunction>* fns = nullptr;
  if (int rc = functions(dev, &fns)) return rc;
  Workspace w{};
  if (layout(half, B, L, D, N, static_cast<char*>(workspace), &w) > workspace_bytes)
    return fail(kSimbaAotUnsupported, "workspace too small");
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
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
  if ((e = cudaGetLastError()) != cudaSuccess) return static_cast<int>(e);
  // The kernel's non-constexpr arguments in order (simba_convert/ops/aot.py SCAN_ARGS without the constexprs
  // and the unit strides); pointers the specialisation never reads still take their slots.
  const void* ptrs[14] = {u, delta, z, bp, cp, w.a2t, Dskip, delta_bias, u, y, last_state, y,
                          w.hend ? static_cast<const void*>(w.hend) : y, w.dsum ? static_cast<const void*>(w.dsum) : y};
  CUdeviceptr dp[14];
  for (int i = 0; i < 14; ++i) dp[i] = reinterpret_cast<CUdeviceptr>(ptrs[i]);
  const int32_t ints[18] = {static_cast<int32_t>(L), static_cast<int32_t>(D), N,
                            static_cast<int32_t>(cdiv(L, kChunk)), static_cast<int32_t>(seg_len),
                            static_cast<int32_t>(S),
                            static_cast<int32_t>(L * D), static_cast<int32_t>(D),   // u: b, t
                            static_cast<int32_t>(L * D), static_cast<int32_t>(D),   // delta
                            static_cast<int32_t>(L * D), static_cast<int32_t>(D),   // z
                            static_cast<int32_t>(L * N), N,                         // B (fp32 rows)
                            static_cast<int32_t>(L * N), N,                         // C
                            static_cast<int32_t>(L * D), static_cast<int32_t>(D)};  // y
  std::vector<void*> params;
  for (auto& p : dp) params.push_back(&p);
  for (const auto& v : ints) params.push_back(const_cast<int32_t*>(&v));
  const unsigned gx = static_cast<unsigned>(cdiv(D, kBlockD)), gy = static_cast<unsigned>(B);
  if (S > 1) {
    if (int rc = launch((*fns)[idx[0]], simba_aot_kernels[idx[0]], gx, gy, static_cast<unsigned>(S - 1), stream,
                        params))
      return rc;
    return launch((*fns)[idx[1]], simba_aot_kernels[idx[1]], gx, gy, static_cast<unsigned>(S), stream, params);
  }
  return launch((*fns)[idx[0]], simba_aot_kernels[idx[0]], gx, gy, 1, stream, params);
}

}  // extern "C"
