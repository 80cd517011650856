"""The pre-norm residual step of a Mamba block: residual add, then RMSNorm. Shapes: hidden, residual [..., d];
weight [d].

`add_rms_norm_ref` is the model's arithmetic (`MambaBlock.add_norm` with `RMSNorm.forward`) written out, so
that it is bit-for-bit what the model computes; `add_rms_norm` (rms_norm/__init__.py) dispatches to the Triton
kernel (rms_norm/triton.py) or to it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rms_norm_ref(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x / sqrt(mean(x², -1) + eps) · weight, computed in fp32 and returned in weight's dtype."""
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * weight.float()
    return y.to(weight.dtype)


def add_rms_norm_ref(
    hidden: torch.Tensor,
    residual: torch.Tensor | None,
    weight: torch.Tensor,
    eps: float,
    residual_in_fp32: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(normed, new_residual) with new_residual = hidden (no residual yet) or hidden.to(residual.dtype) + residual,
    normed = rms_norm_ref(new_residual) in weight's dtype, and new_residual returned in fp32 if residual_in_fp32."""
    residual = hidden if residual is None else hidden.to(residual.dtype) + residual
    normed = rms_norm_ref(residual, weight, eps)
    if residual_in_fp32:
        residual = residual.float()
    return normed, residual


def gated_rms_norm_ref(
    y: torch.Tensor, z: torch.Tensor, weight: torch.Tensor, group_size: int, eps: float, norm_before_gate: bool
) -> torch.Tensor:
    """mamba_ssm's RMSNormGated: RMSNorm over groups of `group_size` channels of y [..., D], gated by silu(z)
    (z [..., D]) before the norm (norm_before_gate=False: rmsnorm(y·silu(z))) or after it (rmsnorm(y)·silu(z));
    weight [D]. fp32 inside, y's dtype out."""
    yf, gate = y.float(), F.silu(z.float())
    if not norm_before_gate:
        yf = yf * gate
    groups = yf.unflatten(-1, (-1, group_size))
    out = (groups * torch.rsqrt(groups.pow(2).mean(-1, keepdim=True) + eps)).flatten(-2)
    out = out * weight.float()
    if norm_before_gate:
        out = out * gate
    return out.to(y.dtype)
