"""Causal depthwise conv1d of the Mamba mixer: the dispatching entry point `causal_conv1d`.

Shapes: x [B, L, D]; weight [D, K]; bias [D]; state [B, D, K-1]. The reference and `conv_state_from` are in
naive.py, the Triton forward in triton.py (imported only when it runs).
"""

from __future__ import annotations

import torch

from .naive import causal_conv1d_ref, conv_state_from

__all__ = ["causal_conv1d", "causal_conv1d_ref", "conv_state_from"]


def causal_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    activation: str | None = "silu",
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """Same contract as `causal_conv1d_ref`; `backend` is auto | triton | reference (see ops.backend).

    `triton` runs `causal_conv1d_triton` (conv1d/triton.py): one pass over x in its own [B, L, D] layout,
    returning a contiguous [B, L, D], where the reference copies x to [B, D, L] and the result back. The
    kernel is forward-only, so when autograd needs gradients (grad mode on and any input requiring grad) the
    reference runs instead, whatever the backend, and fine-tuning keeps working. The reference's result
    may be a strided view ([B, L, D] seen from [B, D, L] memory).
    """
    from .. import backend as _backend

    chosen = _backend.resolve("causal_conv1d", backend, x.device)
    if chosen == "triton" and not _backend.needs_grad(x, weight, bias, initial_state):
        from .triton import causal_conv1d_triton

        return causal_conv1d_triton(x, weight, bias, initial_state, activation)
    return causal_conv1d_ref(x, weight, bias, initial_state, activation)
