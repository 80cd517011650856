// extern "C" launchers of cuda_kernels.cu. All pointers are device pointers, `stream` a cudaStream_t
// (ORT's compute stream); `half` = 1 for fp16 u/delta/B/C/z/y, 0 for fp32. Shapes as in simba_kernels.h.
// Each returns a cudaError_t as int (0 = success); N must be in [1, kSimbaCudaMaxState].
#pragma once

#include <cstdint>

static constexpr int kSimbaCudaMaxState = 64;

// Exported (with RegisterCustomOps) so that tests and benchmarks can call the kernels through ctypes.
#define SIMBA_CUDA_API __attribute__((visibility("default")))

extern "C" {
SIMBA_CUDA_API int simba_cuda_selective_scan(int half, const void* u, const void* delta, const float* A, const void* Bm,
                              const void* Cm, const float* Dskip, const void* z, const float* delta_bias,
                              void* y, float* last_state, int64_t B, int64_t L, int64_t D, int N, void* stream);
// criterion 0 = last, 1 = global; `score` [B, L] fp32 is also the scratch of the atomic max.
SIMBA_CUDA_API int simba_cuda_impact_score(int half, const void* u, const float* delta, const float* A, const void* Bm,
                            const void* Cm, float* score, int64_t B, int64_t L, int64_t D, int N, int criterion,
                            int signed_score, void* stream);
// The same with the optional fused softplus (dbias given: delta is RAW, softplus(delta + dbias) is formed in the
// kernel; delta has u's type when raw_is_t, else fp32) and `protect`: the last protect positions of each row
// score +inf (SelectiveScanScore).
SIMBA_CUDA_API int simba_cuda_impact_score_raw(int half, const void* u, const void* delta, int raw_is_t, const float* dbias,
                                const float* A, const void* Bm, const void* Cm, float* score, int64_t B, int64_t L,
                                int64_t D, int N, int criterion, int signed_score, int64_t protect, void* stream);
// u [B, L, D] = act(bias + causal depthwise conv of x [B, L, D] with weight [D, K]); act = SiLU when silu.
SIMBA_CUDA_API int simba_cuda_causal_conv1d(int half, const void* x, const float* weight, const float* bias, void* u,
                                            int64_t B, int64_t L, int64_t D, int K, int silu, void* stream);
// SelectKept without a compiled kernel for this GPU or length: score copied to the host, each row chosen there
// (select_kept.h), the slots copied back; synchronises `stream` (a fallback, not a fast path).
SIMBA_CUDA_API int simba_cuda_select_kept_host(const float* score, int64_t* slots, int64_t B, int64_t L, int64_t k,
                                               int64_t protect, void* stream);
SIMBA_CUDA_API const char* simba_cuda_error_string(int code);
}
