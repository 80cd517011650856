"""What Mamba-1's and Mamba-2's impact scores share (ops/score, ops/score_ssd; leaf: torch, errors, names only).

Shapes: mask [B, L] bool (True = real token); delta [B, L, D] (Mamba-2: [B, L, H]); delta_bias [D]; y [B, L, d]
(the layer output); scores [B, L] fp32.

The criterion check, masks (a masked token scores -inf), the last real position T, the reverse exclusive cumsum
R, and the three architecture-free baselines (`delta`, `output`, `random`): see ops/README.md, "Impact score".
"""

from __future__ import annotations

import torch

from ..errors import ConfigError, ShapeError
from ..names import CRITERIA
from ._common import step_size


def check_criterion(criterion: str) -> None:
    if criterion not in CRITERIA:
        raise ConfigError(f"unknown impact-score criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")


def check_mask(mask, bsz, L):
    if mask is not None and (mask.shape != (bsz, L) or mask.dtype != torch.bool):
        raise ShapeError(f"mask must be bool [B, L] = [{bsz}, {L}], got {mask.dtype} {tuple(mask.shape)}")


def check_delta_bias(delta_bias, d):
    if delta_bias is not None and tuple(delta_bias.shape) != (d,):
        raise ShapeError(f"delta_bias must be [D] = [{d}], got {tuple(delta_bias.shape)}")


def formed_delta(delta, delta_bias, delta_softplus: bool):
    """The score's step size: delta [..., D] with its bias [D] and softplus applied when asked (after checking
    delta_bias's shape); delta itself otherwise, None for None."""
    if delta is None:
        return None
    check_delta_bias(delta_bias, delta.shape[-1])
    if delta_bias is not None or delta_softplus:
        delta = step_size(delta, delta_bias, delta_softplus)
    return delta


def finish(scores: torch.Tensor, mask, out):
    """Masked tokens score -inf; the result goes into `out` when given."""
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    if out is None:
        return scores
    out.copy_(scores)
    return out


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


def delta_score_ref(delta: torch.Tensor, *, mask=None, out=None) -> torch.Tensor:
    """`delta`: ‖delta_t‖₂ over the D channels (DeciMamba). delta [B, L, D] -> [B, L] fp32 (masked: -inf)."""
    check_mask(mask, delta.shape[0], delta.shape[1])
    return finish(torch.linalg.vector_norm(delta.float(), dim=-1), mask, out)


def output_score_ref(y: torch.Tensor, *, mask=None, out=None) -> torch.Tensor:
    """`output`: Σ_channels max(y_t, 0) of the layer output y [B, L, d] -> [B, L] fp32 (masked: -inf)."""
    check_mask(mask, y.shape[0], y.shape[1])
    return finish(y.float().clamp_min(0).sum(dim=-1), mask, out)


def random_score_ref(bsz: int, L: int, device, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """`random`: uniform [0, 1) scores [B, L] fp32, drawn on the generator's device so a seed gives the same
    scores on any device (the global RNG when `generator` is None)."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(bsz, L, generator=generator, device=gen_device).to(device)


def baseline_score_ref(criterion: str, u, delta, *, mask=None, out=None,
                       generator: torch.Generator | None = None, y: torch.Tensor | None = None) -> torch.Tensor:
    """`output`, `random` or `delta` scores [B, L] fp32 (masked: -inf), for any architecture: delta is the formed
    step size [B, L, D] (`formed_delta`), read by `delta` only; `random` takes [B, L] from u (any [B, L, ...]) or y."""
    if criterion == "output":
        if y is None:
            raise ShapeError("criterion 'output' needs the layer output: pass y=[B, L, d]")
        return output_score_ref(y, mask=mask, out=out)
    if criterion == "random":
        ref = u if u is not None else y
        if ref is None:
            raise ShapeError("criterion 'random' needs u or y to know [B, L]")
        check_mask(mask, ref.shape[0], ref.shape[1])
        return finish(random_score_ref(ref.shape[0], ref.shape[1], ref.device, generator=generator), mask, out)
    return delta_score_ref(delta, mask=mask, out=out)
