"""Fused Triton kernels for one decoding step (contracts: `conv_step_ref`, `ssm_step_ref`, naive.py).

Shapes: x, u, dt, z [B, D] with any strides (in the mixer x and z are the halves of in_proj's [B, 2D]
output, Bm and Cm split views of x_proj's [B, R+2N] output); conv_state [B, D, K-1]; weight [D, K];
A [D, N] fp32; ssm_state [B, D, N] fp32. Outputs: u / y [B, D] in x's / u's dtype, new states.

`MambaMixer.step` spends ~30 small PyTorch kernels a layer on this; here the conv (window, K FMAs, bias,
SiLU, state shift) is one launch and the SSM update (softplus, exp, state update, readout, skip, gate) another.
Each program owns one batch row and BLOCK_D channels; the SSM program holds a [BLOCK_D, NP] state tile in
registers (N padded to a power of two, masked), reads the state once and writes the new one once.

Floor: the state read + write, B·D·N·8 bytes (plus O(B·D) vectors): 0.5 MB at B=1, D=4096, N=16, about
0.12 µs at ~4.1 TB/s. Both kernels are therefore launch-bound (a few µs a launch); their worth is replacing
~30 launches by 2, not bandwidth.

Forward only: the dispatchers `conv_step` / `ssm_step` run the references when autograd needs gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ...errors import ShapeError
from .. import _alloc
from .._triton_common import LOG2E as _LOG2E  # named apart from the kernel's constexpr argument LOG2E
from .._triton_common import cast_rne, delta_act


@dataclass(frozen=True)
class LaunchConfig:
    """Channels per program and warps.

    Not swept (the decode they serve is timed in BENCHMARKS.md, "Generation"). ssm: 32 channels and 4 warps
    (B=1, D=4096: 128 programs, about one per SM on an H200). conv: 128 channels × K taps is ≤ 4 values a
    thread at 4 warps.
    """

    conv_block_d: int = 128
    conv_num_warps: int = 4
    ssm_block_d: int = 32
    ssm_num_warps: int = 4


def default_config() -> LaunchConfig:
    return LaunchConfig()


@triton.jit
def _conv_step_kernel(
    x_ptr, state_ptr, w_ptr, bias_ptr, out_ptr, new_state_ptr, D,
    s_xb, s_xd, s_sb, s_sd, s_sk, s_wd, s_wk, s_bd, s_ob, s_od, s_nb, s_nd, s_nk,
    K: tl.constexpr, KP: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """window[d, k] = state[b, d, k] (k < K-1, cast to x's dtype) or x[b, d] (k = K-1);
    out[b, d] = act(Σ_k w[d, k]·window[d, k] + bias[d]); new_state[b, d, k-1] = window[d, k] for k ≥ 1."""
    pid_d, pid_b = tl.program_id(0), tl.program_id(1)
    b = pid_b.to(tl.int64)
    d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    k = tl.arange(0, KP)
    d_ok = d < D
    xv = tl.load(x_ptr + b * s_xb + d * s_xd, mask=d_ok, other=0.0)
    in_state = d_ok[:, None] & (k[None, :] < K - 1)
    sv = tl.load(state_ptr + b * s_sb + d[:, None] * s_sd + k[None, :] * s_sk, mask=in_state, other=0.0)
    # The step casts the state to x's dtype before the window is formed (torch.cat of conv_state.to(x.dtype)).
    sv = cast_rne(sv.to(tl.float32), x_ptr.dtype.element_ty)
    window = tl.where(k[None, :] == K - 1, xv[:, None], sv)  # [BLOCK_D, KP], x's dtype; zero past K
    in_w = d_ok[:, None] & (k[None, :] < K)
    w = tl.load(w_ptr + d[:, None] * s_wd + k[None, :] * s_wk, mask=in_w, other=0.0).to(tl.float32)
    acc = tl.sum(window.to(tl.float32) * w, axis=1)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + d * s_bd, mask=d_ok, other=0.0).to(tl.float32)
    if SILU:
        acc = acc * tl.sigmoid(acc)
    tl.store(out_ptr + b * s_ob + d * s_od, cast_rne(acc, out_ptr.dtype.element_ty), mask=d_ok)
    # The new state is the window shifted left by one: store the tile one slot lower, dropping slot 0.
    keep = d_ok[:, None] & (k[None, :] >= 1) & (k[None, :] < K)
    tl.store(new_state_ptr + b * s_nb + d[:, None] * s_nd + (k[None, :] - 1) * s_nk, window, mask=keep)


@triton.jit
def _ssm_step_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, Dskip_ptr, z_ptr, dt_bias_ptr, state_ptr, y_ptr, new_state_ptr, D, N,
    s_ub, s_ud, s_tb, s_td, s_ad, s_an, s_Bb, s_Bn, s_Cb, s_Cn, s_Dd, s_zb, s_zd, s_gd,
    s_hb, s_hd, s_hn, s_yb, s_yd, s_nb, s_nd, s_nn,
    LOG2E: tl.constexpr, NP: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """delta = softplus(dt + dt_bias); h = exp(delta·A)⊙state + delta·u·B; y = (Σ_n h·C + Dskip·u)·silu(z)."""
    pid_d, pid_b = tl.program_id(0), tl.program_id(1)
    b = pid_b.to(tl.int64)
    d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    n = tl.arange(0, NP)
    d_ok, n_ok = d < D, n < N
    dn_ok = d_ok[:, None] & n_ok[None, :]
    u = tl.load(u_ptr + b * s_ub + d * s_ud, mask=d_ok, other=0.0).to(tl.float32)
    dt = tl.load(dt_ptr + b * s_tb + d * s_td, mask=d_ok, other=0.0).to(tl.float32)
    z = tl.load(z_ptr + b * s_zb + d * s_zd, mask=d_ok, other=0.0).to(tl.float32)
    dt_bias = tl.load(dt_bias_ptr + d * s_gd, mask=d_ok, other=0.0).to(tl.float32)
    dskip = tl.load(Dskip_ptr + d * s_Dd, mask=d_ok, other=0.0).to(tl.float32)
    A = tl.load(A_ptr + d[:, None] * s_ad + n[None, :] * s_an, mask=dn_ok, other=0.0).to(tl.float32)
    Bv = tl.load(B_ptr + b * s_Bb + n * s_Bn, mask=n_ok, other=0.0).to(tl.float32)
    Cv = tl.load(C_ptr + b * s_Cb + n * s_Cn, mask=n_ok, other=0.0).to(tl.float32)
    h = tl.load(state_ptr + b * s_hb + d[:, None] * s_hd + n[None, :] * s_hn, mask=dn_ok, other=0.0)
    delta, _ = delta_act(dt + dt_bias, True)
    dA = tl.exp2(delta[:, None] * (A * LOG2E))
    h = dA * h.to(tl.float32) + (delta * u)[:, None] * Bv[None, :]
    y = tl.sum(h * Cv[None, :], axis=1) + dskip * u
    y = y * (z * tl.sigmoid(z))
    tl.store(y_ptr + b * s_yb + d * s_yd, cast_rne(y, y_ptr.dtype.element_ty), mask=d_ok)
    tl.store(new_state_ptr + b * s_nb + d[:, None] * s_nd + n[None, :] * s_nn, h, mask=dn_ok)


def _check_out(name: str, buf: torch.Tensor | None, shape, dtype, device) -> torch.Tensor:
    if buf is None:
        return _alloc.empty(*shape, device=device, dtype=dtype)
    if tuple(buf.shape) != tuple(shape) or buf.dtype != dtype or buf.device != device:
        raise ShapeError(f"{name} must be {dtype} {tuple(shape)} on {device}, got {buf.dtype} {tuple(buf.shape)} "
                         f"on {buf.device}")
    return buf


def _overlaps(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.numel() == 0 or b.numel() == 0:
        return False
    a0, b0 = a.data_ptr(), b.data_ptr()
    a1 = a0 + (sum((s - 1) * st for s, st in zip(a.shape, a.stride())) + 1) * a.element_size()
    b1 = b0 + (sum((s - 1) * st for s, st in zip(b.shape, b.stride())) + 1) * b.element_size()
    return a0 < b1 and b0 < a1


def conv_step_triton(
    x: torch.Tensor,
    conv_state: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = "silu",
    *,
    out: torch.Tensor | None = None,
    state_out: torch.Tensor | None = None,
    config: LaunchConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The contract of `conv_step_ref` in one launch. Returns (u [B, D], new_state [B, D, K-1]), both in x's
    dtype: new contiguous tensors, or `out` / `state_out` (any strides) when given. `state_out` must not
    overlap conv_state (a channel's window is read and shifted by different threads)."""
    if activation not in ("silu", None):
        raise ShapeError(f"unknown activation {activation!r}")
    if x.dim() != 2:
        raise ShapeError(f"conv_step: x must be [B, D], got {tuple(x.shape)}")
    bsz, D = x.shape
    if weight.dim() != 2 or weight.shape[0] != D or weight.shape[1] < 1:
        raise ShapeError(f"conv_step: weight must be [D, K] = [{D}, K], got {tuple(weight.shape)}")
    K = weight.shape[1]
    if tuple(conv_state.shape) != (bsz, D, K - 1):
        raise ShapeError(f"conv_step: conv_state must be [B, D, K-1] = [{bsz}, {D}, {K - 1}], "
                         f"got {tuple(conv_state.shape)}")
    if bias is not None and tuple(bias.shape) != (D,):
        raise ShapeError(f"conv_step: bias must be [D] = [{D}], got {tuple(bias.shape)}")
    out = _check_out("conv_step: out", out, (bsz, D), x.dtype, x.device)
    state_out = _check_out("conv_step: state_out", state_out, (bsz, D, K - 1), x.dtype, x.device)
    if _overlaps(state_out, conv_state):
        raise ShapeError("conv_step: state_out must not overlap conv_state")
    if bsz == 0 or D == 0:
        return out, state_out
    cfg = config or default_config()
    s_strides = conv_state.stride() if K > 1 else (0, 0, 0)
    n_strides = state_out.stride() if K > 1 else (0, 0, 0)
    b = bias if bias is not None else x  # not read without HAS_BIAS
    grid = (triton.cdiv(D, cfg.conv_block_d), bsz)
    _conv_step_kernel[grid](
        x, conv_state if K > 1 else x, weight, b, out, state_out if K > 1 else out, D,
        *x.stride(), *s_strides, *weight.stride(), b.stride(-1), *out.stride(), *n_strides,
        K=K, KP=max(2, triton.next_power_of_2(K)), HAS_BIAS=bias is not None, SILU=activation == "silu",
        BLOCK_D=cfg.conv_block_d, num_warps=cfg.conv_num_warps,
    )
    return out, state_out


def ssm_step_triton(
    u: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    Bm: torch.Tensor,
    Cm: torch.Tensor,
    D: torch.Tensor,
    z: torch.Tensor,
    dt_bias: torch.Tensor,
    ssm_state: torch.Tensor,
    *,
    out: torch.Tensor | None = None,
    state_out: torch.Tensor | None = None,
    config: LaunchConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The contract of `ssm_step_ref` in one launch. Returns (y [B, D] in u's dtype, h [B, D, N] fp32): new
    contiguous tensors, or `out` / `state_out` (any strides) when given. `state_out` may be ssm_state itself
    (an in-place update: each state element is read and written by the same thread), but no other overlap."""
    if u.dim() != 2:
        raise ShapeError(f"ssm_step: u must be [B, D], got {tuple(u.shape)}")
    bsz, Dm = u.shape
    if A.dim() != 2 or A.shape[0] != Dm:
        raise ShapeError(f"ssm_step: A must be [D, N] = [{Dm}, N], got {tuple(A.shape)}")
    N = A.shape[1]
    for name, t, shape in (("dt", dt, (bsz, Dm)), ("z", z, (bsz, Dm)), ("Bm", Bm, (bsz, N)), ("Cm", Cm, (bsz, N)),
                           ("D", D, (Dm,)), ("dt_bias", dt_bias, (Dm,)), ("ssm_state", ssm_state, (bsz, Dm, N))):
        if tuple(t.shape) != shape:
            raise ShapeError(f"ssm_step: {name} must be {list(shape)}, got {tuple(t.shape)}")
    out = _check_out("ssm_step: out", out, (bsz, Dm), u.dtype, u.device)
    state_out = _check_out("ssm_step: state_out", state_out, (bsz, Dm, N), torch.float32, u.device)
    same = state_out.data_ptr() == ssm_state.data_ptr() and state_out.stride() == ssm_state.stride()
    if not same and _overlaps(state_out, ssm_state):
        raise ShapeError("ssm_step: state_out must be ssm_state itself or not overlap it")
    if bsz == 0 or Dm == 0 or N == 0:
        return out, state_out
    cfg = config or default_config()
    grid = (triton.cdiv(Dm, cfg.ssm_block_d), bsz)
    _ssm_step_kernel[grid](
        u, dt, A, Bm, Cm, D, z, dt_bias, ssm_state, out, state_out, Dm, N,
        *u.stride(), *dt.stride(), *A.stride(), *Bm.stride(), *Cm.stride(), D.stride(0), *z.stride(), dt_bias.stride(0),
        *ssm_state.stride(), *out.stride(), *state_out.stride(),
        LOG2E=_LOG2E, NP=max(2, triton.next_power_of_2(N)), BLOCK_D=cfg.ssm_block_d, num_warps=cfg.ssm_num_warps,
    )
    return out, state_out
