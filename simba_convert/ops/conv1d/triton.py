"""Fused Triton forward of the causal depthwise conv1d (contract: `causal_conv1d_ref`, naive.py), token-major.

Shapes: x [B, L, D] with any strides (in the mixer, the first half of in_proj's output: strides
(L·2D, 2D, 1)); weight [D, K]; bias [D]; initial_state [B, D, K-1]; out [B, L, D] contiguous, x's dtype.

The reference transposes x to [B, D, L] for `F.conv1d` and the result back, two copies of [B, L, D] on top
of the conv itself. This kernel reads x where it lies: a program owns one sample, BLOCK_L time steps and
BLOCK_D channels, and loads K row-shifted [BLOCK_L, BLOCK_D] tiles of x, each row a contiguous run of
channels (coalesced). The K-1 rows of halo a tile shares with its neighbour, and the K-1 re-reads of its
own rows, come from L1/L2, so DRAM sees x about once.

Floor: read x once and write out once, 2·B·L·D·elem bytes (weight, bias and state are O(D·K) and
O(B·D·K)). At the 1.4B shape B=4, L=2048, D=4096 in bf16 that is 134 MB, ≈ 0.033 ms at ~4.1 TB/s.
Arithmetic is K FMAs (plus a SiLU) per element: memory-bound.

Forward only: there is no backward; the dispatcher `causal_conv1d` runs the reference when autograd needs
gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ...errors import ShapeError
from .. import _alloc
from .._triton_common import cast_rne


@dataclass(frozen=True)
class LaunchConfig:
    """Time steps and channels per program, and warps.

    32 steps × 128 channels with 2 warps was the fastest of 36 configs (or tied, within 0.1 µs) at every shape of
    benchmarks/investigations/sweep_conv_launch.py (1.4B layer, bf16, H200: 1×2048 21.8 µs, 4×2048 58.4,
    16×2048 205.1, 1×8192 59.0; results/sweep_conv_launch_h200.json); 4 warps, the first guess, was 3–11 % slower.
    """

    block_l: int = 32
    block_d: int = 128
    num_warps: int = 2


def default_config() -> LaunchConfig:
    return LaunchConfig()


@triton.jit
def _causal_conv1d_fwd_kernel(
    x_ptr, w_ptr, bias_ptr, state_ptr, out_ptr, L, D,
    s_xb, s_xl, s_xd, s_wd, s_wk, s_sb, s_sd, s_sk, s_ob, s_ol, s_od,
    K: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_STATE: tl.constexpr, SILU: tl.constexpr,
    BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """out[b, t, d] = act(bias[d] + Σ_k w[d, k] · x[b, t-K+1+k, d]), x before t = 0 read from the state (or 0)."""
    pid_l, pid_d, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    offs_t = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    t_ok = offs_t < L
    d_ok = offs_d < D
    b = pid_b.to(tl.int64)
    acc = tl.zeros([BLOCK_L, BLOCK_D], dtype=tl.float32)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_d, mask=d_ok, other=0.0).to(tl.float32)[None, :]
    for k in tl.static_range(K):
        w = tl.load(w_ptr + offs_d * s_wd + k * s_wk, mask=d_ok, other=0.0).to(tl.float32)
        src = offs_t - (K - 1 - k)  # source time step; negative ones lie in the state
        in_x = (src >= 0) & t_ok
        xv = tl.load(
            x_ptr + b * s_xb + src.to(tl.int64)[:, None] * s_xl + offs_d[None, :] * s_xd,
            mask=in_x[:, None] & d_ok[None, :], other=0.0,
        )
        xv = xv.to(tl.float32)
        if HAS_STATE:
            # Only the first time block reaches back into the state; the branch keeps the other blocks from
            # issuing its (channel-strided, unvectorised) loads at all.
            if pid_l * BLOCK_L < K - 1 - k:
                in_s = (src < 0) & t_ok
                sv = tl.load(
                    state_ptr + b * s_sb + offs_d[None, :] * s_sd + (src + K - 1)[:, None] * s_sk,
                    mask=in_s[:, None] & d_ok[None, :], other=0.0,
                )
                # The reference (and the decoding step) cast the state to x's dtype before using it.
                xv += cast_rne(sv.to(tl.float32), x_ptr.dtype.element_ty).to(tl.float32)
        acc += xv * w[None, :]
    if SILU:
        acc = acc * tl.sigmoid(acc)
    tl.store(
        out_ptr + b * s_ob + offs_t.to(tl.int64)[:, None] * s_ol + offs_d[None, :] * s_od,
        cast_rne(acc, out_ptr.dtype.element_ty), mask=t_ok[:, None] & d_ok[None, :],
    )


def causal_conv1d_triton(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    activation: str | None = "silu",
    out: torch.Tensor | None = None,
    config: LaunchConfig | None = None,
) -> torch.Tensor:
    """The contract of `causal_conv1d_ref` in one pass over x (any strides), fp32 arithmetic.

    Returns out [B, L, D] in x's dtype: a new contiguous tensor, or `out` (any strides) when given.
    """
    if activation not in ("silu", None):
        raise ShapeError(f"unknown activation {activation!r}")
    if x.dim() != 3:
        raise ShapeError(f"causal_conv1d: x must be [B, L, D], got {tuple(x.shape)}")
    bsz, L, D = x.shape
    if weight.dim() != 2 or weight.shape[0] != D:
        raise ShapeError(f"causal_conv1d: weight must be [D, K] = [{D}, K], got {tuple(weight.shape)}")
    K = weight.shape[1]
    if bias is not None and tuple(bias.shape) != (D,):
        raise ShapeError(f"causal_conv1d: bias must be [D] = [{D}], got {tuple(bias.shape)}")
    if initial_state is not None and tuple(initial_state.shape) != (bsz, D, K - 1):
        raise ShapeError(
            f"causal_conv1d: initial_state must be [B, D, K-1] = [{bsz}, {D}, {K - 1}], got {tuple(initial_state.shape)}"
        )
    if out is None:
        out = _alloc.empty(bsz, L, D, device=x.device, dtype=x.dtype)
    elif out.shape != x.shape or out.dtype != x.dtype or out.device != x.device:
        raise ShapeError(f"causal_conv1d: out must be {x.dtype} {tuple(x.shape)} on {x.device}, got "
                         f"{out.dtype} {tuple(out.shape)} on {out.device}")
    if bsz == 0 or L == 0 or D == 0:
        return out
    cfg = config or default_config()
    # Absent optional tensors are passed as x: the kernel does not read them (HAS_BIAS, HAS_STATE false).
    b = bias.contiguous() if bias is not None else x
    s = initial_state if initial_state is not None else x
    s_strides = initial_state.stride() if initial_state is not None else (0, 0, 0)
    grid = (triton.cdiv(L, cfg.block_l), triton.cdiv(D, cfg.block_d), bsz)
    _causal_conv1d_fwd_kernel[grid](
        x, weight, b, s, out, L, D, *x.stride(), *weight.stride(), *s_strides, *out.stride(),
        K=K, HAS_BIAS=bias is not None, HAS_STATE=initial_state is not None, SILU=activation == "silu",
        BLOCK_L=cfg.block_l, BLOCK_D=cfg.block_d, num_warps=cfg.num_warps,
    )
    return out
