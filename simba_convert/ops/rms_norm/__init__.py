"""The pre-norm residual step of a Mamba block (residual add, then RMSNorm): the dispatching entry point
`add_rms_norm`; and Mamba-2's gated RMSNorm before out_proj, `gated_rms_norm` (y, z [..., D]). Shapes: hidden, residual [..., d]; weight [d]. The references are in naive.py, the Triton
forward in triton.py (imported only when it runs).
"""

from __future__ import annotations

import torch

from .naive import add_rms_norm_ref, gated_rms_norm_ref, rms_norm_ref

__all__ = ["add_rms_norm", "add_rms_norm_ref", "gated_rms_norm", "gated_rms_norm_ref", "rms_norm_ref"]


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
    whatever the backend. Rows wider than the kernel's one-block limit (rms_norm/triton.py's MAX_D) also run the
    reference. As with the reference, the returned residual may be `hidden` itself (no residual yet and no
    dtype change).
    """
    from .. import backend as _backend

    chosen = _backend.resolve("add_rms_norm", backend, hidden.device)
    if chosen == "triton" and not _backend.needs_grad(hidden, residual, weight):
        from .triton import MAX_D, add_rms_norm_triton

        if hidden.shape[-1] <= MAX_D:
            return add_rms_norm_triton(hidden, residual, weight, eps, residual_in_fp32)
    return add_rms_norm_ref(hidden, residual, weight, eps, residual_in_fp32)


def gated_rms_norm(
    y: torch.Tensor, z: torch.Tensor, weight: torch.Tensor, group_size: int, eps: float, norm_before_gate: bool,
    *, backend: str = "auto",
) -> torch.Tensor:
    """Same contract as `gated_rms_norm_ref`; `backend` is auto | triton | reference (see ops.backend).

    `triton` runs `gated_rms_norm_triton` (one pass reading y and z, writing the result, where the reference
    makes about ten passes over fp32 [..., D] tensors); forward-only, so the reference runs when autograd needs
    gradients, and for groups wider than the kernel's one-block limit (rms_norm/triton.py's MAX_D).
    """
    from .. import backend as _backend

    chosen = _backend.resolve("gated_rms_norm", backend, y.device)
    if chosen == "triton" and not _backend.needs_grad(y, z, weight):
        from .triton import MAX_D, gated_rms_norm_triton

        if group_size <= MAX_D:
            return gated_rms_norm_triton(y, z, weight, group_size, eps, norm_before_gate)
    return gated_rms_norm_ref(y, z, weight, group_size, eps, norm_before_gate)
