"""Simba's token impact score for Mamba-2 (SSD) layers: the dispatching entry point `impact_score_ssd`.

Shapes: x [B, L, H, P]; dt [B, L, H]; A [H]; B, C [B, L, G, N]; mask [B, L] bool (True = real token); dt_bias [H];
y [B, L, d]; scores [B, L] fp32. The criteria, masks and the reference are in naive.py, the kernels of `last`
and `global` in triton.py (imported only when they run).
"""

from __future__ import annotations

import torch

from ...errors import BackendError
from .._score_common import check_criterion
from ..backend import BACKENDS
from .naive import check_ssd_inputs, impact_score_ssd_ref

__all__ = ["impact_score_ssd", "impact_score_ssd_ref"]


def impact_score_ssd(
    x, dt, A, B, C, *, criterion: str = "last", signed: bool = False, mask=None, dt_bias=None,
    dt_softplus: bool = False, out=None, y: torch.Tensor | None = None, generator: torch.Generator | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Same contract as `impact_score_ssd_ref`; `backend` is auto | triton | reference (see ops.backend).

    Only `last` and `global` have kernels; `delta`, `output` and `random` are single PyTorch ops on any device.
    The kernels read dt raw (often bf16) and form softplus(dt + dt_bias) in registers. Like Mamba-1's score,
    the result carries no gradient on the Triton path: it only chooses tokens.
    """
    kw = dict(criterion=criterion, signed=signed, mask=mask, dt_bias=dt_bias, dt_softplus=dt_softplus, out=out,
              y=y, generator=generator)
    check_criterion(criterion)
    if criterion not in ("last", "global"):
        if backend not in BACKENDS:
            raise BackendError(f"unknown backend {backend!r} for impact_score_ssd; choose one of {', '.join(BACKENDS)}")
        return impact_score_ssd_ref(x, dt, A, B, C, **kw)
    from .. import backend as _backend

    check_ssd_inputs(x, dt, A, B, C, mask, dt_bias, out)
    if _backend.resolve("impact_score_ssd", backend, x.device) == "triton":
        from .triton import impact_score_ssd_triton

        return impact_score_ssd_triton(x, dt, A, B, C, criterion=criterion, signed=signed, mask=mask, out=out,
                                       dt_bias=dt_bias, dt_softplus=dt_softplus)
    return impact_score_ssd_ref(x, dt, A, B, C, **kw)
