"""Helpers shared by the Triton kernels of several ops: `@triton.jit` device functions and the host-side LOG2E
layout of A. Imported only by the ops' triton modules (it imports triton).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

LOG2E = math.log2(math.e)  # exp(x) = exp2(x·log2 e); kernels take it as a constexpr argument or a literal


@triton.jit
def delta_act(x, SOFTPLUS: tl.constexpr):
    """delta = softplus(x) in fp32 (x itself without SOFTPLUS) and d delta / dx; any shape.

    softplus(x) = max(x, 0) + log1p(e) with e = exp(-|x|) in (0, 1], and log1p(e) = 2 atanh(s) with
    s = e / (2 + e) in [0, 1/3], summed as the odd series 2s(1 + s²/3 + … + s¹²/13) (truncation below 2e-8
    relative; no rounding of 1 + e, so small e keep their relative precision). About 14 instructions per
    element, where `tl.log` compiles to libdevice's ~30-instruction logf: the scans form delta once per
    step and channel, so this is a sixth of their loop (ops/README.md, "Selective scan").
    """
    if SOFTPLUS:
        e = tl.exp(-tl.abs(x))
        s = tl.fdiv(e, 2.0 + e, ieee_rounding=False)
        s2 = s * s
        p = s2 * 0.07692307692307693 + 0.09090909090909091
        p = p * s2 + 0.1111111111111111
        p = p * s2 + 0.14285714285714285
        p = p * s2 + 0.2
        p = p * s2 + 0.3333333333333333
        p = p * s2 + 1.0
        r = tl.fdiv(1.0, 1.0 + e, ieee_rounding=False)
        return tl.maximum(x, 0.0) + (2.0 * s) * p, tl.where(x >= 0.0, r, e * r)
    return x, tl.full(x.shape, 1.0, tl.float32)


@triton.jit
def delta_from_raw(raw, bias, ok, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """The step size delta in fp32 from the loaded raw tile (any shape ending in BLOCK_D), 0 where not `ok`."""
    x = raw.to(tl.float32)
    if HAS_BIAS:
        x = x + bias
    x, _ = delta_act(x, SOFTPLUS)  # the scan's softplus, so both see the same delta; the unused slope is dropped
    return tl.where(ok, x, 0.0)


@triton.jit
def channel_vector(ptr, d, ok, PRESENT: tl.constexpr):
    """An optional per-channel vector (D skip, delta_bias) as fp32 [BD]: zeros when the tensor is absent."""
    if PRESENT:
        return tl.load(ptr + d, mask=ok, other=0.0).to(tl.float32)
    return tl.zeros(d.shape, tl.float32)


@triton.jit
def cast_rne(x, dtype: tl.constexpr):
    """fp32 x in `dtype`, rounded to nearest even, as torch rounds.

    For bf16 the rounding is done on the bits. The compiled cast (cvt.rn.bf16.f32) already rounds to nearest
    even, but the interpreter (TRITON_INTERPRET=1, triton 3.9) truncates, and the tests compare bits on the
    CPU; the few integer operations are free in these memory-bound kernels.
    """
    if dtype == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = bits + (((bits >> 16) & 1) + 0x7FFF)
        x = ((bits >> 16) << 16).to(tl.float32, bitcast=True)
    return x.to(dtype)


def log2e_transposed(A: torch.Tensor) -> torch.Tensor:
    """A·log2 e transposed, [N, D] fp32 contiguous: the layout of the scan's seq kernels and of the
    score kernels. A model's cached A carries it (`MambaMixer.fp32_params`), which saves two launches a layer."""
    cached = getattr(A, "_simba_log2e_t", None)
    if cached is not None and not A.requires_grad:
        return cached
    return (A.float() * LOG2E).t().contiguous()
