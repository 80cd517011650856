"""Triton Mamba-2 SSD (state-space duality) chunked scan, forward and backward, through `torch.autograd.Function`.

Shapes: x [B, L, H, P]; dt [B, L, H]; A, D, dt_bias [H] (A fp32, negative); B, C [B, L, G, N] with head h
reading group h // (H // G); initial and final state [B, H, P, N] fp32. Contract: `ssd_scan_ref` (naive.py).
Derivation of the forward and the backward: ops/README.md, "SSD scan (Mamba-2)".

Forward, per sample, head and chunk of T = chunk_size steps (δ = step size, s = in-chunk cumsum of δ·A):
  1. `_chunk_cumsum_kernel`   δ_t, s_t and Σ_{k>t} a_k (a = δ·A), [B, H, nc, T] fp32 (steps past L: δ = 0).
  2. `_chunk_outer_kernel`    chunk states S_c = xᵀ (exp(Σ_{k>t} a_k)·δ ∘ B), [B, nc, H, P, N] (one tl.dot).
  3. `_state_pass_fwd_kernel` H_{c+1} = exp(s_{T−1}) H_c + S_c over the chunks: the state entering each
                              chunk (kept for the backward) and the final state.
  4. `_chunk_scan_fwd_kernel` y = exp(s) ∘ (C H_cᵀ) + ((C Bᵀ) ∘ decay ∘ δ) x + D x (three tl.dot).
Backward: the same chunk-outer kernel forms U_c = dyᵀ (exp(s) ∘ C) (what the outputs of chunk c send
to H_c); `_state_pass_bwd_kernel` walks the chunks in reverse for dS_c = dH_{c+1}, dH_c, the gradient of
each chunk's total decay and d initial_state; `_chunk_scan_bwd_kernel` then gives, per chunk, dx, d dt,
per-head dB and dC, and per-chunk partial sums of dA and dD. Group sums (dB, dC over the heads of a
group) and batch/chunk sums (dA, dD, d dt_bias) are done by torch on those partial buffers: no atomics,
deterministic gradients. Every matmul is fp32-exact (`EXACT_DOT`, tf32x3) where the contract asks, and every
decay exponent is a direct sum of log-decays, never a difference of two cumulative sums.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ...errors import ConfigError, ShapeError
from .. import _alloc
from .._triton_common import delta_act
from ..backend import needs_grad

# The fp32-exact matmul: "tf32x3" splits each fp32 operand into a tf32 head and a tf32 tail and sums three
# tensor-core products (the tail·tail one, ~2^-22 relative, is dropped), so products keep fp32 accuracy; "ieee"
# (CUDA-core FMA) was ~60x slower on the H200 (BENCHMARKS.md, "SSD scan"). Plain tf32 would break the fp32
# contract (~1e-3).
EXACT_DOT = "tf32x3"


def dot_precision(dtype: torch.dtype, exact: bool) -> str:
    """The matmul precision: fp32-exact (`EXACT_DOT`) for fp32 inputs, as the contract asks, and whenever a backward
    will follow (its gradients, fp32 for A, D and dt_bias, are held to the fp32 contract); for inference on bf16 /
    fp16 inputs, tf32 tensor cores, whose 11-bit mantissa holds those inputs exactly (only the fp32 decay weights,
    the states and the sums round, at ~5e-4 relative, inside those dtypes' own error)."""
    return EXACT_DOT if exact or dtype == torch.float32 else "tf32"


@dataclass(frozen=True)
class LaunchConfig:
    """Tile sizes and warps. Not yet measured on a GPU (this kernel was written and tested under the
    interpreter only): block_p keeps the forward's [T, block_p] output tile and its [N, block_p] state tile
    small; state_block is the number of state elements one program of the state passing carries."""

    block_p: int = 64
    state_block: int = 1024
    num_warps: int = 4
    bwd_num_warps: int = 8

    def __post_init__(self):
        for name in ("block_p", "state_block"):
            v = getattr(self, name)
            if v < 16 or v & (v - 1):
                raise ConfigError(f"ssd scan {name} must be a power of two >= 16, got {v}")


def default_config() -> LaunchConfig:
    return LaunchConfig()


# The longest chunk the dispatcher hands these kernels: a chunk's [T, T] decay and C·Bᵀ tiles live in registers
# (T² fp32 values: 64 K at mamba_ssm's T = 256, 4 K at 64). Speed by chunk: benchmarks/bench_vs_mamba2.py --ssd.
MAX_CHUNK = 64


# ----------------------------------------------------------------------------------- device code
@triton.jit
def _step(dt_ptr, bias_ptr, b, t, h, H, m, sdt_b, sdt_l, sdt_h, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """δ [T, BH] in fp32, 0 where m is False (steps past L: no input and no decay)."""
    raw = tl.load(dt_ptr + b * sdt_b + t[:, None] * sdt_l + h[None, :] * sdt_h, mask=m, other=0.0).to(tl.float32)
    if HAS_BIAS:
        raw += tl.load(bias_ptr + h, mask=h < H, other=0.0).to(tl.float32)[None, :]
    delta, _ = delta_act(raw, SOFTPLUS)
    return tl.where(m, delta, 0.0)


@triton.jit
def _decay_matrix(a, T: tl.constexpr):
    """Λ [T, T] from the log-decays a [T]: Λ_ij = exp(Σ_{j<k≤i} a_k) for j ≤ i, 0 above the diagonal (−∞ before
    the exponential, so nothing overflows). Summed directly: s_i − s_j of the cumsums would lose the small
    terms to cancellation against large ones."""
    r = tl.arange(0, T)
    seg = tl.cumsum(tl.where(r[:, None] > r[None, :], a[:, None], 0.0), 0)
    return tl.exp(tl.where(r[:, None] >= r[None, :], seg, float("-inf")))


@triton.jit
def _chunk_cumsum_kernel(
    dt_ptr, bias_ptr, a_ptr, delta_ptr, cum_ptr, to_end_ptr,
    L, H, nc, sdt_b, sdt_l, sdt_h,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, T: tl.constexpr, BH: tl.constexpr,
):
    c = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    h = tl.program_id(2) * BH + tl.arange(0, BH)
    r = tl.arange(0, T)
    t = c * T + r
    hm = h < H
    A = tl.load(a_ptr + h, mask=hm, other=0.0).to(tl.float32)
    m = (t[:, None] < L) & hm[None, :]
    delta = _step(dt_ptr, bias_ptr, b, t, h, H, m, sdt_b, sdt_l, sdt_h, HAS_BIAS, SOFTPLUS)
    off = ((b * H + h[None, :]) * nc + c) * T + r[:, None]
    tl.store(delta_ptr + off, delta, mask=hm[None, :])
    tl.store(cum_ptr + off, tl.cumsum(delta * A[None, :], 0), mask=hm[None, :])
    # Σ_{j<k<T} a_k from the next step's δ, so that exp(s_{T−1} − s_j) is a direct sum, not a difference.
    mn = (t[:, None] + 1 < L) & (r[:, None] + 1 < T) & hm[None, :]
    nxt = _step(dt_ptr, bias_ptr, b, t + 1, h, H, mn, sdt_b, sdt_l, sdt_h, HAS_BIAS, SOFTPLUS)
    tl.store(to_end_ptr + off, tl.cumsum(nxt * A[None, :], 0, reverse=True), mask=hm[None, :])


@triton.jit
def _chunk_outer_kernel(
    x_ptr, y_ptr, delta_ptr, cum_ptr, to_end_ptr, out_ptr,
    L, H, P, N, nc, hpg,
    sx_b, sx_l, sx_h, sx_p, sy_b, sy_l, sy_g, sy_n,
    STATE: tl.constexpr, T: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr, DOT: tl.constexpr,
):
    """out[b, c, h] = Σ_t X_t ⊗ (w_t Y_t), [P, N]: with STATE, X = x, Y = B, w = exp(s_{T−1} − s_t)·δ_t (chunk
    state from a zero start); else X = dy, Y = C, w = exp(s_t) (what chunk c's outputs send back to H_c)."""
    c = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = bh % H
    g = h // hpg
    r = tl.arange(0, T)
    t = c * T + r
    p = tl.program_id(2) * BP + tl.arange(0, BP)
    n = tl.arange(0, BN)
    tv = t < L
    xt = tl.load(x_ptr + b * sx_b + h * sx_h + p[:, None] * sx_p + t[None, :] * sx_l,
                 mask=(p[:, None] < P) & tv[None, :], other=0.0).to(tl.float32)  # [BP, T]
    yy = tl.load(y_ptr + b * sy_b + g * sy_g + t[:, None] * sy_l + n[None, :] * sy_n,
                 mask=tv[:, None] & (n[None, :] < N), other=0.0).to(tl.float32)  # [T, BN]
    cbase = ((b * H + h) * nc + c) * T
    if STATE:
        w = tl.exp(tl.load(to_end_ptr + cbase + r)) * tl.load(delta_ptr + cbase + r)
    else:
        w = tl.exp(tl.load(cum_ptr + cbase + r))
    out = tl.dot(xt, yy * w[:, None], input_precision=DOT)
    off = (((b * nc + c) * H + h) * P + p[:, None]) * N + n[None, :]
    tl.store(out_ptr + off, out, mask=(p[:, None] < P) & (n[None, :] < N))


@triton.jit
def _state_pass_fwd_kernel(
    s_ptr, cum_ptr, h0_ptr, hin_ptr, final_ptr, H, PN, nc,
    HAS_H0: tl.constexpr, STORE_FINAL: tl.constexpr, T: tl.constexpr, BLK: tl.constexpr,
):
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    h = bh % H
    i = tl.program_id(0) * BLK + tl.arange(0, BLK)
    m = i < PN
    if HAS_H0:
        state = tl.load(h0_ptr + bh * PN + i, mask=m, other=0.0)
    else:
        state = tl.zeros([BLK], tl.float32)
    for c in range(0, nc):
        off = ((b * nc + c) * H + h) * PN + i
        tl.store(hin_ptr + off, state, mask=m)
        decay = tl.exp(tl.load(cum_ptr + (bh * nc + c) * T + T - 1))
        state = decay * state + tl.load(s_ptr + off, mask=m, other=0.0)
    if STORE_FINAL:
        tl.store(final_ptr + bh * PN + i, state, mask=m)


@triton.jit
def _chunk_scan_fwd_kernel(
    x_ptr, b_ptr, c_ptr, a_ptr, delta_ptr, cum_ptr, hin_ptr, dskip_ptr, y_ptr,
    L, H, P, N, nc, hpg,
    sx_b, sx_l, sx_h, sx_p, sb_b, sb_l, sb_g, sb_n, sc_b, sc_l, sc_g, sc_n, sy_b, sy_l, sy_h, sy_p,
    HAS_D: tl.constexpr, T: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr, DOT: tl.constexpr,
):
    c = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = bh % H
    g = h // hpg
    r = tl.arange(0, T)
    t = c * T + r
    p = tl.program_id(2) * BP + tl.arange(0, BP)
    n = tl.arange(0, BN)
    tv = t < L
    pm = p < P
    nm = n < N
    cbase = ((b * H + h) * nc + c) * T
    cum = tl.load(cum_ptr + cbase + r)
    delta = tl.load(delta_ptr + cbase + r)
    Cm = tl.load(c_ptr + b * sc_b + g * sc_g + t[:, None] * sc_l + n[None, :] * sc_n,
                 mask=tv[:, None] & nm[None, :], other=0.0).to(tl.float32)  # [T, BN]
    Bt = tl.load(b_ptr + b * sb_b + g * sb_g + n[:, None] * sb_n + t[None, :] * sb_l,
                 mask=nm[:, None] & tv[None, :], other=0.0).to(tl.float32)  # [BN, T]
    x = tl.load(x_ptr + b * sx_b + h * sx_h + t[:, None] * sx_l + p[None, :] * sx_p,
                mask=tv[:, None] & pm[None, :], other=0.0).to(tl.float32)  # [T, BP]
    hoff = ((b * nc + c) * H + h) * P * N
    hin_t = tl.load(hin_ptr + hoff + p[None, :] * N + n[:, None], mask=nm[:, None] & pm[None, :], other=0.0)  # [BN, BP]
    y = tl.dot(Cm, hin_t, input_precision=DOT) * tl.exp(cum)[:, None]
    decay = _decay_matrix(delta * tl.load(a_ptr + h), T)
    M = tl.dot(Cm, Bt, input_precision=DOT) * decay * delta[None, :]
    y += tl.dot(M, x, input_precision=DOT)
    if HAS_D:
        y += tl.load(dskip_ptr + h).to(tl.float32) * x
    tl.store(y_ptr + b * sy_b + h * sy_h + t[:, None] * sy_l + p[None, :] * sy_p, y.to(y_ptr.dtype.element_ty),
             mask=tv[:, None] & pm[None, :])


@triton.jit
def _state_pass_bwd_kernel(
    u_ptr, hin_ptr, cum_ptr, dfinal_ptr, ds_ptr, dlam_ptr, dh0_ptr, H, PN, nc, nblk,
    HAS_DFINAL: tl.constexpr, HAS_H0: tl.constexpr, T: tl.constexpr, BLK: tl.constexpr,
):
    pid = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    h = bh % H
    i = pid * BLK + tl.arange(0, BLK)
    m = i < PN
    if HAS_DFINAL:
        grad = tl.load(dfinal_ptr + bh * PN + i, mask=m, other=0.0).to(tl.float32)
    else:
        grad = tl.zeros([BLK], tl.float32)
    for k in range(0, nc):
        c = nc - 1 - k
        off = ((b * nc + c) * H + h) * PN + i
        tl.store(ds_ptr + off, grad, mask=m)  # dS_c = dH_{c+1}
        decay = tl.exp(tl.load(cum_ptr + (bh * nc + c) * T + T - 1))
        hin = tl.load(hin_ptr + off, mask=m, other=0.0)
        tl.store(dlam_ptr + (bh * nc + c) * nblk + pid, decay * tl.sum(hin * grad, axis=0))
        grad = decay * grad + tl.load(u_ptr + off, mask=m, other=0.0)
    if HAS_H0:
        tl.store(dh0_ptr + bh * PN + i, grad, mask=m)


@triton.jit
def _chunk_scan_bwd_kernel(
    x_ptr, dt_ptr, b_ptr, c_ptr, dy_ptr, a_ptr, bias_ptr, dskip_ptr, cum_ptr, to_end_ptr, hin_ptr, ds_ptr, dlam_ptr,
    dx_ptr, ddt_ptr, db_ptr, dc_ptr, da_part_ptr, dd_part_ptr,
    L, H, P, N, nc, hpg,
    sx_b, sx_l, sx_h, sx_p, sdt_b, sdt_l, sdt_h, sb_b, sb_l, sb_g, sb_n, sc_b, sc_l, sc_g, sc_n,
    sdy_b, sdy_l, sdy_h, sdy_p,
    HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    T: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr, DOT: tl.constexpr,
):
    c = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = bh % H
    g = h // hpg
    r = tl.arange(0, T)
    t = c * T + r
    p = tl.arange(0, BP)
    n = tl.arange(0, BN)
    tv = t < L
    tp = tv[:, None] & (p[None, :] < P)
    tn = tv[:, None] & (n[None, :] < N)
    pn = (p[:, None] < P) & (n[None, :] < N)

    raw = tl.load(dt_ptr + b * sdt_b + t * sdt_l + h * sdt_h, mask=tv, other=0.0).to(tl.float32)
    if HAS_BIAS:
        raw += tl.load(bias_ptr + h).to(tl.float32)
    delta, ddelta_draw = delta_act(raw, SOFTPLUS)
    delta = tl.where(tv, delta, 0.0)
    A = tl.load(a_ptr + h).to(tl.float32)
    cbase = ((b * H + h) * nc + c) * T
    e_s = tl.exp(tl.load(cum_ptr + cbase + r))  # state entering the chunk → step t
    w_last = tl.exp(tl.load(to_end_ptr + cbase + r))  # step t → end of the chunk

    x = tl.load(x_ptr + b * sx_b + h * sx_h + t[:, None] * sx_l + p[None, :] * sx_p, mask=tp, other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + b * sdy_b + h * sdy_h + t[:, None] * sdy_l + p[None, :] * sdy_p,
                 mask=tp, other=0.0).to(tl.float32)
    Bm = tl.load(b_ptr + b * sb_b + g * sb_g + t[:, None] * sb_l + n[None, :] * sb_n, mask=tn, other=0.0).to(tl.float32)
    Cm = tl.load(c_ptr + b * sc_b + g * sc_g + t[:, None] * sc_l + n[None, :] * sc_n, mask=tn, other=0.0).to(tl.float32)
    soff = ((b * nc + c) * H + h) * P * N + p[:, None] * N + n[None, :]
    hin = tl.load(hin_ptr + soff, mask=pn, other=0.0)  # H_c [BP, BN]
    dS = tl.load(ds_ptr + soff, mask=pn, other=0.0)  # dS_c [BP, BN]

    decay = _decay_matrix(delta * A, T)  # [T(i), T(j)]
    G = tl.dot(Cm, tl.trans(Bm), input_precision=DOT)
    M = G * decay
    xd = x * delta[:, None]
    # Z_j = d(δ_j x_j): from the outputs of this chunk (Mᵀ dy) and from the chunk state (w_last_j · dS B_j).
    BdS = tl.dot(Bm, tl.trans(dS), input_precision=DOT) * w_last[:, None]  # [T, BP]
    Z = tl.dot(tl.trans(M), dy, input_precision=DOT) + BdS
    dx = Z * delta[:, None]
    if HAS_D:
        dskip = tl.load(dskip_ptr + h).to(tl.float32)
        dx += dskip * dy
    ddelta = tl.sum(Z * x, axis=1)

    # W_ij = ∂y/∂(C_i·B_j) contracted with dy: dy_i·(δ_j x_j)·decay_ij.
    W = tl.dot(dy, tl.trans(xd), input_precision=DOT) * decay
    dC = tl.dot(W, Bm, input_precision=DOT) + tl.dot(dy, hin, input_precision=DOT) * e_s[:, None]
    dB = tl.dot(tl.trans(W), Cm, input_precision=DOT) + tl.dot(xd, dS, input_precision=DOT) * w_last[:, None]

    # ∂/∂a_k (a_k = δ_k·A) summed directly over the terms a_k sits in, not as ∂/∂s followed by a reverse
    # cumsum: that route adds and then subtracts equal diagonal terms (Q_ii, R_{T−1}), whose fp32 residue
    # exceeds the true gradient when decays are strong (ops/README.md, "SSD scan", backward).
    #   exp(s_i) of the entering state, i ≥ k      exp(s_{T−1} − s_j) of the chunk state, j < k
    #   Λ_ij = exp(s_i − s_j), j < k ≤ i           exp(s_{T−1}) of the state passing (dlam), every k
    below = r[None, :] < r[:, None]  # [k, j]: j < k
    CH = tl.dot(Cm, tl.trans(hin), input_precision=DOT)  # [T, BP]
    da = tl.cumsum(e_s * tl.sum(dy * CH, axis=1), 0, reverse=True)
    R = tl.sum(BdS * xd, axis=1)
    da += tl.sum(tl.where(below, R[None, :], 0.0), axis=1)
    da += tl.load(dlam_ptr + (b * H + h) * nc + c)
    Q_below_k = tl.cumsum(tl.where(below, W * G, 0.0), 0, reverse=True)  # [k, j]: Σ_{i≥k} Q_ij, Q = W ∘ G
    da += tl.sum(tl.where(below, Q_below_k, 0.0), axis=1)
    ddelta += da * A
    ddt = ddelta * ddelta_draw

    tl.store(dx_ptr + ((b * L + t[:, None]) * H + h) * P + p[None, :], dx.to(dx_ptr.dtype.element_ty), mask=tp)
    tl.store(ddt_ptr + (b * L + t) * H + h, ddt, mask=tv)
    tnoff = ((b * L + t[:, None]) * H + h) * N + n[None, :]
    tl.store(db_ptr + tnoff, dB, mask=tn)
    tl.store(dc_ptr + tnoff, dC, mask=tn)
    tl.store(da_part_ptr + (b * H + h) * nc + c, tl.sum(da * delta, axis=0))
    tl.store(dd_part_ptr + (b * H + h) * nc + c, tl.sum(tl.sum(dy * x, axis=1), axis=0))


# ----------------------------------------------------------------------------------- host code
def _p2(v: int) -> int:
    """tl.dot needs every tile dimension >= 16."""
    return max(16, triton.next_power_of_2(v))


def _chunk_tensors(dt, A, dt_bias, dt_softplus, H, nc, T):
    bsz, L, _ = dt.shape
    f32 = dict(device=dt.device, dtype=torch.float32)
    delta = _alloc.empty(bsz, H, nc, T, **f32)
    cum = _alloc.empty(bsz, H, nc, T, **f32)
    to_end = _alloc.empty(bsz, H, nc, T, **f32)
    BH = min(16, triton.next_power_of_2(H))
    _chunk_cumsum_kernel[(nc, bsz, triton.cdiv(H, BH))](
        dt, dt_bias if dt_bias is not None else A, A, delta, cum, to_end, L, H, nc, *dt.stride(),
        HAS_BIAS=dt_bias is not None, SOFTPLUS=bool(dt_softplus), T=T, BH=BH,
    )
    return delta, cum, to_end


def _chunk_outer(X, Y, delta, cum, to_end, hpg, state: bool, cfg: LaunchConfig, exact: bool = True):
    bsz, L, H, P = X.shape
    N = Y.shape[-1]
    nc, T = cum.shape[2], cum.shape[3]
    out = _alloc.empty(bsz, nc, H, P, N, device=X.device, dtype=torch.float32)
    BP = min(_p2(P), cfg.block_p)
    _chunk_outer_kernel[(nc, bsz * H, triton.cdiv(P, BP))](
        X, Y, delta, cum, to_end, out, L, H, P, N, nc, hpg, *X.stride(), *Y.stride(),
        STATE=state, T=T, BP=BP, BN=_p2(N), DOT=dot_precision(X.dtype, exact),
        num_warps=cfg.num_warps,
    )
    return out


def ssd_forward(x, dt, A, B, C, D, dt_bias, dt_softplus, initial_state, return_final_state, chunk_size,
                config: LaunchConfig | None = None, exact: bool = True):
    """Launch the forward kernels. Returns y [B, L, H, P] (x's dtype), final state [B, H, P, N] or None,
    and what the backward needs: `chunk` = (delta, cum, to_end), each [B, H, nc, T] (δ, s_t = Σ_{k≤t} a_k and
    Σ_{k>t} a_k inside the chunk), and the states entering each chunk [B, nc, H, P, N]."""
    cfg = config or default_config()
    bsz, L, H, P = x.shape
    G, N = B.shape[2], B.shape[3]
    hpg = H // G
    T = chunk_size
    nc = triton.cdiv(L, T)
    f32 = dict(device=x.device, dtype=torch.float32)
    chunk = _chunk_tensors(dt, A, dt_bias, dt_softplus, H, nc, T)
    delta, cum, _ = chunk
    states = _chunk_outer(x, B, *chunk, hpg, True, cfg, exact)
    hin = _alloc.empty(bsz, nc, H, P, N, **f32)
    final = _alloc.empty(bsz, H, P, N, **f32) if return_final_state else None
    h0 = initial_state.float().contiguous() if initial_state is not None else None
    PN = P * N
    blk = min(cfg.state_block, triton.next_power_of_2(PN))
    _state_pass_fwd_kernel[(triton.cdiv(PN, blk), bsz * H)](
        states, cum, h0 if h0 is not None else states, hin, final if final is not None else states, H, PN, nc,
        HAS_H0=h0 is not None, STORE_FINAL=final is not None, T=T, BLK=blk,
    )
    y = _alloc.empty(bsz, L, H, P, device=x.device, dtype=x.dtype)
    BP = min(_p2(P), cfg.block_p)
    _chunk_scan_fwd_kernel[(nc, bsz * H, triton.cdiv(P, BP))](
        x, B, C, A, delta, cum, hin, D if D is not None else A, y, L, H, P, N, nc, hpg,
        *x.stride(), *B.stride(), *C.stride(), *y.stride(),
        HAS_D=D is not None, T=T, BP=BP, BN=_p2(N), DOT=dot_precision(x.dtype, exact), num_warps=cfg.num_warps,
    )
    return y, final, chunk, hin


def ssd_backward(dy, dfinal, x, dt, A, B, C, D, dt_bias, dt_softplus, chunk, hin, has_h0,
                 config: LaunchConfig | None = None):
    """Launch the backward kernels and reduce their partial buffers.

    Returns dx [B, L, H, P] (x's dtype), d dt [B, L, H] fp32, dA [H], dB, dC [B, L, G, N], dD [H],
    d dt_bias [H], d initial_state [B, H, P, N] (all fp32; None where not applicable)."""
    cfg = config or default_config()
    bsz, L, H, P = x.shape
    G, N = B.shape[2], B.shape[3]
    hpg = H // G
    delta, cum, to_end = chunk
    nc, T = cum.shape[2], cum.shape[3]
    dev = x.device
    f32 = dict(device=dev, dtype=torch.float32)
    PN = P * N
    u = _chunk_outer(dy, C, *chunk, hpg, False, cfg)
    blk = min(cfg.state_block, triton.next_power_of_2(PN))
    nblk = triton.cdiv(PN, blk)
    dS = _alloc.empty(bsz, nc, H, P, N, **f32)
    dlam_part = _alloc.empty(bsz, H, nc, nblk, **f32)
    dh0 = _alloc.empty(bsz, H, P, N, **f32) if has_h0 else None
    dfin = dfinal.contiguous() if dfinal is not None else None
    _state_pass_bwd_kernel[(nblk, bsz * H)](
        u, hin, cum, dfin if dfin is not None else u, dS, dlam_part, dh0 if dh0 is not None else u,
        H, PN, nc, nblk, HAS_DFINAL=dfin is not None, HAS_H0=has_h0, T=T, BLK=blk,
    )
    dlam = dlam_part.sum(-1) if nblk > 1 else dlam_part[..., 0].contiguous()
    dx = _alloc.empty(bsz, L, H, P, device=dev, dtype=x.dtype)
    ddt = _alloc.empty(bsz, L, H, **f32)
    dBh = _alloc.empty(bsz, L, H, N, **f32)
    dCh = _alloc.empty(bsz, L, H, N, **f32)
    dA_part = _alloc.empty(bsz, H, nc, **f32)
    dD_part = _alloc.empty(bsz, H, nc, **f32)
    _chunk_scan_bwd_kernel[(nc, bsz * H)](
        x, dt, B, C, dy, A, dt_bias if dt_bias is not None else A, D if D is not None else A,
        cum, to_end, hin, dS, dlam, dx, ddt, dBh, dCh, dA_part, dD_part,
        L, H, P, N, nc, hpg, *x.stride(), *dt.stride(), *B.stride(), *C.stride(), *dy.stride(),
        HAS_D=D is not None, HAS_BIAS=dt_bias is not None, SOFTPLUS=bool(dt_softplus),
        T=T, BP=_p2(P), BN=_p2(N), DOT=dot_precision(x.dtype, True), num_warps=cfg.bwd_num_warps,
    )
    dB = dBh.view(bsz, L, G, hpg, N).sum(3)
    dC = dCh.view(bsz, L, G, hpg, N).sum(3)
    dA = dA_part.sum((0, 2))
    dD = dD_part.sum((0, 2)) if D is not None else None
    dbias = ddt.sum((0, 1)) if dt_bias is not None else None
    return dx, ddt, dA, dB, dC, dD, dbias, dh0


class SsdScanFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, dt_bias, initial_state, dt_softplus, return_final_state, chunk_size, save):
        ctx.a_dtype = A.dtype
        A = A.float().contiguous()
        y, final, chunk, hin = ssd_forward(
            x, dt, A, B, C, D, dt_bias, dt_softplus, initial_state, return_final_state, chunk_size, exact=save
        )
        if save:
            ctx.save_for_backward(x, dt, A, B, C, D, dt_bias, *chunk, hin)
            ctx.dt_softplus = dt_softplus
            ctx.h0_dtype = initial_state.dtype if initial_state is not None else None
        ctx.set_materialize_grads(False)
        return (y, final) if return_final_state else y

    @staticmethod
    def backward(ctx, dy, dfinal=None):
        x, dt, A, B, C, D, dt_bias, delta, cum, to_end, hin = ctx.saved_tensors
        if dy is None:
            dy = torch.zeros_like(x)
        dx, ddt, dA, dB, dC, dD, dbias, dh0 = ssd_backward(
            dy, dfinal, x, dt, A, B, C, D, dt_bias, ctx.dt_softplus, (delta, cum, to_end), hin,
            ctx.h0_dtype is not None,
        )
        return (
            dx, ddt.to(dt.dtype), dA.to(ctx.a_dtype), dB.to(B.dtype), dC.to(C.dtype),
            dD.to(D.dtype) if dD is not None else None,
            dbias.to(dt_bias.dtype) if dbias is not None else None,
            dh0.to(ctx.h0_dtype) if dh0 is not None else None,
            None, None, None, None,
        )


def _check(x, dt, A, B, C, D, dt_bias, initial_state, chunk_size):
    if x.dim() != 4:
        raise ShapeError(f"ssd scan: x must be [B, L, H, P], got {tuple(x.shape)}")
    bsz, L, H, P = x.shape
    if dt.shape != (bsz, L, H):
        raise ShapeError(f"ssd scan: dt must be [B, L, H] = {(bsz, L, H)}, got {tuple(dt.shape)}")
    if A.shape != (H,):
        raise ShapeError(f"ssd scan: A must be [H] = ({H},), got {tuple(A.shape)}")
    if B.dim() != 4 or B.shape[:2] != (bsz, L) or B.shape != C.shape:
        raise ShapeError(f"ssd scan: B and C must both be [B, L, G, N], got {tuple(B.shape)} and {tuple(C.shape)}")
    G, N = B.shape[2], B.shape[3]
    if G == 0 or H % G:
        raise ShapeError(f"ssd scan: the number of heads ({H}) must be a multiple of the groups ({G})")
    for name, v in (("D", D), ("dt_bias", dt_bias)):
        if v is not None and v.shape != (H,):
            raise ShapeError(f"ssd scan: {name} must be [H] = ({H},), got {tuple(v.shape)}")
    if initial_state is not None and initial_state.shape != (bsz, H, P, N):
        raise ShapeError(f"ssd scan: initial_state must be [B, H, P, N] = {(bsz, H, P, N)}, "
                         f"got {tuple(initial_state.shape)}")
    if chunk_size < 16 or chunk_size & (chunk_size - 1):
        raise ConfigError(f"ssd scan: chunk_size must be a power of two >= 16 (a tl.dot tile), got {chunk_size}")


def ssd_scan_triton(x, dt, A, B, C, *, D=None, dt_bias=None, dt_softplus=False, initial_state=None,
                    return_final_state=False, chunk_size=64):
    """Triton SSD chunked scan with the contract of `ssd_scan_ref` (naive.py); differentiable in every tensor input,
    the final state included. Returns y [B, L, H, P] in x's dtype (and the final state [B, H, P, N] fp32)."""
    _check(x, dt, A, B, C, D, dt_bias, initial_state, chunk_size)
    bsz, L, H, P = x.shape
    if L == 0:  # nothing to scan: the state passes through unchanged
        N = B.shape[3]
        y = x * 0
        if not return_final_state:
            return y
        if initial_state is None:
            return y, x.new_zeros(bsz, H, P, N, dtype=torch.float32)
        return y, initial_state.float() * 1
    save = needs_grad(x, dt, A, B, C, D, dt_bias, initial_state)
    return SsdScanFn.apply(x, dt, A, B, C, D, dt_bias, initial_state, bool(dt_softplus), bool(return_final_state),
                           int(chunk_size), save)


__all__ = ["LaunchConfig", "default_config", "ssd_scan_triton", "ssd_forward", "ssd_backward"]
