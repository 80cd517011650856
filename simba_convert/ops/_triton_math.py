"""Shared Triton device functions: the exp2 every scan and score kernel spends its special-function time on.

`tl.exp2` on fp32 lowers to `ex2.approx.f32`, which keeps denormal results: ptxas wraps the MUFU.EX2 in a
compare and two predicated multiplies. The kernels' exponents are A·(Σ delta) ≤ 0, and a decay below 2^-126
(≈ 1e-38) contributes nothing a fp32 sum can hold, so the flush-to-zero form `ex2.approx.ftz.f32` (the MUFU
alone) gives the same sums with 3 fewer instructions per exponential. It is inline PTX: NVIDIA only, and not
under TRITON_INTERPRET=1, where `tl.exp2` runs instead (what the CPU tests check against the references).
SIMBA_FAST_EXP2=0 turns it off (for measuring it; BENCHMARKS.md, "Against mamba_ssm").
"""

from __future__ import annotations

import os

import triton
import triton.language as tl


def fast_exp2() -> bool:
    """Whether kernels launched now take the flush-to-zero exp2 (read at every launch, so sweeps can toggle it)."""
    if os.environ.get("TRITON_INTERPRET", "0") == "1" or os.environ.get("SIMBA_FAST_EXP2", "1") == "0":
        return False
    import torch

    return torch.version.hip is None


@triton.jit
def exp2(x, FAST: tl.constexpr):
    """2^x in fp32; FAST: flush results below 2^-126 to 0 (one MUFU.EX2, see the module docstring)."""
    if FAST:
        return tl.inline_asm_elementwise("ex2.approx.ftz.f32 $0, $1;", "=f,f", [x], dtype=tl.float32,
                                         is_pure=True, pack=1)
    else:
        return tl.exp2(x)
