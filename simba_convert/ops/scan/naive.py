"""The Mamba-1 selective scan (SIMBA.md §2): the readable fp32 reference and its pure helpers.

Shapes: u, delta, z: [B, L, D]; A: [D, N]; B, C: [B, L, N]; D (skip): [D]; state: [B, D, N].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._common import one_cpu_thread, step_size


def selective_scan_ref(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    initial_state: torch.Tensor | None = None,
    return_last_state: bool = False,
):
    """y_t = C_t · h_t + D ⊙ u_t, with h_t = exp(delta_t ⊗ A) ⊙ h_{t-1} + (delta_t ⊙ u_t) ⊗ B_t; gated by silu(z).

    Computes in fp32 one step at a time and returns y in u's dtype ([B, L, D]) and, if asked, the
    last state [B, D, N] in fp32.
    """
    dtype = u.dtype
    u, delta, A, B, C, h = scan_inputs_fp32(u, delta, A, B, C, delta_bias, delta_softplus, initial_state)
    bsz, L, d = u.shape
    ys = []
    with one_cpu_thread(u.device):
        for t in range(L):
            dA = torch.exp(delta[:, t, :, None] * A)  # [B, D, N]
            dBu = (delta[:, t] * u[:, t])[:, :, None] * B[:, t, None, :]
            h = dA * h + dBu
            ys.append((h * C[:, t, None, :]).sum(-1))
    y = torch.stack(ys, dim=1) if ys else u.new_zeros(bsz, 0, d)
    return scan_output(y, h, u, D, z, dtype, return_last_state)


def scan_inputs_fp32(u, delta, A, B, C, delta_bias, delta_softplus, initial_state):
    """The scan's inputs in fp32, delta with its bias and softplus applied, and the starting state [B, D, N]."""
    u, A, B, C = (t.float() for t in (u, A, B, C))
    delta = step_size(delta, delta_bias, delta_softplus)
    if initial_state is not None:
        h = initial_state.float().clone()
    else:
        h = u.new_zeros(u.shape[0], u.shape[2], A.shape[1])
    return u, delta, A, B, C, h


def scan_output(y, h, u, D, z, dtype, return_last_state):
    """Add the D skip, apply the silu(z) gate, cast to the input dtype; y [B, L, D] fp32."""
    if D is not None:
        y = y + u * D.float()
    if z is not None:
        y = y * F.silu(z.float())
    y = y.to(dtype)
    return (y, h) if return_last_state else y
