"""Simba's token impact score for Mamba-2 (SSD) layers: the readable fp32 reference `impact_score_ssd_ref`.

Shapes: x [B, L, H, P] (the scan's input, after the conv); dt [B, L, H]; A [H] (< 0, one scalar per head);
B, C [B, L, G, N] (G groups, H a multiple of G: head h reads group h // (H // G), as mamba_ssm's Mamba2);
mask [B, L] bool (True = real token); dt_bias [H]; y [B, L, d] (the layer output, for `output` only);
scores [B, L] fp32.

The step size is delta = dt (+ dt_bias) (softplus'd with dt_softplus=True), formed in fp32 as the scan does.
The SSD recurrence per head h, group g = g(h):
    h_t[h] = exp(delta_t[h]·A[h])·h_{t-1}[h] + delta_t[h]·x_t[h, :] ⊗ B_t[g]      [P, N]
    y_t[h] = h_t[h] · C_t[g]  (+ D[h]·x_t[h], which is no cross-token term)      [P]

Criteria (ops/README.md "Impact score, Mamba-2" has the derivation; both mean what they mean for Mamba-1,
which is the case H = D, P = 1, G = 1 with A[d, n] = A[d]):
  last    s(t) = max_{h,p} |Δy_T(t)[h,p]|, the contribution of token t to the output at the last position T:
          Δy_T(t)[h,p] = (C_T[g]·B_t[g])·exp(A[h]·R_t[h])·delta_t[h]·x_t[h,p],
          R_t[h] = Σ_{k=t+1..T} delta_k[h] (reverse exclusive cumsum: every exponent is ≤ 0).
  global  s(t) = max_{h,p} |delta_t[h]·x_t[h,p]·(B_t[g]·G_t[h])|, the contribution to all outputs y_t..y_T,
          with the reverse scan G_t[h] = C_t[g] + exp(delta_{t+1}[h]·A[h])·G_{t+1}[h], G_T = C_T (G: [B, H, N]).
  delta, output, random: the architecture-free baselines of ops/_score_common.py (delta: ‖delta_t‖₂ over heads).
`signed=True` drops the |·| of `last` and `global`.

The factor of x in Δy is one scalar per (t, h), so a score costs O(G·N + H·P) per token (`global`: O(H·N + H·P)),
one exponential per (t, h) and no per-state exponential.

Masks as for Mamba-1: a masked-out token is absent (its delta and C count as 0: no decay, no readout), its
score is -inf, and T is each sample's last real position; a sample with no real token scores -inf everywhere.
"""

from __future__ import annotations

import torch

from ...errors import ShapeError
from .._common import one_cpu_thread, step_size
from .._score_common import (
    baseline_score_ref, check_criterion, check_mask, finish, formed_delta, last_real_index, reverse_exclusive_cumsum,
)


def _shape(t) -> str:
    return "None" if t is None else str(list(t.shape))


def check_ssd_inputs(x, dt, A, B, C, mask=None, dt_bias=None, out=None) -> None:
    """One-line ShapeError naming the first parameter whose shape, dtype or device does not fit x."""
    for name, t in (("x", x), ("dt", dt), ("A", A), ("B", B), ("C", C)):
        if t is None:
            raise ShapeError(f"criteria 'last' and 'global' need x, dt, A, B and C; {name} is None")
    if x.dim() != 4:
        raise ShapeError(f"x must be [B, L, H, P], got {_shape(x)}")
    bsz, L, H, _ = x.shape
    if tuple(dt.shape) != (bsz, L, H):
        raise ShapeError(f"dt must be [B, L, H] = [{bsz}, {L}, {H}] (from x), got {_shape(dt)}")
    if tuple(A.shape) != (H,):
        raise ShapeError(f"A must be [H] = [{H}] (one scalar per head), got {_shape(A)}")
    if B.dim() != 4 or tuple(B.shape[:2]) != (bsz, L):
        raise ShapeError(f"B must be [B, L, G, N] with B, L = {bsz}, {L} (from x), got {_shape(B)}")
    if C.shape != B.shape:
        raise ShapeError(f"C must be [B, L, G, N] = {_shape(B)} (from B), got {_shape(C)}")
    G = B.shape[2]
    if G == 0 or H % G:
        raise ShapeError(f"B has G = {G} groups, which must divide the H = {H} heads of x")
    if dt_bias is not None and tuple(dt_bias.shape) != (H,):
        raise ShapeError(f"dt_bias must be [H] = [{H}], got {_shape(dt_bias)}")
    check_mask(mask, bsz, L)
    if out is not None and (tuple(out.shape) != (bsz, L) or out.dtype != torch.float32):
        raise ShapeError(f"out must be float32 [B, L] = [{bsz}, {L}], got {out.dtype} {_shape(out)}")
    for name, t in (("dt", dt), ("A", A), ("B", B), ("C", C), ("mask", mask), ("dt_bias", dt_bias), ("out", out)):
        if t is not None and t.device != x.device:
            raise ShapeError(f"{name} is on {t.device}, x on {x.device}: all tensors must be on one device")


def _ssd_fp32(x, dt, A, B, C, mask, dt_bias, dt_softplus):
    """fp32 copies with heads split as [G, H/G] (head h = g·(H/G) + j reads group g); a masked token's delta
    and C are 0 (absent). Returns x [B, L, G, J, P], delta [B, L, G, J], A [G, J], B, C [B, L, G, N]."""
    bsz, L, H, P = x.shape
    G = B.shape[2]
    delta = step_size(dt, dt_bias, dt_softplus)
    x, A, B, C = (t.float() for t in (x, A, B, C))
    if mask is not None:  # where, not a product: padding may hold NaN
        delta = torch.where(mask[:, :, None], delta, 0.0)
        C = torch.where(mask[:, :, None, None], C, 0.0)
    return x.view(bsz, L, G, H // G, P), delta.view(bsz, L, G, H // G), A.view(G, H // G), B, C


def _reduce(coef: torch.Tensor, x: torch.Tensor, signed: bool) -> torch.Tensor:
    """Δy[b, t, g, j, p] = coef[b, t, g, j]·x[b, t, g, j, p] -> [B, L] max over (heads, p), of |·| unless signed."""
    dy = coef[..., None] * x
    return (dy if signed else dy.abs()).flatten(2).amax(dim=-1)


def last_score_ssd_ref(x, delta, A, B, C, *, signed=False, mask=None) -> torch.Tensor:
    """`last` on the prepared fp32 tensors of `_ssd_fp32`: max_{h,p} |Δy_T(t)[h,p]|. Returns [B, L] fp32."""
    bsz, L = x.shape[:2]
    T = last_real_index(mask, bsz, L, x.device)
    CT = C[torch.arange(bsz, device=x.device), T]  # [B, G, N]: the readout at each sample's last real token
    w = torch.einsum("blgn,bgn->blg", B, CT)  # C_T[g]·B_t[g], shared by the heads of a group
    R = reverse_exclusive_cumsum(delta)  # [B, L, G, J]; masked deltas are 0, so the sum stops at T
    return _reduce(w[..., None] * torch.exp(A * R) * delta, x, signed)


def global_score_ssd_ref(x, delta, A, B, C, *, signed=False) -> torch.Tensor:
    """`global` on the prepared fp32 tensors of `_ssd_fp32`, by the reverse scan over G [B, G, J, N]."""
    bsz, L, ng, nj, _ = x.shape
    delta_next = torch.cat([delta[:, 1:], delta.new_zeros(bsz, min(1, L), ng, nj)], dim=1)  # 0 past the end
    decay = torch.exp(delta_next * A)  # [B, L, G, J], exponents ≤ 0
    reach = delta.new_empty(bsz, L, ng, nj)  # B_t[g]·G_t[h]
    state = delta.new_zeros(bsz, ng, nj, B.shape[-1])
    with one_cpu_thread(x.device):  # small per-step ops: threads cost more than they save
        for t in reversed(range(L)):
            state = torch.addcmul(C[:, t, :, None, :], decay[:, t, :, :, None], state)
            reach[:, t] = (state * B[:, t, :, None, :]).sum(-1)
    return _reduce(reach * delta, x, signed)


def impact_score_ssd_ref(
    x, dt, A, B, C, *, criterion: str = "last", signed: bool = False, mask=None, dt_bias=None,
    dt_softplus: bool = False, out=None, y: torch.Tensor | None = None, generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Token scores [B, L] fp32 of one Mamba-2 layer by `criterion` (module docstring); masked tokens get -inf.

    Computes in fp32 whatever the input dtypes. `out` [B, L] fp32 receives the result if given. `y` (the layer
    output) is read by `output` only and `generator` by `random` only; those two accept None for x, dt, A, B, C
    (`random` needs x or y for [B, L]), `delta` needs only dt.
    """
    check_criterion(criterion)
    if criterion not in ("last", "global"):
        # The baselines do not depend on the architecture (ops/_score_common.py), with delta [B, L, H].
        return baseline_score_ref(criterion, x, formed_delta(dt, dt_bias, dt_softplus), mask=mask, out=out,
                                  generator=generator, y=y)
    check_ssd_inputs(x, dt, A, B, C, mask, dt_bias, out)
    bsz, L = x.shape[:2]
    if bsz == 0 or L == 0:
        return finish(x.new_zeros(bsz, L, dtype=torch.float32), mask, out)
    xs, delta, A, B, C = _ssd_fp32(x, dt, A, B, C, mask, dt_bias, dt_softplus)
    if criterion == "last":
        scores = last_score_ssd_ref(xs, delta, A, B, C, signed=signed, mask=mask)
    else:
        scores = global_score_ssd_ref(xs, delta, A, B, C, signed=signed)
    return finish(scores, mask, out)
