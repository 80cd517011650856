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
    """delta = softplus(x) in fp32 (x itself without SOFTPLUS) and d delta / dx; any shape."""
    if SOFTPLUS:
        e = tl.exp(tl.minimum(x, 20.0))
        w = 1.0 + e
        # log1p(e) without log1p (Goldberg): exact where w rounds to 1, accurate elsewhere.
        lp = tl.where(w == 1.0, e, tl.log(w) * e / (w - 1.0))
        return tl.where(x > 20.0, x, lp), tl.where(x > 20.0, 1.0, e / w)
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
