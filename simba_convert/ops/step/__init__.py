"""One decoding step of the Mamba mixer, the conv window update and the SSM state update, fused: the dispatching
entry points `conv_step` and `ssm_step`.

Shapes: x, u, dt, z, y [B, D]; conv_state [B, D, K-1]; weight [D, K]; bias [D]; A [D, N] fp32; Bm, Cm [B, N];
D skip, dt_bias [D] fp32; ssm_state [B, D, N] fp32. The references are in naive.py, the Triton kernels in
triton.py (imported only when they run).
"""

from __future__ import annotations

import torch

from .naive import conv_step_ref, ssm_step_ref

__all__ = ["conv_step", "conv_step_ref", "ssm_step", "ssm_step_ref"]


def conv_step(
    x: torch.Tensor,
    conv_state: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = "silu",
    *,
    out: torch.Tensor | None = None,
    state_out: torch.Tensor | None = None,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as `conv_step_ref`; `backend` is auto | triton | reference (see ops.backend).

    `triton` runs `conv_step_triton` (one launch; x may be any [B, D] view, e.g. the first half of in_proj's
    output). The kernel is forward-only: when autograd needs gradients the reference runs, whatever the backend.
    """
    from .. import backend as _backend

    chosen = _backend.resolve("conv_step", backend, x.device)
    if chosen == "triton" and not _backend.needs_grad(x, conv_state, weight, bias):
        from .triton import conv_step_triton

        return conv_step_triton(x, conv_state, weight, bias, activation, out=out, state_out=state_out)
    return conv_step_ref(x, conv_state, weight, bias, activation, out=out, state_out=state_out)


def ssm_step(
    u: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    Bm: torch.Tensor,
    Cm: torch.Tensor,
    D: torch.Tensor,
    z: torch.Tensor,
    dt_bias: torch.Tensor,
    ssm_state: torch.Tensor,
    *,
    out: torch.Tensor | None = None,
    state_out: torch.Tensor | None = None,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as `ssm_step_ref`; `backend` is auto | triton | reference (see ops.backend).

    `triton` runs `ssm_step_triton` (one launch; u, dt, z, Bm, Cm may be strided views). Forward-only: when
    autograd needs gradients the reference runs, whatever the backend.
    """
    from .. import backend as _backend

    chosen = _backend.resolve("ssm_step", backend, u.device)
    if chosen == "triton" and not _backend.needs_grad(u, dt, A, Bm, Cm, D, z, dt_bias, ssm_state):
        from .triton import ssm_step_triton

        return ssm_step_triton(u, dt, A, Bm, Cm, D, z, dt_bias, ssm_state, out=out, state_out=state_out)
    return ssm_step_ref(u, dt, A, Bm, Cm, D, z, dt_bias, ssm_state, out=out, state_out=state_out)
