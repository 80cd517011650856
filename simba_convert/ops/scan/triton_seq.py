"""Sequential-in-time forward of the Triton selective scan (LaunchConfig.fwd_kind = "seq" and "split").

Same contract and launch as `_scan_fwd_kernel` in triton.py (which launches it from
`scan_forward`), but one time step per loop iteration instead of an associative scan over CHUNK-step
tiles: per step and channel N exp2 and ~4N multiply-adds (the log-depth scan does ~4x the
multiply-adds and shuffles along time). It writes the same checkpoints, so `_scan_bwd_kernel` follows
either forward. Shapes: u, delta, z, y [B, L, D]; B, C [B, L, N]; A·log2 e as [N, D]; states [B, D, N]
fp32. Why it should approach the exp2 floor: ops/README.md, "Selective scan".

The same kernel runs the two passes of the split-sequence forward ("split", for launches with too few
programs to fill the GPU; inference only, no checkpoints): the sequence is cut into n_seg segments of
seg_len steps (a third grid axis), pass 1 (READOUT=False) summarises each segment but the last by its end
state from zero and its Σ delta, pass 2 (READOUT=True) folds the earlier summaries into its entering state
and writes y. Derivation and cost model: ops/README.md, "Split-sequence forward".
"""

from __future__ import annotations

import triton
import triton.language as tl

from .._triton_common import channel_vector, delta_act


@triton.jit
def _row_loads(u_row, dl_row, z_row, su_t, sdl_t, sz_t, t, L, d_ok, HAS_Z: tl.constexpr):
    """u, raw delta and z of step t, [BD] fp32. A step past the end reads step L-1 again instead of
    masking on t: prefetched values past the end are never used (nor, in the split forward, values
    past the segment's end, which are the next segment's)."""
    t = tl.minimum(t, L - 1)
    u = tl.load(u_row + t * su_t, mask=d_ok, other=0.0).to(tl.float32)
    raw = tl.load(dl_row + t * sdl_t, mask=d_ok, other=0.0).to(tl.float32)
    z = u  # placeholder without a gate: never read
    if HAS_Z:
        z = tl.load(z_row + t * sz_t, mask=d_ok, other=0.0).to(tl.float32)
    return u, raw, z


@triton.jit
def _bc_loads(b_row, c_row, sb_t, sc_t, t, L, n_ok, EVEN_N: tl.constexpr, HAS_C: tl.constexpr):
    """B_t and C_t, [NP] fp32 (0 in padded lanes); every lane reads the whole row (an L1 broadcast).
    Without HAS_C (a pass that writes no y) C is not read and B stands in for it."""
    t = tl.minimum(t, L - 1)
    if EVEN_N:  # no mask: a masked load zero-fills its registers first, NP extra instructions a step
        bt = tl.load(b_row + t * sb_t).to(tl.float32)
        ct = bt
        if HAS_C:
            ct = tl.load(c_row + t * sc_t).to(tl.float32)
        return bt, ct
    bt = tl.load(b_row + t * sb_t, mask=n_ok, other=0.0).to(tl.float32)
    ct = bt
    if HAS_C:
        ct = tl.load(c_row + t * sc_t, mask=n_ok, other=0.0).to(tl.float32)
    return bt, ct


@triton.jit
def _flat_tile(pid_d, Dm, N, BD: tl.constexpr, NP: tl.constexpr):
    """Row n, channel d and validity of each element of the flattened state tile hT [NP, BD] (row-major), for
    1D memory accesses reshaped to [NP, BD] (`_tile_load`, `_tile_store`); contiguity 1, so never vectorised."""
    i = tl.max_contiguous(tl.arange(0, NP * BD), 1)
    n = i // BD
    d = pid_d * BD + i % BD
    return n, d, (n < N) & (d < Dm)


@triton.jit
def _tile_load(ptrs, mask, NP: tl.constexpr, BD: tl.constexpr):
    """A [NP, BD] fp32 tile from the flat pointers of `_flat_tile` (0 where masked)."""
    return tl.reshape(tl.load(ptrs, mask=mask, other=0.0).to(tl.float32), [NP, BD])


@triton.jit
def _tile_store(ptrs, x, mask, NP: tl.constexpr, BD: tl.constexpr):
    tl.store(ptrs, tl.reshape(x, [NP * BD]), mask=mask)


@triton.jit
def _scan_fwd_seq_kernel(
    u_ptr, dl_ptr, z_ptr, b_ptr, c_ptr, a2t_ptr, dskip_ptr, bias_ptr, h0_ptr,
    y_ptr, last_ptr, chk_ptr, hend_ptr, dsum_ptr,
    L, Dm, N, n_chunks, seg_len, n_seg,
    su_b, su_t, su_d, sdl_b, sdl_t, sdl_d, sz_b, sz_t, sz_d,
    sb_b, sb_t, sb_n, sc_b, sc_t, sc_n, sy_b, sy_t, sy_d,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_H0: tl.constexpr, STORE_LAST: tl.constexpr, SAVE_CHK: tl.constexpr,
    SPLIT: tl.constexpr, READOUT: tl.constexpr,
    T: tl.constexpr, BD: tl.constexpr, NP: tl.constexpr, STAGES: tl.constexpr, EVEN_N: tl.constexpr,
):
    """The forward one step per iteration; outputs as `_scan_fwd_kernel`, but A comes as A·log2 e [N, D].

    The state is held transposed, hT [NP, BD] fp32: lanes along channels (like the [BD] loads of u,
    delta, z and the store of y) and a channel's NP states in its lane's registers, so the sum over N
    needs no shuffles. Per step and channel: NP exp2 and ~4 NP multiply-adds, and only the FMA
    h = a ⊙ h + b on the loop-carried chain. Loads run ahead in registers (explicitly: the pipeliner
    skips loads under 4 bytes a lane, and a bf16 channel is 2): u, delta, z STAGES-1 steps ahead
    (they stream from HBM), B and C one step ahead (shared by all programs of a sample, so cached).

    SPLIT: program_id(2) = s walks steps [s·seg_len, min((s+1)·seg_len, L)) only. Pass 1 (READOUT=False;
    launched with HAS_H0, HAS_D, HAS_Z, STORE_LAST, SAVE_CHK off, over segments 0..n_seg-2) starts from 0,
    reads no C and writes no y, and stores the segment's end state to hend [B, n_seg-1, D, N] and its
    Σ delta to dsum [B, n_seg-1, D] (fp32). Pass 2 (READOUT=True) first folds the segments before its own,
    in order, into the entering state: h = exp2(A·log2 e ⊙ Σdelta_s') ⊙ h + hend_s' (the segment's
    decays multiply into one exponential because A does not depend on time); the last segment stores
    the last state.
    """
    pid_d = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    d = pid_d * BD + tl.arange(0, BD)
    n = tl.arange(0, NP)
    d_ok = d < Dm
    n_ok = n < N
    # Triton derives layouts from the memory accesses. The layout wanted: lanes along channels, a channel's NP
    # states in its lane's registers (one channel a lane when BD = 32·num_warps), so the sum over N needs no
    # shuffles and the [BD] loads of u, delta, z need no conversion. A vectorisable access would break it
    # (a [BD] one gives a lane adjacent channels, an [NP, BD] one spreads a channel's states over lanes), and
    # so would a 2D access with no contiguity on either axis: which axis then leads is the compiler's tie-break,
    # and it changed between versions (triton 3.6 spread the states over 16 lanes: shuffles and shared-memory
    # round trips every step, twice the instructions; 3.9 kept them in the lane). So every [NP, BD] access
    # (A, the states in and out, the checkpoints) is a 1D access of the flattened tile, reshaped.
    dd = tl.max_contiguous(d, 1)
    n_f, d_f, nd_mask_f = _flat_tile(pid_d, Dm, N, BD, NP)
    nd_off = d_f * N + n_f  # hT's elements in [D, N] buffers, flat
    A2 = _tile_load(a2t_ptr + n_f * Dm + d_f, nd_mask_f, NP, BD)
    dskip = channel_vector(dskip_ptr, d, d_ok, HAS_D)
    bias = channel_vector(bias_ptr, d, d_ok, HAS_BIAS)
    state_off = pid_b * Dm * N + nd_off
    if HAS_H0:
        h = _tile_load(h0_ptr + state_off, nd_mask_f, NP, BD)
    else:
        h = tl.zeros([NP, BD], tl.float32)
    if SPLIT:
        pid_s = tl.program_id(2)
        t_begin = pid_s * seg_len
        t_end = tl.minimum(t_begin + seg_len, L)
        summary = pid_b * (n_seg - 1)  # this sample's first segment summary
        if READOUT:
            for s in range(0, pid_s):
                sdelta = tl.load(dsum_ptr + (summary + s) * Dm + dd, mask=d_ok, other=0.0)
                h_end = _tile_load(hend_ptr + (summary + s) * Dm * N + nd_off, nd_mask_f, NP, BD)
                h = tl.exp2(sdelta[None, :] * A2) * h + h_end
        else:
            dsum = tl.zeros([BD], tl.float32)
    else:
        t_begin = 0
        t_end = L
    u_row = u_ptr + pid_b * su_b + dd * su_d
    dl_row = dl_ptr + pid_b * sdl_b + dd * sdl_d
    z_row = z_ptr + pid_b * sz_b + dd * sz_d
    y_row = y_ptr + pid_b * sy_b + dd * sy_d
    b_row = b_ptr + pid_b * sb_b + n * sb_n
    c_row = c_ptr + pid_b * sc_b + n * sc_n
    # Prologue of the register pipeline: values for steps t_begin .. t_begin+STAGES-2 (names: 1 = next step).
    if STAGES >= 2:
        b1, c1 = _bc_loads(b_row, c_row, sb_t, sc_t, t_begin, L, n_ok, EVEN_N, READOUT)
        u1, r1, z1 = _row_loads(u_row, dl_row, z_row, su_t, sdl_t, sz_t, t_begin, L, d_ok, HAS_Z)
    if STAGES >= 3:
        u2, r2, z2 = _row_loads(u_row, dl_row, z_row, su_t, sdl_t, sz_t, t_begin + 1, L, d_ok, HAS_Z)
    if STAGES >= 4:
        u3, r3, z3 = _row_loads(u_row, dl_row, z_row, su_t, sdl_t, sz_t, t_begin + 2, L, d_ok, HAS_Z)
    for t in range(t_begin, t_end):
        if STAGES == 1:
            bt, ct = _bc_loads(b_row, c_row, sb_t, sc_t, t, L, n_ok, EVEN_N, READOUT)
            u, raw, zz = _row_loads(u_row, dl_row, z_row, su_t, sdl_t, sz_t, t, L, d_ok, HAS_Z)
        else:
            bt, ct, u, raw, zz = b1, c1, u1, r1, z1
            b1, c1 = _bc_loads(b_row, c_row, sb_t, sc_t, t + 1, L, n_ok, EVEN_N, READOUT)
            if STAGES == 2:
                u1, r1, z1 = _row_loads(u_row, dl_row, z_row, su_t, sdl_t, sz_t, t + 1, L, d_ok, HAS_Z)
            elif STAGES == 3:
                u1, r1, z1 = u2, r2, z2
                u2, r2, z2 = _row_loads(u_row, dl_row, z_row, su_t, sdl_t, sz_t, t + 2, L, d_ok, HAS_Z)
            else:
                u1, r1, z1 = u2, r2, z2
                u2, r2, z2 = u3, r3, z3
                u3, r3, z3 = _row_loads(u_row, dl_row, z_row, su_t, sdl_t, sz_t, t + 3, L, d_ok, HAS_Z)
        if SAVE_CHK:
            if t % T == 0:  # the state entering chunk t // T, where `_scan_bwd_kernel` expects it
                _tile_store(chk_ptr + (pid_b * n_chunks + t // T) * Dm * N + nd_off, h, nd_mask_f, NP, BD)
        delta, _ = delta_act(raw + bias, SOFTPLUS)
        h = tl.exp2(delta[None, :] * A2) * h + bt[:, None] * (delta * u)[None, :]
        if READOUT:
            y = tl.sum(h * ct[:, None], axis=0) + dskip * u
            if HAS_Z:
                y = y * zz * tl.sigmoid(zz)
            tl.store(y_row + t * sy_t, y.to(y_ptr.dtype.element_ty), mask=d_ok)
        else:
            dsum += delta
    if READOUT:
        if STORE_LAST:
            if SPLIT:
                if pid_s == n_seg - 1:  # only the last segment ends at step L-1
                    _tile_store(last_ptr + state_off, h, nd_mask_f, NP, BD)
            else:
                _tile_store(last_ptr + state_off, h, nd_mask_f, NP, BD)
    else:
        _tile_store(hend_ptr + (summary + pid_s) * Dm * N + nd_off, h, nd_mask_f, NP, BD)
        tl.store(dsum_ptr + (summary + pid_s) * Dm + dd, dsum, mask=d_ok)
