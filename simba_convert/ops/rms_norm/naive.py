"""The pre-norm residual step of a Mamba block: residual add, then RMSNorm. Shapes: hidden, residual [..., d];
weight [d].

`add_rms_norm_ref` is the model's arithmetic (`MambaBlock.add_norm` with `RMSNorm.forward`) written out, so
that it is bit-for-bit what the model computes; `add_rms_norm` dispatches to the Triton kernel
(rms_norm_triton.py) or to it.
"""

from __future__ import annotations

import torch


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
    from .. import backend as _backend

    chosen = _backend.resolve("add_rms_norm", backend, hidden.device)
    if chosen == "triton" and not _backend.needs_grad(hidden, residual, weight):
        from . import triton as rms_norm_triton

        if hidden.shape[-1] <= rms_norm_triton.MAX_D:
            return rms_norm_triton.add_rms_norm_triton(hidden, residual, weight, eps, residual_in_fp32)
    return add_rms_norm_ref(hidden, residual, weight, eps, residual_in_fp32)
