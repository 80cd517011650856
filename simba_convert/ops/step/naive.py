"""One decoding step of the Mamba mixer, the conv window update and the SSM state update: the references.

Shapes: x, u, dt, z, y [B, D]; conv_state [B, D, K-1] (the last K-1 inputs, oldest first); weight [D, K];
bias [D]; A [D, N] fp32 (= -exp(A_log)); Bm, Cm [B, N]; D skip, dt_bias [D] fp32; ssm_state [B, D, N] fp32.

The references copy `MambaMixer.step`'s arithmetic operation for operation (same casts, same order), so
they give bit-identical results; the Triton kernels (step/triton.py) compute the same in fp32 registers in
one launch each. Derivation and cost: ops/README.md, "Decoding step".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...errors import ShapeError


def _check_activation(activation: str | None) -> None:
    if activation not in ("silu", None):
        raise ShapeError(f"unknown activation {activation!r}")


def _into(buf: torch.Tensor | None, value: torch.Tensor) -> torch.Tensor:
    if buf is None:
        return value
    buf.copy_(value)
    return buf


def conv_step_ref(
    x: torch.Tensor,
    conv_state: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = "silu",
    *,
    out: torch.Tensor | None = None,
    state_out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """u = act(Σ_k weight[:, k]·window[:, :, k] + bias) in fp32, returned in x's dtype, with
    window = cat(conv_state in x's dtype, x) [B, D, K]; the new state is window[:, :, 1:] (x's dtype).

    conv_state is not modified; `out` [B, D] / `state_out` [B, D, K-1] receive the results when given.
    """
    _check_activation(activation)
    window = torch.cat([conv_state.to(x.dtype), x[:, :, None]], dim=2)  # [B, D, K]
    xc = (window.float() * weight.float()).sum(-1)
    if bias is not None:
        xc = xc + bias.float()
    if activation == "silu":
        xc = F.silu(xc)
    u = xc.to(x.dtype)
    return _into(out, u), _into(state_out, window[:, :, 1:].contiguous())


def ssm_step_ref(
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
) -> tuple[torch.Tensor, torch.Tensor]:
    """delta = softplus(dt + dt_bias); h = exp(delta·A)⊙state + (delta·u)·Bm; y = (Σ_n h·Cm + D·u)·silu(z).

    All in fp32; y [B, D] in u's dtype, h [B, D, N] fp32 (a new tensor: ssm_state is not modified).
    `out` / `state_out` receive the results when given.
    """
    delta = F.softplus(dt.float() + dt_bias.float())  # [B, D]
    dA = torch.exp(delta[:, :, None] * A.float())
    h = dA * ssm_state.float() + (delta * u.float())[:, :, None] * Bm.float()[:, None, :]
    y = (h * Cm.float()[:, None, :]).sum(-1) + D.float() * u.float()
    y = (y * F.silu(z.float())).to(u.dtype)
    return _into(out, y), _into(state_out, h)
