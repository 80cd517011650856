"""The pre-norm residual step of a Mamba block: residual add, then RMSNorm. Shapes: hidden, residual [..., d];
weight [d]. And Mamba-2's gated RMSNorm before out_proj: y, z [..., D]; weight [D].

`add_rms_norm_ref` is the model's arithmetic (`MambaBlock.add_norm` with `RMSNorm.forward`) written out, so
that it is bit-for-bit what the model computes; `add_rms_norm` dispatches to the Triton kernel
(rms_norm_triton.py) or to it. `gated_rms_norm_ref` / `gated_rms_norm` likewise.
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


def add_rms_norm(
    hidden: torch.Tensor,
    residual: torch.Tensor | None,
    weight: torch.Tensor,
    eps: float,
    residual_in_fp32: bool,
    *,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as `add_rms_norm_ref`; `backend` is auto | triton | reference (see ops.backend).

    `triton` runs `add_rms_norm_triton`: one pass that reads hidden (and residual) and writes normed and the new
    residual, where the reference makes several passes over [..., d] tensors. The kernel is forward-only, so
    when autograd needs gradients (grad mode on and any input requiring grad) the reference runs instead,
    whatever the backend. Rows wider than the kernel's one-block limit (rms_norm_triton.MAX_D) also run the
    reference. As with the reference, the returned residual may be `hidden` itself (no residual yet and no
    dtype change).
    """
    from . import backend as _backend

    chosen = _backend.resolve("add_rms_norm", backend, hidden.device)
    if chosen == "triton" and not _backend.needs_grad(hidden, residual, weight):
        from . import rms_norm_triton

        if hidden.shape[-1] <= rms_norm_triton.MAX_D:
            return rms_norm_triton.add_rms_norm_triton(hidden, residual, weight, eps, residual_in_fp32)
    return add_rms_norm_ref(hidden, residual, weight, eps, residual_in_fp32)


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


def gated_rms_norm(
    y: torch.Tensor, z: torch.Tensor, weight: torch.Tensor, group_size: int, eps: float, norm_before_gate: bool,
    *, backend: str = "auto",
) -> torch.Tensor:
    """Same contract as `gated_rms_norm_ref`; `backend` is auto | triton | reference (see ops.backend).

    `triton` runs `gated_rms_norm_triton` (one pass reading y and z, writing the result, where the reference
    makes about ten passes over fp32 [..., D] tensors); forward-only, so the reference runs when autograd needs
    gradients, and for groups wider than the kernel's one-block limit (rms_norm_triton.MAX_D).
    """
    from . import backend as _backend

    chosen = _backend.resolve("gated_rms_norm", backend, y.device)
    if chosen == "triton" and not _backend.needs_grad(y, z, weight):
        from . import rms_norm_triton

        if group_size <= rms_norm_triton.MAX_D:
            return rms_norm_triton.gated_rms_norm_triton(y, z, weight, group_size, eps, norm_before_gate)
    return gated_rms_norm_ref(y, z, weight, group_size, eps, norm_before_gate)
