"""Causal depthwise conv1d of the Mamba mixer: the reference `causal_conv1d_ref` and the conv window after a
sequence (`conv_state_from`). Shapes: x [B, L, D]; weight [D, K]; bias [D]; state [B, D, K-1]."""

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


def conv_state_from(x: torch.Tensor, K: int, initial_state: torch.Tensor | None = None) -> torch.Tensor:
    """The conv window after the sequence x [B, L, D]: its last K-1 inputs as [B, D, K-1], zero-padded on the left."""
    xt = x.transpose(1, 2)
    if initial_state is not None:
        xt = torch.cat([initial_state.to(x.dtype), xt], dim=2)
    if xt.shape[2] < K - 1:
        xt = F.pad(xt, (K - 1 - xt.shape[2], 0))
    return xt[:, :, xt.shape[2] - (K - 1):].contiguous()
