// CUDA execution-provider registrations of the simba ops (cuda_ops.cc); compiled with SIMBA_WITH_CUDA only.
#pragma once

#include "ort_common.h"

namespace simba_ort {
// Appends SelectiveScan and ImpactScore (fp32, fp16) for "CUDAExecutionProvider" to `ops`.
void add_cuda_ops(OpList& ops);
}  // namespace simba_ort
