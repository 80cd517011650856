"""Simba's token impact score (SIMBA.md §3): readable fp32 reference and the dispatching entry point.

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

from ...errors import ConfigError, ShapeError
from ...names import CRITERIA  # noqa: F401  (re-exported: the criteria this op implements)
from ..scan.naive import one_cpu_thread, step_size

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
    _check_mask(mask, bsz, L)


def _check_mask(mask, bsz, L):
    if mask is not None and (mask.shape != (bsz, L) or mask.dtype != torch.bool):
        raise ShapeError(f"mask must be bool [B, L] = [{bsz}, {L}], got {mask.dtype} {tuple(mask.shape)}")


def last_real_index(mask: torch.Tensor | None, bsz: int, L: int, device) -> torch.Tensor:
    """T per sample [B] (int64): the last position whose mask is True (L-1 without a mask, 0 if none is)."""
    if mask is None:
        return torch.full((bsz,), L - 1, dtype=torch.long, device=device)
    pos = torch.arange(L, device=device).expand(bsz, L)
    return torch.where(mask, pos, 0).amax(dim=1) if L else torch.zeros(bsz, dtype=torch.long, device=device)


def reverse_exclusive_cumsum(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """R_t = Σ_{k>t} x_k along `dim`, summed from the end so the terms nearest t are added first.

    Taken as the inclusive reverse cumsum shifted by one (not inclusive minus x_t) so no cancellation occurs.
    """
    incl = x.flip(dim).cumsum(dim).flip(dim)
    shifted = incl.narrow(dim, 1, x.shape[dim] - 1) if x.shape[dim] > 0 else incl
    pad_shape = list(x.shape)
    pad_shape[dim] = min(1, x.shape[dim])
    return torch.cat([shifted, x.new_zeros(pad_shape)], dim=dim)


def _check_delta_bias(delta_bias, d):
    if delta_bias is not None and tuple(delta_bias.shape) != (d,):
        raise ShapeError(f"delta_bias must be [D] = [{d}], got {tuple(delta_bias.shape)}")


def _finish(scores: torch.Tensor, mask, out):
    """Masked tokens score -inf; the result goes into `out` when given."""
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    if out is None:
        return scores
    out.copy_(scores)
    return out


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


def delta_score_ref(delta: torch.Tensor, *, mask=None, out=None) -> torch.Tensor:
    """`delta`: ‖delta_t‖₂ over the D channels (DeciMamba). delta [B, L, D] -> [B, L] fp32 (masked: -inf)."""
    _check_mask(mask, delta.shape[0], delta.shape[1])
    return _finish(torch.linalg.vector_norm(delta.float(), dim=-1), mask, out)


def output_score_ref(y: torch.Tensor, *, mask=None, out=None) -> torch.Tensor:
    """`output`: Σ_channels max(y_t, 0) of the layer output y [B, L, d] -> [B, L] fp32 (masked: -inf)."""
    _check_mask(mask, y.shape[0], y.shape[1])
    return _finish(y.float().clamp_min(0).sum(dim=-1), mask, out)


def random_score_ref(bsz: int, L: int, device, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """`random`: uniform [0, 1) scores [B, L] fp32, drawn on the generator's device so a seed gives the same
    scores on any device (the global RNG when `generator` is None)."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(bsz, L, generator=generator, device=gen_device).to(device)


def impact_score_ref(
    u, delta, A, B, C, *, criterion: str = "last", signed: bool = False, mask=None, out=None,
    generator: torch.Generator | None = None, y: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None, delta_softplus: bool = False,
) -> torch.Tensor:
    """Token scores [B, L] fp32 of one layer by `criterion` (see the module docstring); masked tokens get -inf.

    Computes in fp32 whatever the input dtypes (fp32/bf16/fp16); `out` [B, L] fp32 receives the result if given.
    """
    if delta is not None:
        _check_delta_bias(delta_bias, delta.shape[-1])
        if delta_bias is not None or delta_softplus:
            delta = step_size(delta, delta_bias, delta_softplus)
    if criterion not in CRITERIA:
        raise ConfigError(f"unknown impact-score criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")
    if criterion == "output":
        if y is None:
            raise ShapeError("criterion 'output' needs the layer output: pass y=[B, L, d]")
        return output_score_ref(y, mask=mask, out=out)
    if criterion == "random":
        ref = u if u is not None else y
        if ref is None:
            raise ShapeError("criterion 'random' needs u or y to know [B, L]")
        _check_mask(mask, ref.shape[0], ref.shape[1])
        return _finish(random_score_ref(ref.shape[0], ref.shape[1], ref.device, generator=generator), mask, out)
    if criterion == "delta":
        return delta_score_ref(delta, mask=mask, out=out)
    _check_ssm_inputs(u, delta, A, B, C, mask)
    fn = last_score_ref if criterion == "last" else global_score_ref
    return _finish(fn(u, delta, A, B, C, signed=signed, mask=mask), mask, out)


def impact_score(
    u, delta, A, B, C, *, criterion: str = "last", signed: bool = False, mask=None, out=None,
    generator: torch.Generator | None = None, y: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None, delta_softplus: bool = False, backend: str = "auto",
) -> torch.Tensor:
    """Same contract as `impact_score_ref`; `backend` is auto | triton | reference (see ops.backend).

    Only `last` and `global` have kernels; `delta`, `output` and `random` are single PyTorch ops on any device.
    """
    kw = dict(criterion=criterion, signed=signed, mask=mask, out=out, generator=generator, y=y,
              delta_bias=delta_bias, delta_softplus=delta_softplus)
    if criterion not in ("last", "global"):
        return impact_score_ref(u, delta, A, B, C, **kw)
    from .. import backend as _backend

    _check_ssm_inputs(u, delta, A, B, C, mask)
    _check_delta_bias(delta_bias, u.shape[-1])
    if _backend.resolve("impact_score", backend, u.device) == "triton":
        from .triton import impact_score_triton

        return impact_score_triton(u, delta, A, B, C, criterion=criterion, signed=signed, mask=mask, out=out,
                                   delta_bias=delta_bias, delta_softplus=delta_softplus)
    return impact_score_ref(u, delta, A, B, C, **kw)
