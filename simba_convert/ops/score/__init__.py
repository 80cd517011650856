"""Simba's token impact score (SIMBA.md §3): the dispatching entry point `impact_score`.

Shapes: u, delta [B, L, D]; A [D, N]; B, C [B, L, N]; mask [B, L] bool (True = real token); y [B, L, d];
delta_bias [D]; scores [B, L] fp32. The criteria, masks and the reference are in naive.py, the kernels of
`last` and `global` in triton.py (imported only when they run).
"""

from __future__ import annotations

import torch

from .._score_common import check_delta_bias
from .naive import _check_ssm_inputs, impact_score_ref

__all__ = ["impact_score", "impact_score_ref"]


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
    check_delta_bias(delta_bias, u.shape[-1])
    if _backend.resolve("impact_score", backend, u.device) == "triton":
        from .triton import impact_score_triton

        return impact_score_triton(u, delta, A, B, C, criterion=criterion, signed=signed, mask=mask, out=out,
                                   delta_bias=delta_bias, delta_softplus=delta_softplus)
    return impact_score_ref(u, delta, A, B, C, **kw)
