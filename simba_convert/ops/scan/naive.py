"""The Mamba-1 selective scan (SIMBA.md §2): readable fp32 reference and the dispatching entry point.

Shapes: u, delta, z: [B, L, D]; A: [D, N]; B, C: [B, L, N]; D (skip): [D]; state: [B, D, N].
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

CHUNKED_MIN_LEN = 64  # the `reference` backend runs the chunked scan from this length on


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


@contextlib.contextmanager
def one_cpu_thread(device: torch.device):
    """Run a loop of small CPU ops on one thread.

    Each step's tensors are a few hundred kB: splitting them over threads costs more in synchronisation
    than it saves, and on a busy machine far more (measured 0.38 s on one thread against 12.6 s on two
    for B=8, L=512, D=512, N=16 with other jobs running). The setting is process-wide, so it is restored.
    """
    if device.type != "cpu" or torch.get_num_threads() == 1:
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def step_size(delta, delta_bias=None, delta_softplus: bool = False) -> torch.Tensor:
    """delta [B, L, D] in fp32 with its bias and softplus applied, as the scan (and the impact score) use it."""
    delta = delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()
    return F.softplus(delta) if delta_softplus else delta


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


def selective_scan(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
    initial_state=None, return_last_state=False, *, backend: str = "auto",
):
    """Same contract as `selective_scan_ref`; `backend` is auto | triton | reference (see ops.backend).

    `reference` runs `selective_scan_ref`, except when autograd will differentiate a long sequence
    (L >= CHUNKED_MIN_LEN): then the equivalent chunked PyTorch scan (`selective_scan_chunked`), whose
    graph has L/T nodes instead of L. Without gradients the loop is the faster of the two on the CPU
    (ops/README.md, "Selective scan").
    """
    from .. import backend as _backend

    chosen = _backend.resolve("selective_scan", backend, u.device)
    if chosen == "triton":
        from .triton import selective_scan_triton

        return selective_scan_triton(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, return_last_state
        )
    if _backend.needs_grad(u, delta, A, B, C, D, z, delta_bias, initial_state) and u.shape[1] >= CHUNKED_MIN_LEN:
        from .chunked import selective_scan_chunked

        return selective_scan_chunked(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, return_last_state
        )
    return selective_scan_ref(
        u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, return_last_state
    )
