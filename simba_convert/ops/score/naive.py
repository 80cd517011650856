"""Simba's token impact score (SIMBA.md §3): the readable fp32 reference `impact_score_ref`.

Shapes: u, delta [B, L, D]; A [D, N]; B, C [B, L, N]; mask [B, L] bool (True = real token); y [B, L, d]
(the layer output, for `output` only); delta_bias [D]; scores [B, L] fp32.

delta is the step size the scan uses, > 0. Like `selective_scan`, the score can take it raw and form
softplus(delta + delta_bias) itself (delta_softplus=True, delta_bias optional), in fp32: the pruned model
passes dt_proj's output that way, so the kernels read [B, L, D] once and no delta tensor is materialised.

Criteria (higher score = more important token; see ops/README.md "Impact score" for the derivation):
  last    s(t) = max_d |Δy_T(t)[d]|, the contribution of token t to the layer's output at the last
          position T:  Δy_T(t)[d] = u_t[d]·delta_t[d]·Σ_n C_T[n]·B_t[n]·exp(A[d,n]·R_t[d]),
          R_t[d] = Σ_{k=t+1..T} delta_k[d] (reverse exclusive cumsum, so every exponent is ≤ 0).
  global  s(t) = max_d |u_t[d]·delta_t[d]·Σ_n B_t[n]·G_t[d,n]|, the contribution to all outputs
          y_t..y_T, with the reverse scan G_t = C_t + exp(delta_{t+1} ⊗ A) ⊙ G_{t+1}, G_T = C_T.
  delta   ‖delta_t‖₂ over channels (DeciMamba).
  output  Σ_channels max(y_t, 0) of the layer output y (token reduction for SSMs); needs `y=`.
  random  uniform [0, 1) from `generator` (reproducible from its seed).
`signed=True` drops the |·| of `last` and `global` (the paper's literal max, kept for the ablation).

Masks: a masked-out token is treated as absent. Its score is -inf, it adds no decay (its delta
counts as 0) and no readout (its C counts as 0) to the other tokens, so every real token's score
equals its score on the sequence with the masked tokens removed. For `last`, T is each sample's last
REAL position; with right padding that is the end of the real text. A sample with no real token
scores -inf everywhere.

How the pruned model calls it, per layer (MixerInternals from MambaMixer(..., return_internals=True)):
    s = impact_score(it.u, it.dt, it.A, it.Bm, it.Cm, criterion=c, mask=alive, y=mixer_out,
                     delta_bias=it.delta_bias, delta_softplus=True)
where `mixer_out` [B, L, d] is the mixer output before the residual add; only `output` reads it and
only `output` and `random` accept None for u, delta, A, B, C.
"""

from __future__ import annotations

import torch

from ...errors import ShapeError
from .._common import one_cpu_thread
from .._score_common import (
    baseline_score_ref, check_criterion, check_mask, finish, formed_delta, last_real_index, reverse_exclusive_cumsum,
)

# The reference never materialises more than this many fp32 [B, l, D, N] elements at once (512 MiB);
# the chunk length l over the sequence is at most 256.
_CHUNK_ELEMS = 1 << 27
_MAX_CHUNK = 256


def _chunk_len(bsz: int, d: int, n: int) -> int:
    return max(1, min(_MAX_CHUNK, _CHUNK_ELEMS // max(1, bsz * d * n)))


def _check_ssm_inputs(u, delta, A, B, C, mask):
    if any(t is None for t in (u, delta, A, B, C)):
        raise ShapeError("criteria 'last' and 'global' need u, delta, A, B and C")
    bsz, L, d = u.shape
    n = A.shape[1]
    if delta.shape != u.shape or A.shape != (d, n) or B.shape != (bsz, L, n) or C.shape != (bsz, L, n):
        raise ShapeError(
            f"impact score shapes: u {tuple(u.shape)}, delta {tuple(delta.shape)}, A {tuple(A.shape)}, "
            f"B {tuple(B.shape)}, C {tuple(C.shape)}; expected [B, L, D], [B, L, D], [D, N], [B, L, N], [B, L, N]"
        )
    check_mask(mask, bsz, L)


def _reduce_channels(dy: torch.Tensor, signed: bool) -> torch.Tensor:
    """[B, l, D] per-channel contributions -> [B, l] score (max over channels, of |·| unless signed)."""
    return (dy if signed else dy.abs()).amax(dim=-1)


def _masked_fp32(u, delta, A, B, C, mask):
    """fp32 copies with a masked token's delta and C set to 0 (no decay, no readout: it is absent). `where`, not a
    product with the mask: whatever a padded slot holds (NaN included) must not reach a real token's score."""
    u, delta, A, B, C = (t.float() for t in (u, delta, A, B, C))
    if mask is not None:
        m = mask[:, :, None]
        delta, C = torch.where(m, delta, 0.0), torch.where(m, C, 0.0)
        u, B = torch.where(m, u, 0.0), torch.where(m, B, 0.0)
    return u, delta, A, B, C


def last_score_ref(u, delta, A, B, C, *, signed=False, mask=None) -> torch.Tensor:
    """`last`: max_d |Δy_T(t)[d]|, computed in fp32 chunk by chunk over the sequence. Returns [B, L] fp32."""
    bsz, L, d = u.shape
    u, delta, A, B, C = _masked_fp32(u, delta, A, B, C, mask)
    T = last_real_index(mask, bsz, L, u.device)
    CT = C[torch.arange(bsz, device=u.device), T]  # [B, N]: the readout at each sample's last real token
    R = reverse_exclusive_cumsum(delta)  # [B, L, D]; masked deltas are 0, so this stops at T
    scores = u.new_empty(bsz, L)
    step = _chunk_len(bsz, d, A.shape[1])
    for s in range(0, L, step):
        e = slice(s, min(L, s + step))
        decay = torch.exp(A * R[:, e, :, None])  # [B, l, D, N], exponents ≤ 0
        reach = torch.einsum("bldn,bln->bld", decay, B[:, e] * CT[:, None, :])
        scores[:, e] = _reduce_channels(u[:, e] * delta[:, e] * reach, signed)
    return scores


def global_score_ref(u, delta, A, B, C, *, signed=False, mask=None) -> torch.Tensor:
    """`global`: the reverse scan G_t = C_t + exp(delta_{t+1} ⊗ A) ⊙ G_{t+1}, in fp32. Returns [B, L] fp32.

    The decays of a chunk are computed at once; only the cheap update G = C_t + w ⊙ G is a Python step.
    """
    bsz, L, d = u.shape
    n = A.shape[1]
    u, delta, A, B, C = _masked_fp32(u, delta, A, B, C, mask)
    delta_next = torch.cat([delta[:, 1:], delta.new_zeros(bsz, min(1, L), d)], dim=1)  # delta_{t+1}, 0 past the end
    scores = u.new_empty(bsz, L)
    G = u.new_zeros(bsz, d, n)
    step = _chunk_len(bsz, d, n)
    for s in reversed(range(0, L, step)):
        e = min(L, s + step)
        decay = torch.exp(delta_next[:, s:e, :, None] * A)  # [B, l, D, N], exponents ≤ 0
        Gs = torch.empty_like(decay)
        with one_cpu_thread(u.device):  # small per-step ops: threads cost more than they save
            for i in reversed(range(e - s)):
                G = torch.addcmul(C[:, s + i, None, :], decay[:, i], G)
                Gs[:, i] = G
        reach = torch.einsum("bldn,bln->bld", Gs, B[:, s:e])
        scores[:, s:e] = _reduce_channels(u[:, s:e] * delta[:, s:e] * reach, signed)
    return scores


def impact_score_ref(
    u, delta, A, B, C, *, criterion: str = "last", signed: bool = False, mask=None, out=None,
    generator: torch.Generator | None = None, y: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None, delta_softplus: bool = False,
) -> torch.Tensor:
    """Token scores [B, L] fp32 of one layer by `criterion` (see the module docstring); masked tokens get -inf.

    Computes in fp32 whatever the input dtypes (fp32/bf16/fp16); `out` [B, L] fp32 receives the result if given.
    """
    delta = formed_delta(delta, delta_bias, delta_softplus)
    check_criterion(criterion)
    if criterion not in ("last", "global"):
        return baseline_score_ref(criterion, u, delta, mask=mask, out=out, generator=generator, y=y)
    _check_ssm_inputs(u, delta, A, B, C, mask)
    fn = last_score_ref if criterion == "last" else global_score_ref
    return finish(fn(u, delta, A, B, C, signed=signed, mask=mask), mask, out)
