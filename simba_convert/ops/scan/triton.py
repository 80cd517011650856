"""Triton selective scan (forward and backward), differentiable through `torch.autograd.Function`.

Shapes: u, delta, z: [B, L, D]; A: [D, N] fp32; B, C: [B, L, N]; D (skip), delta_bias: [D];
states [B, D, N] fp32. Derivation and cost model: ops/README.md, "Selective scan".

Layout of the work: one program per (batch, block of BLOCK_D channels). It walks the sequence in
chunks of CHUNK steps; inside a chunk the recurrence h_t = a_t ⊙ h_{t-1} + b_t over the [CHUNK,
BLOCK_D·N] tile is one `tl.associative_scan` (all states live in registers, fp32), and the state
is carried from chunk to chunk. A second forward, `_scan_fwd_seq_kernel` (LaunchConfig.fwd_kind =
"seq", in triton_seq.py), walks the same programs one step at a time with the state
[N, BLOCK_D] in registers; "split" runs it in two passes over segments of the sequence, for launches
with too few programs (inference only). Either of the first two forwards stores the state entering
every chunk when a backward will follow; the backward walks the chunks in reverse, recomputes the
states of a chunk from its checkpoint and runs the adjoint recurrence G_t = C_t g_t + a_{t+1} ⊙ G_{t+1}
as a second scan over time-reversed loads. Channel reductions (dB, dC) go to per-channel-block partial buffers and batch
reductions (dA, dD, d delta_bias) to per-batch buffers, summed by torch: no atomics, so the
gradients are deterministic.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import torch
import triton
import triton.language as tl

from ...errors import ConfigError
from .. import _alloc
from .._triton_common import channel_vector, delta_act, log2e_transposed
from ..backend import needs_grad
from . import triton_seq
from .naive import selective_scan_ref

CHUNK = 16  # time steps per scan tile; fixes the checkpoint spacing, so it is not tuned per call


FWD_KINDS = ("auto", "chunk", "seq", "split")
MAX_FWD_STAGES = 4
# "auto": the seq forward (32 channels a program, 1 warp, 3 stages) once there are at least this many programs
# (B·⌈D/32⌉); below, too few warps are resident to hide its per-step latency and the chunk forward wins. H200,
# bf16, L = 2048 (BENCHMARKS.md): 512 programs (1.4B layer, B=4) seq 1.8x faster; 384 (130m, B=8) seq 4% faster;
# 128 (1.4B, B=1) seq 1.6x slower.
SEQ_MIN_PROGRAMS = 384
SEQ_AUTO = dict(fwd_block_d=32, fwd_warps=1, fwd_stages=3)
# "auto" runs the split forward when no checkpoints are needed, L >= SPLIT_MIN_LEN and the launch has fewer
# than SPLIT_BELOW_PROGRAMS programs: S segments with B·⌈D/32⌉·S ≈ SPLIT_TARGET_PROGRAMS, each at least
# SPLIT_MIN_STEPS long, at most SPLIT_MAX_SEGMENTS. H200, bf16, 1.4B layer (benchmarks/investigations/sweep_scan_split.py,
# BENCHMARKS.md): S = 16 was the fastest or tied at 128, 256 and 512 programs (1x2048: 0.250 ms against chunk
# 0.505; 4x2048: 0.835 against seq 1.090; 1x8192: 0.892 against chunk 1.986); at 1024 programs (8x2048) seq
# was faster than every split (1.276 against 1.585 ms at S = 8).
SPLIT_MIN_LEN = 256
SPLIT_BELOW_PROGRAMS = 1024
SPLIT_TARGET_PROGRAMS = 8192
SPLIT_MIN_STEPS = 64
SPLIT_MAX_SEGMENTS = 16


@dataclass(frozen=True)
class LaunchConfig:
    """Channels per program and warps, for the forward and the backward kernel, and the forward's kind.

    fwd_kind: "chunk" (`_scan_fwd_kernel`, associative scan over CHUNK-step tiles), "seq"
    (`_scan_fwd_seq_kernel`, one step per iteration), "split" (the seq kernel in two passes over fwd_splits
    segments of the sequence; forward only: with checkpoints to save it runs as "seq") or "auto" (seq with
    SEQ_AUTO's sizes when the launch has at least SEQ_MIN_PROGRAMS programs; below, split with SEQ_AUTO's sizes
    when no checkpoints are needed and L >= SPLIT_MIN_LEN, else chunk with fwd_block_d / fwd_warps).
    fwd_stages (seq, split): steps whose loads are in flight at once, 1 (load and use in the same step) to
    MAX_FWD_STAGES (u, delta, z loaded 3 steps ahead). fwd_splits (split): segments, 0 = chosen from the
    launch (`auto_splits`); the count used is ⌈L / ⌈L / fwd_splits⌉⌉ (no empty segment), and one segment
    is "seq". For "seq" and "split", fwd_block_d should be a multiple of 32·fwd_warps so that a channel's
    N states sit in one thread (ops/README.md, "Selective scan").
    """

    fwd_block_d: int = 16
    fwd_warps: int = 4
    bwd_block_d: int = 8
    bwd_warps: int = 4
    fwd_kind: str = "auto"
    fwd_stages: int = 2
    fwd_splits: int = 0

    def __post_init__(self):
        if self.fwd_kind not in FWD_KINDS:
            raise ConfigError(f"selective scan fwd_kind must be one of {FWD_KINDS}, got {self.fwd_kind!r}")
        if not 1 <= self.fwd_stages <= MAX_FWD_STAGES:
            raise ConfigError(f"selective scan fwd_stages must be in 1..{MAX_FWD_STAGES}, got {self.fwd_stages}")
        if self.fwd_splits < 0:
            raise ConfigError(f"selective scan fwd_splits must be >= 0 (0 = automatic), got {self.fwd_splits}")

    @classmethod
    def from_env(cls) -> "LaunchConfig":
        """SIMBA_SCAN_CONFIG="fwd_bd,fwd_warps,bwd_bd,bwd_warps[,fwd_kind[,fwd_stages[,fwd_splits]]]" overrides
        the defaults (for tuning); the four-value form of earlier versions still works."""
        spec = os.environ.get("SIMBA_SCAN_CONFIG")
        if not spec:
            return cls()
        parts = [v.strip() for v in spec.split(",")]
        if not 4 <= len(parts) <= 7:
            raise ConfigError(f"SIMBA_SCAN_CONFIG needs 4 to 7 comma-separated values, got {spec!r}")
        kw = dict(zip(("fwd_kind", "fwd_stages", "fwd_splits"), parts[4:]))
        kw.setdefault("fwd_kind", "chunk")  # the four-value form predates the other kinds
        try:
            sizes = [int(v) for v in parts[:4]]
            for k in ("fwd_stages", "fwd_splits"):
                if k in kw:
                    kw[k] = int(kw[k])
        except ValueError:
            raise ConfigError(f"SIMBA_SCAN_CONFIG has a non-integer size: {spec!r}") from None
        return cls(*sizes, **kw)


# ----------------------------------------------------------------------------------- device code
@triton.jit
def _combine(a1, b1, a2, b2):
    # (a1, b1) is the earlier step: h = a2 ⊙ (a1 ⊙ h0 + b1) + b2.
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _delta(raw, bias, SOFTPLUS: tl.constexpr):
    """delta = softplus(raw + bias) in fp32 and d delta / d raw. Shapes: raw [T, BD], bias [BD]."""
    return delta_act(raw + bias[None, :], SOFTPLUS)


@triton.jit
def _load_td(ptr, sb, st, sd, pid_b, t, d, L, Dm):
    """Load a [T, BD] tile of a [B, L, D] tensor as fp32 (0 outside)."""
    m = (t[:, None] < L) & (t[:, None] >= 0) & (d[None, :] < Dm)
    return tl.load(ptr + pid_b * sb + t[:, None] * st + d[None, :] * sd, mask=m, other=0.0).to(tl.float32)


@triton.jit
def _load_tn(ptr, sb, st, sn, pid_b, t, n, L, N):
    """Load a [T, NP] tile of a [B, L, N] tensor as fp32 (0 outside)."""
    m = (t[:, None] < L) & (t[:, None] >= 0) & (n[None, :] < N)
    return tl.load(ptr + pid_b * sb + t[:, None] * st + n[None, :] * sn, mask=m, other=0.0).to(tl.float32)


@triton.jit
def _flat(x, T: tl.constexpr, BD: tl.constexpr, NP: tl.constexpr):
    return tl.reshape(x, [T, BD * NP])


@triton.jit
def _cube(x, T: tl.constexpr, BD: tl.constexpr, NP: tl.constexpr):
    return tl.reshape(x, [T, BD, NP])


@triton.jit
def _scan_fwd_kernel(
    u_ptr, dl_ptr, z_ptr, b_ptr, c_ptr, a_ptr, dskip_ptr, bias_ptr, h0_ptr,
    y_ptr, last_ptr, chk_ptr,
    L, Dm, N, n_chunks,
    su_b, su_t, su_d, sdl_b, sdl_t, sdl_d, sz_b, sz_t, sz_d,
    sb_b, sb_t, sb_n, sc_b, sc_t, sc_n, sy_b, sy_t, sy_d,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_H0: tl.constexpr, STORE_LAST: tl.constexpr, SAVE_CHK: tl.constexpr,
    T: tl.constexpr, BD: tl.constexpr, NP: tl.constexpr,
):
    pid_d = tl.program_id(0)
    pid_b = tl.program_id(1)
    rows = tl.arange(0, T)
    d = pid_d * BD + tl.arange(0, BD)
    n = tl.arange(0, NP)
    dn_mask = (d[:, None] < Dm) & (n[None, :] < N)
    dn_off = d[:, None] * N + n[None, :]  # offsets into [D, N]-shaped fp32 buffers
    A2 = tl.load(a_ptr + dn_off, mask=dn_mask, other=0.0).to(tl.float32) * 1.4426950408889634
    dskip = channel_vector(dskip_ptr, d, d < Dm, HAS_D)
    bias = channel_vector(bias_ptr, d, d < Dm, HAS_BIAS)
    state_off = pid_b * Dm * N + dn_off
    if HAS_H0:
        h = tl.load(h0_ptr + state_off, mask=dn_mask, other=0.0)
    else:
        h = tl.zeros([BD, NP], tl.float32)
    h = tl.reshape(h, [BD * NP])
    for c in range(0, n_chunks):
        t = c * T + rows
        if SAVE_CHK:
            tl.store(chk_ptr + (pid_b * n_chunks + c) * Dm * N + dn_off, tl.reshape(h, [BD, NP]), mask=dn_mask)
        valid = (t[:, None] < L) & (d[None, :] < Dm)
        delta, _ = _delta(_load_td(dl_ptr, sdl_b, sdl_t, sdl_d, pid_b, t, d, L, Dm), bias, SOFTPLUS)
        delta = tl.where(valid, delta, 0.0)  # a = 1, b = 0 past the end: the state passes through
        u = _load_td(u_ptr, su_b, su_t, su_d, pid_b, t, d, L, Dm)
        Bt = _load_tn(b_ptr, sb_b, sb_t, sb_n, pid_b, t, n, L, N)
        Ct = _load_tn(c_ptr, sc_b, sc_t, sc_n, pid_b, t, n, L, N)
        a = _flat(tl.exp2(delta[:, :, None] * A2[None, :, :]), T, BD, NP)
        b = _flat((delta * u)[:, :, None] * Bt[:, None, :], T, BD, NP)
        b = tl.where(rows[:, None] == 0, b + a * h[None, :], b)
        _, hs = tl.associative_scan((a, b), 0, _combine)
        y = tl.sum(_cube(hs, T, BD, NP) * Ct[:, None, :], axis=2) + dskip[None, :] * u
        if HAS_Z:
            zz = _load_td(z_ptr, sz_b, sz_t, sz_d, pid_b, t, d, L, Dm)
            y = y * zz * tl.sigmoid(zz)
        tl.store(y_ptr + pid_b * sy_b + t[:, None] * sy_t + d[None, :] * sy_d, y.to(y_ptr.dtype.element_ty), mask=valid)
        h = tl.sum(tl.where(rows[:, None] == T - 1, hs, 0.0), axis=0)
    if STORE_LAST:
        tl.store(last_ptr + state_off, tl.reshape(h, [BD, NP]), mask=dn_mask)


@triton.jit
def _scan_bwd_kernel(
    u_ptr, dl_ptr, z_ptr, b_ptr, c_ptr, a_ptr, dskip_ptr, bias_ptr, chk_ptr, dy_ptr,
    du_ptr, ddl_ptr, dz_ptr, dBp_ptr, dCp_ptr, dAp_ptr, dDp_ptr, dbiasp_ptr, dh0_ptr,
    L, Dm, N, n_chunks, Bsz,
    su_b, su_t, su_d, sdl_b, sdl_t, sdl_d, sz_b, sz_t, sz_d,
    sb_b, sb_t, sb_n, sc_b, sc_t, sc_n, sdy_b, sdy_t, sdy_d, so_b, so_t, so_d,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_H0: tl.constexpr,
    T: tl.constexpr, BD: tl.constexpr, NP: tl.constexpr,
):
    pid_d = tl.program_id(0)
    pid_b = tl.program_id(1)
    rows = tl.arange(0, T)
    d = pid_d * BD + tl.arange(0, BD)
    n = tl.arange(0, NP)
    dn_mask = (d[:, None] < Dm) & (n[None, :] < N)
    dn_off = d[:, None] * N + n[None, :]
    A = tl.load(a_ptr + dn_off, mask=dn_mask, other=0.0).to(tl.float32)
    A2 = A * 1.4426950408889634
    dskip = channel_vector(dskip_ptr, d, d < Dm, HAS_D)
    bias = channel_vector(bias_ptr, d, d < Dm, HAS_BIAS)
    carry = tl.zeros([BD * NP], tl.float32)  # a_{t+1} ⊙ G_{t+1} for the step after the chunk
    dA_acc = tl.zeros([BD, NP], tl.float32)
    dD_acc = tl.zeros([BD], tl.float32)
    dbias_acc = tl.zeros([BD], tl.float32)
    for i in range(0, n_chunks):
        c = n_chunks - 1 - i
        t0 = c * T
        t = t0 + rows
        valid = (t[:, None] < L) & (d[None, :] < Dm)
        h0 = tl.load(chk_ptr + (pid_b * n_chunks + c) * Dm * N + dn_off, mask=dn_mask, other=0.0)

        # States entering each step, h_{t-1}: a scan over the steps shifted by one, whose first
        # element is the checkpoint itself (exact, no division by a_t).
        tp = t - 1
        vp = (tp[:, None] >= t0) & (tp[:, None] < L) & (d[None, :] < Dm)
        dp, _ = _delta(_load_td(dl_ptr, sdl_b, sdl_t, sdl_d, pid_b, tp, d, L, Dm), bias, SOFTPLUS)
        dp = tl.where(vp, dp, 0.0)
        up = _load_td(u_ptr, su_b, su_t, su_d, pid_b, tp, d, L, Dm)
        Bp = _load_tn(b_ptr, sb_b, sb_t, sb_n, pid_b, tp, n, L, N)
        ap = _flat(tl.exp2(dp[:, :, None] * A2[None, :, :]), T, BD, NP)
        bp = _flat((dp * up)[:, :, None] * Bp[:, None, :], T, BD, NP)
        bp = tl.where(rows[:, None] == 0, _flat(tl.broadcast_to(h0[None, :, :], [T, BD, NP]), T, BD, NP), bp)
        _, hprev = tl.associative_scan((ap, bp), 0, _combine)
        hprev = _cube(hprev, T, BD, NP)

        # Step t itself: h_t, y_t and the gate.
        raw = _load_td(dl_ptr, sdl_b, sdl_t, sdl_d, pid_b, t, d, L, Dm)
        delta, ddelta_draw = _delta(raw, bias, SOFTPLUS)
        delta = tl.where(valid, delta, 0.0)
        u = _load_td(u_ptr, su_b, su_t, su_d, pid_b, t, d, L, Dm)
        Bt = _load_tn(b_ptr, sb_b, sb_t, sb_n, pid_b, t, n, L, N)
        Ct = _load_tn(c_ptr, sc_b, sc_t, sc_n, pid_b, t, n, L, N)
        dy = _load_td(dy_ptr, sdy_b, sdy_t, sdy_d, pid_b, t, d, L, Dm)
        a = tl.exp2(delta[:, :, None] * A2[None, :, :])
        h = a * hprev + (delta * u)[:, :, None] * Bt[:, None, :]
        if HAS_Z:
            zz = _load_td(z_ptr, sz_b, sz_t, sz_d, pid_b, t, d, L, Dm)
            sig = tl.sigmoid(zz)
            y = tl.sum(h * Ct[:, None, :], axis=2) + dskip[None, :] * u
            dz = dy * y * sig * (1.0 + zz * (1.0 - sig))
            tl.store(dz_ptr + pid_b * so_b + t[:, None] * so_t + d[None, :] * so_d, dz.to(dz_ptr.dtype.element_ty), mask=valid)
            g = dy * zz * sig
        else:
            g = dy

        # Adjoint G_t over time-reversed rows r (t = t0 + T - 1 - r): G_r = a_{t+1} ⊙ G_{r-1} + C_t g_t.
        tr = t0 + T - 1 - rows
        vr = (tr[:, None] < L) & (d[None, :] < Dm)
        dn_, _ = _delta(_load_td(dl_ptr, sdl_b, sdl_t, sdl_d, pid_b, tr + 1, d, L, Dm), bias, SOFTPLUS)
        dn_ = tl.where((tr[:, None] + 1 < L) & (d[None, :] < Dm), dn_, 0.0)
        alpha = _flat(tl.exp2(dn_[:, :, None] * A2[None, :, :]), T, BD, NP)
        gr = _load_td(dy_ptr, sdy_b, sdy_t, sdy_d, pid_b, tr, d, L, Dm)
        if HAS_Z:
            zr = _load_td(z_ptr, sz_b, sz_t, sz_d, pid_b, tr, d, L, Dm)
            gr = gr * zr * tl.sigmoid(zr)
        gr = tl.where(vr, gr, 0.0)
        Cr = _load_tn(c_ptr, sc_b, sc_t, sc_n, pid_b, tr, n, L, N)
        beta = _flat(gr[:, :, None] * Cr[:, None, :], T, BD, NP)
        beta = tl.where(rows[:, None] == 0, beta + carry[None, :], beta)
        _, G = tl.associative_scan((alpha, beta), 0, _combine)
        G = _cube(tl.flip(G, 0), T, BD, NP)  # back to natural time order
        aG = a * G
        carry = tl.sum(tl.where(rows[:, None] == 0, _flat(aG, T, BD, NP), 0.0), axis=0)

        # Gradients of step t.
        tn_mask = (t[:, None] < L) & (n[None, :] < N)
        tn_off = ((pid_d * Bsz + pid_b) * L + t[:, None]) * N + n[None, :]
        tl.store(dCp_ptr + tn_off, tl.sum(g[:, :, None] * h, axis=1), mask=tn_mask)
        tl.store(dBp_ptr + tn_off, tl.sum(G * (delta * u)[:, :, None], axis=1), mask=tn_mask)
        sGB = tl.sum(G * Bt[:, None, :], axis=2)
        aGh = aG * hprev
        du = delta * sGB + dskip[None, :] * g
        ddelta = (u * sGB + tl.sum(aGh * A[None, :, :], axis=2)) * ddelta_draw
        ddelta = tl.where(valid, ddelta, 0.0)
        dA_acc += tl.sum(aGh * delta[:, :, None], axis=0)
        dD_acc += tl.sum(g * u, axis=0)
        dbias_acc += tl.sum(ddelta, axis=0)
        tl.store(du_ptr + pid_b * so_b + t[:, None] * so_t + d[None, :] * so_d, du.to(du_ptr.dtype.element_ty), mask=valid)
        tl.store(ddl_ptr + pid_b * so_b + t[:, None] * so_t + d[None, :] * so_d, ddelta.to(ddl_ptr.dtype.element_ty), mask=valid)
    state_off = pid_b * Dm * N + dn_off
    tl.store(dAp_ptr + state_off, dA_acc, mask=dn_mask)
    tl.store(dDp_ptr + pid_b * Dm + d, dD_acc, mask=d < Dm)
    tl.store(dbiasp_ptr + pid_b * Dm + d, dbias_acc, mask=d < Dm)
    if HAS_H0:
        tl.store(dh0_ptr + state_off, tl.reshape(carry, [BD, NP]), mask=dn_mask)


# ----------------------------------------------------------------------------------- host code
def _np(N: int) -> int:
    return max(2, triton.next_power_of_2(N))


def auto_splits(programs: int, seqlen: int) -> int:
    """Segments for a split forward of `programs` programs per segment over `seqlen` steps (see SPLIT_*)."""
    want = triton.cdiv(SPLIT_TARGET_PROGRAMS, programs)
    return max(1, min(want, seqlen // SPLIT_MIN_STEPS, SPLIT_MAX_SEGMENTS))


def _segments(seqlen: int, splits: int) -> tuple[int, int]:
    """(steps per segment, segments) for at most `splits` segments; only the last one may be shorter."""
    seg_len = triton.cdiv(seqlen, max(1, splits))
    return seg_len, triton.cdiv(seqlen, seg_len)


def resolve_forward(cfg: LaunchConfig, bsz: int, dm: int, seqlen: int, save_checkpoints: bool) -> LaunchConfig:
    """The forward kind (and, for "auto", sizes) a launch over bsz samples of dm channels and seqlen steps
    will use; a "split" result carries its segment count (>= 2) in fwd_splits."""
    kind = cfg.fwd_kind
    if kind == "auto":
        programs = bsz * triton.cdiv(dm, SEQ_AUTO["fwd_block_d"])
        if not save_checkpoints and seqlen >= SPLIT_MIN_LEN and programs < SPLIT_BELOW_PROGRAMS:
            cfg = replace(cfg, **SEQ_AUTO)
        elif programs >= SEQ_MIN_PROGRAMS:
            return replace(cfg, fwd_kind="seq", **SEQ_AUTO)
        else:
            return replace(cfg, fwd_kind="chunk")
    elif kind != "split":
        return cfg
    if save_checkpoints:  # the split passes store no checkpoints; seq is the same kernel in one pass
        return replace(cfg, fwd_kind="seq")
    splits = cfg.fwd_splits or auto_splits(bsz * triton.cdiv(dm, cfg.fwd_block_d), seqlen)
    n_seg = _segments(seqlen, splits)[1] if seqlen > 0 else 1
    if n_seg > 1:
        return replace(cfg, fwd_kind="split", fwd_splits=n_seg)
    # One segment is the seq forward; "auto" only wants that with enough programs.
    return replace(cfg, fwd_kind="chunk" if kind == "auto" else "seq", fwd_splits=0)


def scan_forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state,
                 return_last_state, save_checkpoints, config: LaunchConfig | None = None):
    """Launch the forward kernel `config.fwd_kind` names. Returns y [B, L, D] (u's dtype), last [B, D, N]
    or None, checkpoints or None.

    checkpoints: [B, ceil(L/CHUNK), D, N] fp32, the state entering each chunk (the same from chunk and seq;
    with save_checkpoints a "split" config runs as seq, see `resolve_forward`).
    """
    cfg = config or LaunchConfig.from_env()
    bsz, L, dm = u.shape
    cfg = resolve_forward(cfg, bsz, dm, L, save_checkpoints)
    N = A.shape[1]
    n_chunks = triton.cdiv(L, CHUNK)
    f32 = dict(device=u.device, dtype=torch.float32)
    y = _alloc.empty(bsz, L, dm, device=u.device, dtype=u.dtype)
    last = _alloc.empty(bsz, dm, N, **f32) if return_last_state else None
    chk = _alloc.empty(bsz, n_chunks, dm, N, **f32) if save_checkpoints else None
    h0 = initial_state.float().contiguous() if initial_state is not None else None
    dummy = y
    zz = z if z is not None else u
    n_blk = triton.cdiv(dm, cfg.fwd_block_d)
    flags = dict(
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
        SOFTPLUS=bool(delta_softplus), HAS_H0=h0 is not None, STORE_LAST=return_last_state,
        SAVE_CHK=save_checkpoints, T=CHUNK, BD=cfg.fwd_block_d, NP=_np(N), num_warps=cfg.fwd_warps,
    )
    inputs = (
        D.contiguous() if D is not None else dummy, delta_bias.contiguous() if delta_bias is not None else dummy,
        h0 if h0 is not None else dummy, y, last if last is not None else dummy, chk if chk is not None else dummy,
    )
    if cfg.fwd_kind == "chunk":
        _scan_fwd_kernel[(n_blk, bsz)](
            u, delta, zz, B, C, A.float().contiguous(), *inputs, L, dm, N, n_chunks,
            *u.stride(), *delta.stride(), *zz.stride(), *B.stride(), *C.stride(), *y.stride(), **flags,
        )
        return y, last, chk
    kernel = triton_seq._scan_fwd_seq_kernel  # looked up per call, so tests can stub it

    # A·log2 e transposed, [N, D] (see the kernel's docstring). B and C in fp32: in bf16 every lane
    # converts both whole rows each step, ~2N extra instructions; the copy is small ([B, L, N]).
    a_arg, B, C = log2e_transposed(A), B.float(), C.float()
    split = cfg.fwd_kind == "split"
    seg_len, n_seg = _segments(L, cfg.fwd_splits) if split else (L, 1)
    # Segment summaries of the split forward: end state from 0 [B, S-1, D, N] and Σ delta [B, S-1, D].
    hend = _alloc.empty(bsz, n_seg - 1, dm, N, **f32) if split else dummy
    dsum = _alloc.empty(bsz, n_seg - 1, dm, **f32) if split else dummy
    args = (
        u, delta, zz, B, C, a_arg, *inputs, hend, dsum, L, dm, N, n_chunks, seg_len, n_seg,
        *u.stride(), *delta.stride(), *zz.stride(), *B.stride(), *C.stride(), *y.stride(),
    )
    flags.update(STAGES=cfg.fwd_stages, EVEN_N=N == _np(N), SPLIT=split, READOUT=True)
    if split:  # pass 1: summaries of segments 0 .. S-2 (no readout, from a zero state)
        summary_flags = dict(flags, HAS_D=False, HAS_Z=False, HAS_H0=False, STORE_LAST=False, READOUT=False)
        kernel[(n_blk, bsz, n_seg - 1)](*args, **summary_flags)
    kernel[(n_blk, bsz, n_seg)](*args, **flags)
    return y, last, chk


def scan_backward(dy, u, delta, A, B, C, D, z, delta_bias, delta_softplus, chk, has_h0,
                  config: LaunchConfig | None = None):
    """Launch the backward kernel and reduce its partial buffers.

    Returns du, ddelta, dz (inputs' dtypes, [B, L, D]); dA [D, N]; dB, dC [B, L, N] fp32;
    dD, d delta_bias [D] fp32; d initial_state [B, D, N] fp32 (None where not applicable).
    """
    cfg = config or LaunchConfig.from_env()
    bsz, L, dm = u.shape
    N = A.shape[1]
    n_chunks = chk.shape[1]
    n_blk = triton.cdiv(dm, cfg.bwd_block_d)
    dev = u.device
    f32 = dict(device=dev, dtype=torch.float32)
    # Gradients are written contiguous ([B, L, D] strides shared by du, d delta, dz).
    du = _alloc.empty(*u.shape, device=dev, dtype=u.dtype)
    ddelta = _alloc.empty(*delta.shape, device=dev, dtype=delta.dtype)
    dz = _alloc.empty(*z.shape, device=dev, dtype=z.dtype) if z is not None else None
    dBp = _alloc.empty(n_blk, bsz, L, N, **f32)
    dCp = _alloc.empty(n_blk, bsz, L, N, **f32)
    dAp = _alloc.empty(bsz, dm, N, **f32)
    dDp = _alloc.empty(bsz, dm, **f32)
    dbiasp = _alloc.empty(bsz, dm, **f32)
    dh0 = _alloc.empty(bsz, dm, N, **f32) if has_h0 else None
    dy = dy.contiguous() if dy.stride(-1) != 1 else dy
    zz, dzz = (z, dz) if z is not None else (u, du)
    grid = (n_blk, bsz)
    _scan_bwd_kernel[grid](
        u, delta, zz, B, C, A.float().contiguous(),
        D.contiguous() if D is not None else dAp,
        delta_bias.contiguous() if delta_bias is not None else dAp,
        chk, dy, du, ddelta, dzz, dBp, dCp, dAp, dDp, dbiasp, dh0 if dh0 is not None else dAp,
        L, dm, N, n_chunks, bsz,
        *u.stride(), *delta.stride(), *zz.stride(), *B.stride(), *C.stride(), *dy.stride(), *du.stride(),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
        SOFTPLUS=bool(delta_softplus), HAS_H0=has_h0,
        T=CHUNK, BD=cfg.bwd_block_d, NP=_np(N), num_warps=cfg.bwd_warps,
    )
    dB = dBp[0] if n_blk == 1 else dBp.sum(0)
    dC = dCp[0] if n_blk == 1 else dCp.sum(0)
    return du, ddelta, dz, dAp.sum(0), dB, dC, dDp.sum(0), dbiasp.sum(0), dh0


def _prepare(t: torch.Tensor | None) -> torch.Tensor | None:
    """Kernels index [B, L, X] tensors by strides; only the last dim must be unit-stride for fast loads."""
    if t is None:
        return None
    return t if t.stride(-1) == 1 else t.contiguous()


class SelectiveScanFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, return_last_state,
                save_for_backward):
        u, delta, z, B, C = (_prepare(t) for t in (u, delta, z, B, C))
        need_grad = save_for_backward
        y, last, chk = scan_forward(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state,
            return_last_state, save_checkpoints=need_grad,
        )
        if need_grad:
            ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, chk)
            ctx.delta_softplus = delta_softplus
            ctx.has_h0 = initial_state is not None
            ctx.dtypes = tuple(t.dtype if t is not None else None for t in (A, B, C, D, delta_bias, initial_state))
        if return_last_state:
            ctx.mark_non_differentiable(last)  # gradients through the last state are not supported
            return y, last
        return y

    @staticmethod
    def backward(ctx, dy, *unused):
        u, delta, A, B, C, D, z, delta_bias, chk = ctx.saved_tensors
        du, ddelta, dz, dA, dB, dC, dD, dbias, dh0 = scan_backward(
            dy, u, delta, A, B, C, D, z, delta_bias, ctx.delta_softplus, chk, ctx.has_h0
        )
        tA, tB, tC, tD, tbias, th0 = ctx.dtypes
        return (
            du, ddelta, dA.to(tA), dB.to(tB), dC.to(tC),
            dD.to(tD) if D is not None else None,
            dz,
            dbias.to(tbias) if delta_bias is not None else None,
            None,
            dh0.to(th0) if dh0 is not None else None,
            None,
            None,
        )


def selective_scan_triton(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
    initial_state=None, return_last_state=False,
):
    """Triton selective scan with the contract of `selective_scan_ref`; differentiable.

    The last state is returned without a gradient path (as in the reference's training use: the
    model never back-propagates through the returned state). An empty sequence is delegated.
    """
    if u.shape[1] == 0:
        return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, return_last_state)
    tensors = (u, delta, A, B, C, D, z, delta_bias, initial_state)
    # Checkpoints cost memory; keep them only when autograd will call backward.
    save = needs_grad(*tensors)
    return SelectiveScanFn.apply(
        u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, return_last_state, save
    )
