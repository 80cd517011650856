"""Fused Triton kernels for the Mamba-2 `last` and `global` impact scores (contract: `impact_score_ssd_ref`).

Shapes: x [B, L, H, P]; dt [B, L, H]; A [H]; B, C [B, L, G, N]; mask [B, L] bool; scores [B, L] fp32. Inputs may
be fp32/bf16/fp16 with any strides (x, B, C are views into the conv output in the model); all arithmetic is fp32.
Derivation, floor and the equivalence with Mamba-1: ops/README.md "Impact score, Mamba-2".

Programs are (sample, group g, block of BLOCK_H heads of g): the heads of a block share B_t[g] and C[g], so
the dot C_T[g]·B_t[g] (`last`) is formed once per token and block. Both kernels walk the sequence backwards
with the running quantity in registers (R [BLOCK_H] for `last`, G [BLOCK_H, N] for `global`). The factor of
x_t[h, :] is one scalar c per (t, h), so max_p |c·x_p| = |c|·max_p |x_p| and, signed, max_p c·x_p is c·max x
(c ≥ 0) or c·min x (c < 0): exact, since rounding is monotone. Each program writes the max over its heads to
a partial buffer [B, K, L] (K = G·⌈H/G / BLOCK_H⌉) and `torch.amax` over K gives the score (exact, no atomics).

dt is read raw (the model passes the in_proj slice, often bf16) and softplus(dt + dt_bias) is formed in
registers with the scan's formula, as in Mamba-1's kernels.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import _alloc
from .._score_common import last_real_index
from .._triton_common import LOG2E, channel_vector, delta_from_raw

# Programs wanted for `last` before the sequence is split into chunks: ~4 per SM of an H200 (132 SMs).
_TARGET_PROGRAMS = 528


@triton.jit
def _heads(pid_k, NHB, HPG, BLOCK_H: tl.constexpr):
    """Program pid_k's group g and heads: block pid_k % NHB of the HPG heads of group pid_k // NHB."""
    g = pid_k // NHB
    local = (pid_k % NHB) * BLOCK_H + tl.arange(0, BLOCK_H)
    return g, g * HPG + local, local < HPG


@triton.jit
def _present(mask_ptr, s_mb, s_ml, base_b, offs_t, t_ok, HAS_MASK: tl.constexpr):
    """[BLOCK_T] bool: the token exists and is real (mask True)."""
    if HAS_MASK:
        return t_ok & (tl.load(mask_ptr + base_b * s_mb + offs_t * s_ml, mask=t_ok, other=0) != 0)
    return t_ok


@triton.jit
def _delta_tile(dt_ptr, s_db, s_dl, s_dh, base_b, offs_t, offs_h, ok, h_ok, bias,
                HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """delta [BLOCK_T, BLOCK_H] in fp32 from the raw dt, 0 for absent tokens and heads past the group."""
    both = ok[:, None] & h_ok[None, :]
    raw = tl.load(dt_ptr + base_b * s_db + offs_t[:, None] * s_dl + offs_h[None, :] * s_dh, mask=both, other=0.0)
    return delta_from_raw(raw, bias[None, :], both, HAS_BIAS, SOFTPLUS)


@triton.jit
def _max_over_heads_and_p(x_ptr, s_xb, s_xl, s_xh, s_xp, base_b, offs_t, offs_h, offs_p, ok, h_ok, coef, P,
                          SIGNED: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_P: tl.constexpr):
    """[BLOCK_T] max over the block's heads and all p of |coef[t, h]·x_t[h, p]| (signed: coef·x), -inf where
    the token is absent. Δy is coef times x_t[h, :], so max_p |coef·x_p| = |coef|·max_p |x_p| and max_p coef·x_p
    is coef·max x (coef ≥ 0) or coef·min x: exact, as rounding is monotone."""
    x_base = x_ptr + base_b * s_xb + offs_t[:, None, None] * s_xl + offs_h[None, :, None] * s_xh
    th_ok = ok[:, None, None] & h_ok[None, :, None]
    if SIGNED:
        hi = tl.full([BLOCK_T, BLOCK_H], float("-inf"), tl.float32)
        lo = tl.full([BLOCK_T, BLOCK_H], float("inf"), tl.float32)
    else:
        hi = tl.zeros([BLOCK_T, BLOCK_H], tl.float32)
    for p0 in range(0, P, BLOCK_P):
        pp = p0 + offs_p
        p_ok = (pp < P)[None, None, :]
        xt = tl.load(x_base + pp[None, None, :] * s_xp, mask=th_ok & p_ok, other=0.0).to(tl.float32)
        if SIGNED:
            hi = tl.maximum(hi, tl.max(tl.where(p_ok, xt, float("-inf")), axis=2))
            lo = tl.minimum(lo, tl.min(tl.where(p_ok, xt, float("inf")), axis=2))
        else:
            hi = tl.maximum(hi, tl.max(tl.abs(xt), axis=2))
    if SIGNED:
        dy = tl.where(coef >= 0, coef * hi, coef * lo)
    else:
        dy = tl.abs(coef) * hi
    best = tl.max(tl.where(h_ok[None, :], dy, float("-inf")), axis=1)
    # tl.max drops NaN (PTX max.f32, the interpreter's nanmax): add back a NaN coef (a NaN dt, B or C of a real
    # token, an unwritten chunk sum) so it shows in the score instead of reading as an unimportant token.
    best += tl.sum(tl.where(coef == coef, 0.0, coef), axis=1)
    return tl.where(ok, best, float("-inf"))


@triton.jit
def _ssd_delta_chunk_sums_kernel(
    dt_ptr, bias_ptr, mask_ptr, sums_ptr, L, HPG, NHB,
    s_db, s_dl, s_dh, s_mb, s_ml, s_sb, s_sc, CHUNK,
    HAS_MASK: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr,
):
    """sums[b, c, h] = Σ of the masked delta over chunk c, chunks counted from the END of the sequence."""
    pid_b, pid_k, pid_c = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    base_b = pid_b.to(tl.int64)
    _, offs_h, h_ok = _heads(pid_k, NHB, HPG, BLOCK_H)
    bias = channel_vector(bias_ptr, offs_h, h_ok, HAS_BIAS)
    rows = tl.arange(0, BLOCK_T)
    acc = tl.zeros([BLOCK_H], tl.float32)
    for j in range(0, CHUNK, BLOCK_T):
        offs_t = L - 1 - (pid_c * CHUNK + j + rows)
        ok = _present(mask_ptr, s_mb, s_ml, base_b, offs_t, offs_t >= 0, HAS_MASK)
        acc += tl.sum(_delta_tile(dt_ptr, s_db, s_dl, s_dh, base_b, offs_t, offs_h, ok, h_ok, bias,
                                  HAS_BIAS, SOFTPLUS), axis=0)
    tl.store(sums_ptr + base_b * s_sb + pid_c * s_sc + offs_h, acc, mask=h_ok)


@triton.jit
def _ssd_last_kernel(
    x_ptr, dt_ptr, bias_ptr, a2_ptr, b_ptr, ct_ptr, mask_ptr, carry_ptr, part_ptr, L, P, N, HPG, NHB,
    s_xb, s_xl, s_xh, s_xp, s_db, s_dl, s_dh, s_bb, s_bl, s_bg, s_bn, s_mb, s_ml, s_tb, s_tg,
    s_cb, s_cc, s_pb, s_pk, CHUNK_TILES,
    HAS_MASK: tl.constexpr, HAS_CARRY: tl.constexpr, SIGNED: tl.constexpr, HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_P: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """part[b, k, t] = max over program k's heads and all p of |Δy_T(t)[h, p]| for the tokens of one chunk.

    Tiles are aligned to the end of the sequence with rows running backwards in time, so a forward tl.cumsum
    over rows is the reverse cumsum over time (as in Mamba-1's `_last_kernel`).
    """
    pid_b, pid_k, pid_c = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    base_b = pid_b.to(tl.int64)
    g, offs_h, h_ok = _heads(pid_k, NHB, HPG, BLOCK_H)
    rows = tl.arange(0, BLOCK_T)
    offs_n = tl.arange(0, BLOCK_N)
    offs_p = tl.arange(0, BLOCK_P)
    bias = channel_vector(bias_ptr, offs_h, h_ok, HAS_BIAS)
    a2 = tl.load(a2_ptr + offs_h, mask=h_ok, other=0.0)  # A·log2(e)
    if HAS_CARRY:
        carry = tl.load(carry_ptr + base_b * s_cb + pid_c * s_cc + offs_h, mask=h_ok, other=0.0)
    else:
        carry = tl.zeros([BLOCK_H], tl.float32)
    for j in range(CHUNK_TILES):
        offs_t = L - 1 - ((pid_c * CHUNK_TILES + j) * BLOCK_T + rows)
        t_ok = offs_t >= 0
        ok = _present(mask_ptr, s_mb, s_ml, base_b, offs_t, t_ok, HAS_MASK)
        delta = _delta_tile(dt_ptr, s_db, s_dl, s_dh, base_b, offs_t, offs_h, ok, h_ok, bias, HAS_BIAS, SOFTPLUS)
        # R_t = Σ_{k>t} delta_k: the inclusive cumsum over the time-reversed rows less the row's own delta; the
        # subtraction costs ~eps·(R + delta_t) in R (ops/README.md, Mamba-1 kernel layout).
        R = carry[None, :] + (tl.cumsum(delta, axis=0) - delta)
        carry += tl.sum(delta, axis=0)
        w = tl.zeros([BLOCK_T], tl.float32)  # C_T[g]·B_t[g], once for all heads of the block
        for n0 in range(0, N, BLOCK_N):
            nn = n0 + offs_n
            n_ok = nn < N
            bt = tl.load(b_ptr + base_b * s_bb + offs_t[:, None] * s_bl + g * s_bg + nn[None, :] * s_bn,
                         mask=ok[:, None] & n_ok[None, :], other=0.0).to(tl.float32)
            ct = tl.load(ct_ptr + base_b * s_tb + g * s_tg + nn, mask=n_ok, other=0.0)
            w += tl.sum(bt * ct[None, :], axis=1)
        coef = w[:, None] * tl.exp2(a2[None, :] * R) * delta  # [BLOCK_T, BLOCK_H]; exponents ≤ 0
        best = _max_over_heads_and_p(x_ptr, s_xb, s_xl, s_xh, s_xp, base_b, offs_t, offs_h, offs_p, ok, h_ok,
                                     coef, P, SIGNED, BLOCK_T, BLOCK_H, BLOCK_P)
        tl.store(part_ptr + base_b * s_pb + pid_k * s_pk + offs_t, best, mask=t_ok)


@triton.jit
def _ssd_global_kernel(
    x_ptr, dt_ptr, bias_ptr, a2_ptr, b_ptr, c_ptr, mask_ptr, part_ptr, L, P, N, HPG, NHB,
    s_xb, s_xl, s_xh, s_xp, s_db, s_dl, s_dh, s_bb, s_bl, s_bg, s_bn, s_cb, s_cl, s_cg, s_cn, s_mb, s_ml,
    s_pb, s_pk,
    HAS_MASK: tl.constexpr, SIGNED: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """part[b, k, t] = max over program k's heads and all p of |delta_t x_t[h,p] (B_t[g]·G_t[h])|, by the
    reverse scan G_t[h] = C_t[g] + exp(delta_{t+1}[h] A[h]) G_{t+1}[h] with G [BLOCK_H, BLOCK_N] in registers.

    Tiles of BLOCK_T tokens, rows backwards in time as in `_ssd_last_kernel`. delta and the presence of the
    tile's tokens are formed as tiles; only the scan is a loop over the tile's tokens (it picks row i of them,
    reads C_t and B_t, and drops coef_t = delta_t·(B_t·G_t) into row i of a register tile); x, the largest
    input, is then read and reduced as one [BLOCK_T, BLOCK_H, BLOCK_P] tile, off the loop-carried chain. (The
    row picks are masked sums over BLOCK_T rows, not on the chain through G; they also keep the interpreter,
    which pays ~0.1 ms per op, to ~35 ops per token.)
    """
    pid_b, pid_k = tl.program_id(0), tl.program_id(1)
    base_b = pid_b.to(tl.int64)
    g, offs_h, h_ok = _heads(pid_k, NHB, HPG, BLOCK_H)
    rows = tl.arange(0, BLOCK_T)
    offs_n = tl.arange(0, BLOCK_N)
    offs_p = tl.arange(0, BLOCK_P)
    n_ok = offs_n < N
    bias = channel_vector(bias_ptr, offs_h, h_ok, HAS_BIAS)
    a2 = tl.load(a2_ptr + offs_h, mask=h_ok, other=0.0)
    state = tl.zeros([BLOCK_H, BLOCK_N], tl.float32)
    d_next = tl.zeros([BLOCK_H], tl.float32)  # delta_{t+1}; 0 past the end so G_{L-1} = C_{L-1}
    c_row = c_ptr + base_b * s_cb + g * s_cg + offs_n * s_cn  # pointers at t = 0; the loop adds t·stride
    b_row = b_ptr + base_b * s_bb + g * s_bg + offs_n * s_bn
    for j in range(0, L, BLOCK_T):
        offs_t = L - 1 - (j + rows)
        ok = _present(mask_ptr, s_mb, s_ml, base_b, offs_t, offs_t >= 0, HAS_MASK)
        # delta for the whole tile (one vectorised softplus, coalesced loads), 0 for absent tokens
        deltas = _delta_tile(dt_ptr, s_db, s_dl, s_dh, base_b, offs_t, offs_h, ok, h_ok, bias, HAS_BIAS, SOFTPLUS)
        okf = ok.to(tl.float32)
        coef = tl.zeros([BLOCK_T, BLOCK_H], tl.float32)
        for i in range(BLOCK_T):
            t = tl.maximum(L - 1 - (j + i), 0)  # rows before the start read token 0; they are absent (okf = 0)
            sel = rows == i
            here = tl.sum(tl.where(sel, okf, 0.0), axis=0) > 0
            delta = tl.sum(tl.where(sel[:, None], deltas, 0.0), axis=0)
            # An absent token adds no readout (and, with delta 0, no decay): G passes through it unchanged.
            ct = tl.where(here, tl.load(c_row + t * s_cl, mask=n_ok, other=0.0).to(tl.float32), 0.0)
            bt = tl.load(b_row + t * s_bl, mask=n_ok, other=0.0).to(tl.float32)
            state = ct[None, :] + tl.exp2(a2 * d_next)[:, None] * state  # exponents ≤ 0
            coef = tl.where(sel[:, None], (delta * tl.sum(state * bt[None, :], axis=1))[None, :], coef)
            d_next = delta
        best = _max_over_heads_and_p(x_ptr, s_xb, s_xl, s_xh, s_xp, base_b, offs_t, offs_h, offs_p, ok, h_ok,
                                     coef, P, SIGNED, BLOCK_T, BLOCK_H, BLOCK_P)
        tl.store(part_ptr + base_b * s_pb + pid_k * s_pk + offs_t, best, mask=offs_t >= 0)


def default_config(criterion: str, shape: tuple[int, int, int, int], groups: int, n: int) -> dict:
    """Block sizes, chunks and warps for x of `shape` [B, L, H, P] with `groups` groups of `n` states.

    NOT measured yet: these are first guesses (register tiles of ≤ 4096 fp32 for `last`), to be replaced by a
    GPU sweep's fastest, cited here. `last` splits the sequence into chunks when B·K programs would leave the
    SMs idle (Mamba-2 has few heads: B=8, H=80 in blocks of 4 is 160 programs); the extra pass reads only dt.
    """
    bsz, L, H, P = shape
    hpg = max(1, H // max(1, groups))
    block_p = min(64, triton.next_power_of_2(max(1, P)))
    if criterion == "last":
        block_t = 16
        block_h = min(4, triton.next_power_of_2(hpg))
        programs = bsz * groups * triton.cdiv(hpg, block_h)
        n_tiles = triton.cdiv(max(1, L), block_t)
        chunks = max(1, min(n_tiles // 4, triton.cdiv(_TARGET_PROGRAMS, max(1, programs))))
        return dict(block_t=block_t, block_h=block_h, block_p=block_p, block_n=min(64, triton.next_power_of_2(n)),
                    chunks=chunks, num_warps=4)
    return dict(block_t=16, block_h=min(2, triton.next_power_of_2(hpg)), block_p=block_p, num_warps=1)


def impact_score_ssd_triton(
    x, dt, A, B, C, *, criterion: str = "last", signed: bool = False, mask=None, out=None,
    dt_bias=None, dt_softplus: bool = False, config=None,
) -> torch.Tensor:
    """`last` or `global` scores [B, L] fp32 with the contract of `impact_score_ssd_ref` (shapes unchecked here:
    `impact_score_ssd` checks them). `config` overrides `default_config` (keys: block_t, block_h, block_p,
    block_n, chunks, num_warps); tests and benchmarks sweep it."""
    bsz, L, H, P = x.shape
    G, N = B.shape[2], B.shape[3]
    hpg = H // G
    dev = x.device
    scores = out if out is not None else _alloc.empty(bsz, L, dtype=torch.float32, device=dev)
    if L == 0 or bsz == 0:
        return scores
    cfg = {**default_config(criterion, (bsz, L, H, P), G, N), **(config or {})}
    block_h = cfg["block_h"]
    nhb = triton.cdiv(hpg, block_h)
    a2 = (A.float() * LOG2E).contiguous()  # exp(x) = exp2(x·log2 e)
    part = _alloc.empty(bsz, G * nhb, L, dtype=torch.float32, device=dev)
    # Absent optional tensors are passed as any tensor: the kernels do not read them (HAS_MASK, HAS_BIAS false).
    m = mask.to(torch.uint8) if mask is not None else part
    ms = (m.stride(0), m.stride(1)) if mask is not None else (0, 0)
    bias = dt_bias if dt_bias is not None else a2
    common = dict(HAS_MASK=mask is not None, SIGNED=bool(signed), HAS_BIAS=dt_bias is not None,
                  SOFTPLUS=bool(dt_softplus), BLOCK_H=block_h, BLOCK_P=cfg["block_p"], num_warps=cfg["num_warps"])
    if criterion == "last":
        _launch_last(x, dt, bias, a2, B, C, m, ms, part, mask, nhb, cfg, common)
    elif criterion == "global":
        _ssd_global_kernel[(bsz, G * nhb)](
            x, dt, bias, a2, B, C, m, part, L, P, N, hpg, nhb, *x.stride(), *dt.stride(), *B.stride(), *C.stride(),
            *ms, part.stride(0), part.stride(1), BLOCK_T=cfg["block_t"], BLOCK_N=triton.next_power_of_2(N), **common,
        )
    else:
        raise ValueError(f"no Triton kernel for criterion {criterion!r}")
    torch.amax(part, dim=1, out=scores)
    return scores


def _launch_last(x, dt, bias, a2, B, C, m, ms, part, mask, nhb, cfg, common):
    bsz, L, H, P = x.shape
    G, N = B.shape[2], B.shape[3]
    hpg = H // G
    block_t = cfg["block_t"]
    n_tiles = triton.cdiv(L, block_t)
    chunks = max(1, min(cfg.get("chunks", 1), n_tiles))
    chunk_tiles = triton.cdiv(n_tiles, chunks)
    chunks = triton.cdiv(n_tiles, chunk_tiles)
    T = last_real_index(mask, bsz, L, x.device)
    ct = C[torch.arange(bsz, device=x.device), T].float().contiguous()  # [B, G, N]: readout at the last real token
    if chunks > 1:
        sums = _alloc.empty(bsz, chunks, H, dtype=torch.float32, device=x.device)
        _ssd_delta_chunk_sums_kernel[(bsz, G * nhb, chunks)](
            dt, bias, m, sums, L, hpg, nhb, *dt.stride(), *ms, sums.stride(0), sums.stride(1),
            chunk_tiles * block_t, HAS_MASK=common["HAS_MASK"], HAS_BIAS=common["HAS_BIAS"],
            SOFTPLUS=common["SOFTPLUS"], BLOCK_T=block_t, BLOCK_H=common["BLOCK_H"], num_warps=common["num_warps"],
        )
        # Exclusive cumsum over chunks (counted from the end): the delta of every token after the chunk.
        carry = torch.cat([torch.zeros_like(sums[:, :1]), sums[:, :-1].cumsum(dim=1)], dim=1)
    else:
        carry = part  # not read without HAS_CARRY
    _ssd_last_kernel[(bsz, G * nhb, chunks)](
        x, dt, bias, a2, B, ct, m, carry, part, L, P, N, hpg, nhb, *x.stride(), *dt.stride(), *B.stride(), *ms,
        ct.stride(0), ct.stride(1), carry.stride(0), carry.stride(1), part.stride(0), part.stride(1), chunk_tiles,
        HAS_CARRY=chunks > 1, BLOCK_T=block_t, BLOCK_N=cfg["block_n"], **common,
    )
