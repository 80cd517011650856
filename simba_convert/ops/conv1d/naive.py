"""Causal depthwise conv1d of the Mamba mixer. Shapes: x [B, L, D]; weight [D, K]; bias [D]; state [B, D, K-1]."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...errors import ShapeError


def causal_conv1d_ref(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    activation: str | None = "silu",
) -> torch.Tensor:
    """out_t = act(bias + Σ_k weight[:, k] · x_{t-K+1+k}); positions before the start read `initial_state` (or 0)."""
    bsz, L, d = x.shape
    K = weight.shape[-1]
    xt = x.transpose(1, 2)  # [B, D, L]
    if initial_state is None:
        xt = F.pad(xt, (K - 1, 0))
    else:
        xt = torch.cat([initial_state.to(x.dtype), xt], dim=2)
    out = F.conv1d(xt, weight.view(d, 1, K).to(x.dtype), bias.to(x.dtype) if bias is not None else None, groups=d)
    out = out.transpose(1, 2)
    if activation == "silu":
        out = F.silu(out)
    elif activation is not None:
        raise ShapeError(f"unknown activation {activation!r}")
    return out


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

    `triton` runs `causal_conv1d_triton` (conv1d_triton.py): one pass over x in its own [B, L, D] layout,
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


def conv_state_from(x: torch.Tensor, K: int, initial_state: torch.Tensor | None = None) -> torch.Tensor:
    """The conv window after the sequence x [B, L, D]: its last K-1 inputs as [B, D, K-1], zero-padded on the left."""
    xt = x.transpose(1, 2)
    if initial_state is not None:
        xt = torch.cat([initial_state.to(x.dtype), xt], dim=2)
    if xt.shape[2] < K - 1:
        xt = F.pad(xt, (K - 1 - xt.shape[2], 0))
    return xt[:, :, xt.shape[2] - (K - 1):].contiguous()
