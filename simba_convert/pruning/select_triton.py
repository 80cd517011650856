"""One-launch Triton selection of the kept tokens (contract: `select.select_kept_dense_rows_ref`).

Shapes: scores [B, L] (fp32; any float dtype is read as fp32), slots [B, k] int64, ascending.

One program per row holds the whole row in registers (BLOCK = next_power_of_2(L) <= MAX_L) and:

1. maps each score to an int32 key whose signed order is the float order (bits of x >= 0 as they are,
   bits of x < 0 with the 31 low bits flipped); -0.0 is keyed as +0.0 (they compare equal as floats),
   NaN as -inf, the protected suffix (the last n_protected slots) above every float key (+inf included);
2. finds the k-th largest key bit by bit from the top (32 steps, each one count over the row in
   registers): thr = the largest t with #{key >= t} >= k;
3. keeps key > thr and the first k - #{key > thr} positions with key == thr (ties: lowest positions);
4. writes each kept position at its exclusive prefix count of kept positions: ascending, no sort.

Differences from the reference, which are all cases where topk's choice is unspecified or undesirable:
ties at the threshold keep the lowest positions (topk's tie rule is unspecified); NaN ranks as -inf (topk
ranks it above +inf); a real +inf never displaces a protected slot. `scores` is only read, not written.

Floor: read the row once, write k int64 (L=2048: 8 KB + <=16 KB; the time is latency: 32 dependent
block-wide reductions and the launch, not bytes). See ops/README.md, "Choosing the kept tokens".
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..errors import ShapeError
from ..ops import _alloc
from .select import check_dense_counts

MAX_L = 16384  # longest row held in one block (32 int32 keys a thread at 16 warps)


@triton.jit
def _select_kept_rows_kernel(s_ptr, out_ptr, L, n_prot, k, s_row, o_row, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    ok = cols < L
    x = tl.load(s_ptr + row * s_row + cols, mask=ok, other=0.0).to(tl.float32)
    bits = x.to(tl.int32, bitcast=True)
    key = tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    key = tl.where(x == 0.0, 0, key)  # -0.0 == +0.0: one key, so ties between them follow the position rule
    key = tl.where(x != x, -2139095041, key)  # NaN -> the key of -inf (0xFF800000 with low bits flipped)
    key = tl.where(cols >= L - n_prot, 2139095041, key)  # protected: one above +inf's key 0x7F800000
    # Padding lanes get the smallest int32: the threshold is always >= the key of -inf (k <= L real lanes
    # have keys >= it), so they are never counted as >= a candidate nor equal to the threshold.
    key = tl.where(ok, key, -2147483647 - 1)

    # Build thr in the unsigned image (u = key + 2^31) from the top bit: keep a bit when at least k keys
    # reach the candidate. int64 scalars, so 2^31 does not overflow; the compare is on int32.
    t = tl.full((), 0, tl.int64)
    bit = tl.full((), 2147483648, tl.int64)
    for _ in range(32):
        cand = t + bit
        cnt = tl.sum((key >= (cand - 2147483648).to(tl.int32)).to(tl.int32), axis=0)
        t = tl.where(cnt >= k, cand, t)
        bit = bit >> 1
    thr = (t - 2147483648).to(tl.int32)

    gt = (key > thr).to(tl.int32)
    eq = (key == thr).to(tl.int32)
    need = k - tl.sum(gt, axis=0)  # >= 1: #{key >= thr} >= k > #{key > thr}
    # One scan for both exclusive counts: rows are <= 16384 long, so a count fits in the low 16 bits.
    pack = gt + (eq << 16)
    before = tl.cumsum(pack, axis=0) - pack
    gt_before = before & 0xFFFF
    eq_before = before >> 16
    keep = (gt != 0) | ((eq != 0) & (eq_before < need))
    slot = gt_before + tl.minimum(eq_before, need)
    tl.store(out_ptr + row * o_row + slot, cols.to(tl.int64), mask=keep)


def num_warps_for(L: int) -> int:
    """16 keys a thread up to 16 warps (not swept; the kernel's H200 timings are in BENCHMARKS.md)."""
    return min(max(triton.next_power_of_2(max(L, 1)) // 512, 1), 16)


def select_kept_dense_rows_triton(
    scores: torch.Tensor, n_protected: int, k_next: int, out: torch.Tensor | None = None, *, num_warps: int | None = None
) -> torch.Tensor:
    """Slots [B, k_next] int64, ascending: the last n_protected slots and the best of the rest (one launch).

    Same kept set as `select_kept_dense_rows_ref` on scores without ties; see the module docstring for ties,
    NaN and +inf. Requires 0 <= n_protected <= k_next <= L <= MAX_L. `out` (contiguous int64 [B, k_next] on
    scores' device) receives the result when given; every element is written.
    """
    if scores.dim() != 2 or not scores.is_floating_point():
        raise ShapeError(f"select_kept_dense_rows: scores must be a float [B, L] tensor, got {scores.dtype} "
                         f"{tuple(scores.shape)}")
    bsz, L = scores.shape
    check_dense_counts(L, n_protected, k_next)
    if L > MAX_L:
        raise ShapeError(f"select_kept_dense_rows_triton: rows of {L} > {MAX_L} scores do not fit one block")
    if out is None:
        out = _alloc.empty(bsz, k_next, device=scores.device, dtype=torch.int64)
    elif out.shape != (bsz, k_next) or out.dtype != torch.int64 or out.device != scores.device or not out.is_contiguous():
        raise ShapeError(f"select_kept_dense_rows: out must be a contiguous int64 {(bsz, k_next)} on {scores.device}, "
                         f"got {out.dtype} {tuple(out.shape)}")
    if bsz == 0 or k_next == 0:
        return out
    if scores.stride(1) != 1:
        scores = scores.contiguous()
    block = triton.next_power_of_2(L)
    _select_kept_rows_kernel[(bsz,)](
        scores, out, L, n_protected, k_next, scores.stride(0), k_next, BLOCK=block,
        num_warps=num_warps or num_warps_for(L),
    )
    return out

