"""Fused Triton kernels for the `last` and `global` impact scores (contract: `impact_score_ref`).

Shapes: u, delta [B, L, D]; A [D, N]; B, C [B, L, N]; mask [B, L] bool; scores [B, L] fp32. Inputs may be
fp32/bf16/fp16 with any strides; all arithmetic is fp32. Layout and floor arithmetic: ops/README.md.

Both kernels give each program one sample and one block of BLOCK_D channels and walk the sequence
backwards, so the running quantity (the reverse cumsum R for `last`, the state G for `global`) stays in
registers. A program writes the max over its channels for each token to a partial buffer
[B, nD, L]; `torch.amax` over nD then gives the score. Max is exact, so the result is bit-for-bit
deterministic and no atomics are needed.

With delta_softplus / delta_bias the kernels read the raw step (dt_proj's output, often bf16) and form
softplus(dt + bias) in registers, as the scan does: no fp32 delta tensor is written and read back.

`last` can also split the sequence into `chunks` independent pieces (the "chunked" layout): a first
kernel sums delta over each chunk, a cumsum over chunks gives every piece its starting R, and the pieces
run in parallel. That trades one extra read of delta for B·nD·chunks-way parallelism.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .. import _alloc
from .._score_common import last_real_index
from .._triton_common import channel_vector, delta_from_raw, log2e_transposed


@triton.jit
def _delta_chunk_sums_kernel(
    delta_ptr, bias_ptr, mask_ptr, sums_ptr, L, D,
    s_db, s_dl, s_dd, s_mb, s_ml, s_sb, s_sc,
    CHUNK, HAS_MASK: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """sums[b, c, d] = Σ of the masked delta over chunk c, chunks counted from the END of the sequence."""
    pid_b, pid_d, pid_c = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    rows = tl.arange(0, BLOCK_T)
    base_b = pid_b.to(tl.int64)
    bias = channel_vector(bias_ptr, offs_d, d_ok, HAS_BIAS)
    acc = tl.zeros([BLOCK_D], tl.float32)
    for j in range(0, CHUNK, BLOCK_T):
        offs_t = L - 1 - (pid_c * CHUNK + j + rows)
        ok = offs_t >= 0
        x = tl.load(delta_ptr + base_b * s_db + offs_t[:, None] * s_dl + offs_d[None, :] * s_dd,
                    mask=ok[:, None] & d_ok[None, :], other=0.0)
        x = delta_from_raw(x, bias[None, :], ok[:, None] & d_ok[None, :], HAS_BIAS, SOFTPLUS)
        if HAS_MASK:
            m = tl.load(mask_ptr + base_b * s_mb + offs_t * s_ml, mask=ok, other=0) != 0
            x = tl.where(m[:, None], x, 0.0)
        acc += tl.sum(x, axis=0)
    tl.store(sums_ptr + base_b * s_sb + pid_c * s_sc + offs_d, acc, mask=d_ok)


@triton.jit
def _last_kernel(
    u_ptr, delta_ptr, bias_ptr, a2t_ptr, b_ptr, c_ptr, tlast_ptr, mask_ptr, sums_ptr, part_ptr, L, D,
    s_ub, s_ul, s_ud, s_db, s_dl, s_dd, s_bb, s_bl, s_bn, s_cb, s_cl, s_cn, s_mb, s_ml, s_sb, s_sc,
    s_pb, s_pd, CHUNK_TILES,
    N: tl.constexpr, HAS_MASK: tl.constexpr, HAS_CARRY: tl.constexpr, SIGNED: tl.constexpr,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """part[b, dblk, t] = max over the block's channels of |Δy_T(t)[d]| for the tokens of one chunk.

    Tiles are aligned to the end of the sequence and rows run backwards in time (row i of tile j is token
    L-1-(j·BLOCK_T+i)), so a forward tl.cumsum over rows is the reverse cumsum over time. The sum over the
    N states is unrolled: every term is a [BLOCK_T, BLOCK_D] tile, so no cross-lane reduction is needed.
    C_T is read here from C (T = L-1, or tlast[b] with a mask); A comes as A·log2 e transposed, [N, D] (rows
    load coalesced; a model's cached A carries it, see `log2e_transposed`); with HAS_CARRY the chunk's starting R is the sum of the per-chunk delta sums of
    the chunks after it (sums[b, c', :] for c' < pid_c, chunks counted from the end).
    """
    pid_b, pid_d, pid_c = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    rows = tl.arange(0, BLOCK_T)
    base_b = pid_b.to(tl.int64)
    carry = tl.zeros([BLOCK_D], tl.float32)
    if HAS_CARRY:
        for c in range(0, pid_c):
            carry += tl.load(sums_ptr + base_b * s_sb + c * s_sc + offs_d, mask=d_ok, other=0.0)
    if HAS_MASK:
        t_last = tl.load(tlast_ptr + pid_b)
    else:
        t_last = L - 1
    c_row = c_ptr + base_b * s_cb + t_last * s_cl
    bias = channel_vector(bias_ptr, offs_d, d_ok, HAS_BIAS)
    for j in range(CHUNK_TILES):
        offs_t = L - 1 - ((pid_c * CHUNK_TILES + j) * BLOCK_T + rows)
        t_ok = offs_t >= 0
        dmask = t_ok[:, None] & d_ok[None, :]
        if HAS_MASK:
            m = tl.load(mask_ptr + base_b * s_mb + offs_t * s_ml, mask=t_ok, other=0) != 0
            dmask = dmask & m[:, None]
        dt = tl.load(delta_ptr + base_b * s_db + offs_t[:, None] * s_dl + offs_d[None, :] * s_dd,
                     mask=dmask, other=0.0)
        dt = delta_from_raw(dt, bias[None, :], dmask, HAS_BIAS, SOFTPLUS)
        # Σ_{k>t} delta_k: the inclusive cumsum over the (time-reversed) rows less the row's own delta. The
        # subtraction costs at most ~eps·(R + delta_t) in R, i.e. a relative error |A|·eps·(R + delta_t) in
        # a decay; delta is read and (with softplus) computed once per token instead of twice.
        cs = tl.cumsum(dt, axis=0)
        R = carry[None, :] + (cs - dt)  # [BLOCK_T, BLOCK_D] ≥ 0
        carry += tl.sum(dt, axis=0)
        reach = tl.zeros([BLOCK_T, BLOCK_D], tl.float32)
        for n in tl.static_range(N):
            a_n = tl.load(a2t_ptr + n * D + offs_d, mask=d_ok, other=0.0)  # A[:, n]·log2(e), a contiguous row
            w_n = tl.load(b_ptr + base_b * s_bb + offs_t * s_bl + n * s_bn, mask=t_ok, other=0.0).to(tl.float32)
            w_n = w_n * tl.load(c_row + n * s_cn).to(tl.float32)  # B_t[n]·C_T[n]
            reach += w_n[:, None] * tl.exp2(a_n[None, :] * R)  # exponents ≤ 0
        ut = tl.load(u_ptr + base_b * s_ub + offs_t[:, None] * s_ul + offs_d[None, :] * s_ud,
                     mask=dmask, other=0.0).to(tl.float32)
        dy = ut * dt * reach
        if not SIGNED:
            dy = tl.abs(dy)
        best = tl.max(tl.where(d_ok[None, :], dy, float("-inf")), axis=1)
        if HAS_MASK:
            best = tl.where(m, best, float("-inf"))
        tl.store(part_ptr + base_b * s_pb + pid_d * s_pd + offs_t, best, mask=t_ok)


@triton.jit
def _global_kernel(
    u_ptr, delta_ptr, bias_ptr, a2t_ptr, b_ptr, c_ptr, mask_ptr, part_ptr, L, D, N,
    s_ub, s_ul, s_ud, s_db, s_dl, s_dd, s_bb, s_bl, s_bn, s_cb, s_cl, s_cn, s_mb, s_ml, s_pb, s_pd,
    HAS_MASK: tl.constexpr, SIGNED: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """part[b, dblk, t] = max over the block's channels of |u_t δ_t Σ_n B_t[n] G_t[d,n]|, by the reverse scan
    G_t = C_t + exp(δ_{t+1} A) ⊙ G_{t+1} with G^T [BLOCK_N, BLOCK_D] in registers (channels along lanes,
    like the coalesced loads of u and delta)."""
    pid_b, pid_d = tl.program_id(0), tl.program_id(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    d_ok, n_ok = offs_d < D, offs_n < N
    base_b = pid_b.to(tl.int64)
    a2t = tl.load(a2t_ptr + offs_n[:, None] * D + offs_d[None, :], mask=n_ok[:, None] & d_ok[None, :], other=0.0)
    bias = channel_vector(bias_ptr, offs_d, d_ok, HAS_BIAS)
    G = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    d_next = tl.zeros([BLOCK_D], tl.float32)  # delta_{t+1}; 0 past the end so G_{L-1} = C_{L-1}
    for j in range(L):
        t = L - 1 - j
        ct = tl.load(c_ptr + base_b * s_cb + t * s_cl + offs_n * s_cn, mask=n_ok, other=0.0).to(tl.float32)
        bt = tl.load(b_ptr + base_b * s_bb + t * s_bl + offs_n * s_bn, mask=n_ok, other=0.0).to(tl.float32)
        dt = tl.load(delta_ptr + base_b * s_db + t * s_dl + offs_d * s_dd, mask=d_ok, other=0.0)
        ut = tl.load(u_ptr + base_b * s_ub + t * s_ul + offs_d * s_ud, mask=d_ok, other=0.0).to(tl.float32)
        ok = d_ok
        if HAS_MASK:
            # An absent token adds no readout and no decay: G passes through it unchanged.
            m = tl.load(mask_ptr + base_b * s_mb + t * s_ml) != 0
            ct = tl.where(m, ct, 0.0)
            ok = ok & m
        dt = delta_from_raw(dt, bias, ok, HAS_BIAS, SOFTPLUS)
        G = ct[:, None] + tl.exp2(a2t * d_next[None, :]) * G
        dy = ut * dt * tl.sum(G * bt[:, None], axis=0)
        if not SIGNED:
            dy = tl.abs(dy)
        best = tl.max(tl.where(d_ok, dy, float("-inf")), axis=0)
        if HAS_MASK:
            best = tl.where(m, best, float("-inf"))
        tl.store(part_ptr + base_b * s_pb + pid_d * s_pd + t, best)
        d_next = dt


def default_config(criterion: str, programs: int | None = None, fused_softplus: bool = False,
                   seqlen: int | None = None) -> dict:
    """Block sizes, sequence chunks and warps: the fastest of H200 sweeps timed as graph replays
    (benchmarks/investigations/sweep_impact_launch.py). The sweep that chose the B = 1 chunking below kept no
    results file (the committed `results/sweep_impact_launch_h200.json` is an earlier, plain do_bench sweep); what
    backs the choice now is the kernel table of `results/vs_mamba_h200.json`, where this default scores a 1.4B
    layer in 0.094 ms at 1×2048 and 0.308 at 1×8192 (graph replay). The figures below are that sweep's.

    `last`, by programs = B·⌈D/32⌉ and whether the kernel forms the softplus itself:
    - at most 256 programs and L ≥ 128 (B = 1 at the 1.4B and 130m shapes): the sequence split into
      min(32, L/64) chunks, 16 channels, 1 warp. 1.4B layer, B=1: L=2048 0.101 ms against 0.146 unchunked;
      L=1229 0.066 against 0.097; L=8192 0.331 against 0.758.
    - otherwise 32×32 tiles, unchunked (chunking was slower from 512 programs: B=4, L=2048 0.289 ms unchunked,
      0.321 at 16 chunks). Fused softplus (the model's call: raw bf16 dt): 4 warps below 2048 programs, 2 from
      there (B=4, L=2048: 0.305 ms against 0.344 with 2; B=16, L=1229: 0.666 against 0.693 with 4).
      Materialised fp32 delta (benchmarks/bench_impact.py): 2 warps from 512 programs, 4 below.
    `global`: 16 channels, 1 warp at both shapes.
    """
    if criterion == "last":
        if programs is not None and programs <= 256 and seqlen is not None and seqlen >= 128:
            return dict(block_t=32, block_d=16, chunks=min(32, seqlen // 64), num_warps=1)
        many = 2048 if fused_softplus else 512
        warps = 2 if programs is not None and programs >= many else 4
        return dict(block_t=32, block_d=32, chunks=1, num_warps=warps)
    return dict(block_d=16, num_warps=1)


def impact_score_triton(
    u, delta, A, B, C, *, criterion: str = "last", signed: bool = False, mask=None, out=None, config=None,
    delta_bias=None, delta_softplus: bool = False,
) -> torch.Tensor:
    """`last` or `global` scores [B, L] fp32 with the contract of `impact_score_ref` (delta raw when
    delta_softplus / delta_bias are given: softplus(delta + delta_bias) is formed in the kernel).

    `config` overrides `default_config` (keys: block_t, block_d, chunks, num_warps); benchmarks sweep it.
    Launches: the score kernel, the per-chunk delta sums before it when the sequence is chunked, and one max
    over the channel blocks (plus, with a mask, the few ops that find each sample's last real token).
    """
    bsz, L, D = u.shape
    N = A.shape[1]
    dev = u.device
    scores = out if out is not None else _alloc.empty(bsz, L, dtype=torch.float32, device=dev)
    if L == 0 or bsz == 0:
        return scores
    cfg = {**default_config(criterion, bsz * triton.cdiv(D, 32), bool(delta_softplus), L), **(config or {})}
    block_d = cfg["block_d"]
    n_dblk = triton.cdiv(D, block_d)
    a2t = log2e_transposed(A)  # [N, D]: exp(x) = exp2(x·log2 e)
    part = _alloc.empty(bsz, n_dblk, L, dtype=torch.float32, device=dev)
    # Absent optional tensors are passed as any tensor: the kernels do not read them (HAS_MASK, HAS_BIAS false).
    m = mask.to(torch.uint8) if mask is not None else part
    bias = delta_bias if delta_bias is not None else part
    common = dict(HAS_MASK=mask is not None, SIGNED=signed, HAS_BIAS=delta_bias is not None,
                  SOFTPLUS=bool(delta_softplus), BLOCK_D=block_d, num_warps=cfg["num_warps"])
    if criterion == "last":
        _launch_last(u, delta, bias, a2t, B, C, m, part, mask, cfg, common)
    elif criterion == "global":
        _global_kernel[(bsz, n_dblk)](
            u, delta, bias, a2t, B, C, m, part, L, D, N, *u.stride(), *delta.stride(), *B.stride(), *C.stride(),
            *_mask_strides(m, mask), part.stride(0), part.stride(1), BLOCK_N=triton.next_power_of_2(N), **common,
        )
    else:
        raise ValueError(f"no Triton kernel for criterion {criterion!r}")
    torch.amax(part, dim=1, out=scores)
    return scores


def _mask_strides(m, mask) -> tuple[int, int]:
    return (m.stride(0), m.stride(1)) if mask is not None else (0, 0)


def _launch_last(u, delta, bias, a2t, B, C, m, part, mask, cfg, common):
    bsz, L, D = u.shape
    N = a2t.shape[0]
    block_t = cfg["block_t"]
    n_tiles = triton.cdiv(L, block_t)
    chunks = max(1, min(cfg.get("chunks", 1), n_tiles))
    chunk_tiles = math.ceil(n_tiles / chunks)
    chunks = triton.cdiv(n_tiles, chunk_tiles)
    # T per sample: the last real token (int64 [B]) with a mask; the kernel takes L-1 without one.
    tlast = last_real_index(mask, bsz, L, u.device) if mask is not None else part
    n_dblk = part.shape[1]
    sums = part  # not read without HAS_CARRY
    if chunks > 1:
        sums = _alloc.empty(bsz, chunks, D, dtype=torch.float32, device=u.device)
        _delta_chunk_sums_kernel[(bsz, n_dblk, chunks)](
            delta, bias, m, sums, L, D, *delta.stride(), *_mask_strides(m, mask), sums.stride(0), sums.stride(1),
            chunk_tiles * block_t, HAS_MASK=common["HAS_MASK"], HAS_BIAS=common["HAS_BIAS"],
            SOFTPLUS=common["SOFTPLUS"], BLOCK_T=block_t, BLOCK_D=common["BLOCK_D"], num_warps=common["num_warps"],
        )
    _last_kernel[(bsz, n_dblk, chunks)](
        u, delta, bias, a2t, B, C, tlast, m, sums, part, L, D, *u.stride(), *delta.stride(), *B.stride(),
        *C.stride(), *_mask_strides(m, mask), sums.stride(0), sums.stride(1), part.stride(0), part.stride(1),
        chunk_tiles, N=N, HAS_CARRY=chunks > 1, BLOCK_T=block_t, **common,
    )
