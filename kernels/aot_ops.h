// extern "C" launchers of our Triton kernels compiled ahead of time (aot_ops.cu; cubins made by
// `python3 -m simba_convert.ops.aot`, built in with `kernels/build.sh --aot`). Same conventions as
// cuda_kernels.h: device pointers, `stream` a cudaStream_t, `half` = 1 for fp16 u/delta/B/C/z/y. They return
// 0 on success, a cudaError_t (> 0), kSimbaAotUnsupported when no cubin fits this GPU or shape (then use the
// simba_cuda_* kernel instead), or kSimbaAotDriverError (simba_aot_last_error() says what failed).
#pragma once

#include <cstddef>
#include <cstdint>

#include "cuda_kernels.h"

static constexpr int kSimbaAotUnsupported = -1;
static constexpr int kSimbaAotDriverError = -2;

extern "C" {
// Bytes of device scratch simba_aot_selective_scan needs for this launch (A·log2 e transposed, fp32 copies of
// fp16 B and C, the split forward's segment summaries).
SIMBA_CUDA_API size_t simba_aot_selective_scan_workspace(int half, int64_t B, int64_t L, int64_t D, int N);
// As simba_cuda_selective_scan (softplus(delta + delta_bias), D skip, SiLU(z) gate, last state), with the
// kernel of scan/triton_seq.py and scan_forward's launch rules; `workspace` holds at least
// simba_aot_selective_scan_workspace(...) bytes, 256-byte aligned, or is nullptr (then allocated stream-ordered
// for the call with cudaMallocAsync and freed after it).
SIMBA_CUDA_API int simba_aot_selective_scan(int half, const void* u, const void* delta, const float* A,
                                            const void* Bm, const void* Cm, const float* Dskip, const void* z,
                                            const float* delta_bias, void* y, float* last_state, int64_t B,
                                            int64_t L, int64_t D, int N, void* workspace, size_t workspace_bytes,
                                            void* stream);
// The `last` impact score of SelectiveScanScore with the kernels of score/triton.py (impact_score_triton: raw
// delta, softplus(delta + delta_bias) inside, unsigned): score [B, L] fp32, the last `protect` positions +inf.
// B and C are read in u's type. workspace == nullptr: allocated stream-ordered for the call (cudaMallocAsync).
SIMBA_CUDA_API size_t simba_aot_impact_score_last_workspace(int64_t B, int64_t L, int64_t D, int N);
SIMBA_CUDA_API int simba_aot_impact_score_last(int half, const void* u, const void* delta, const float* delta_bias,
                                               const float* A, const void* Bm, const void* Cm, float* score,
                                               int64_t B, int64_t L, int64_t D, int N, int64_t protect,
                                               void* workspace, size_t workspace_bytes, void* stream);
// 1 when this process' current GPU has a cubin for the scan (and the CUDA driver library loads), else 0.
SIMBA_CUDA_API int simba_aot_available(void);
SIMBA_CUDA_API const char* simba_aot_triton_version_string(void);
// As simba_cuda_causal_conv1d (x, u [B, L, D] contiguous, weight [D, K] fp32, bias [D] fp32), with
// conv1d/triton.py's kernel; K = 4 only (else kSimbaAotUnsupported).
SIMBA_CUDA_API int simba_aot_causal_conv1d(int half, const void* x, const float* weight, const float* bias, void* u,
                                           int64_t B, int64_t L, int64_t D, int K, int silu, void* stream);
// SelectKept with pruning/select_triton.py's kernel: slots [B, k] int64 (ascending) of score [B, L] fp32, the last
// min(protect, L) positions kept; rows of up to 16384 scores (else kSimbaAotUnsupported); k <= L.
SIMBA_CUDA_API int simba_aot_select_kept(const float* score, int64_t* slots, int64_t B, int64_t L, int64_t k,
                                         int64_t protect, void* stream);
// The launch plans (host only, no GPU needed; tests compare them with the PyTorch side's rules): the scan's
// segment count (1 = one pass) and steps per segment, and the score's [variant, block_d, chunks, chunk_tiles].
SIMBA_CUDA_API int64_t simba_aot_scan_segments(int64_t B, int64_t L, int64_t D, int64_t* seg_len);
SIMBA_CUDA_API void simba_aot_score_plan(int64_t B, int64_t L, int64_t D, int64_t* out);
// The message of the last kSimbaAotUnsupported / kSimbaAotDriverError on this thread.
SIMBA_CUDA_API const char* simba_aot_last_error(void);
}
