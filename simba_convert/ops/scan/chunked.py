"""A chunked PyTorch selective scan: the CPU fast path for long sequences, differentiable by autograd.

Shapes: u, delta, z: [B, L, D]; A: [D, N]; B, C: [B, L, N]; D (skip), delta_bias: [D];
states [B, D, N]; chunks [B, T, D, N].

The sequence is cut into chunks of T steps. Inside a chunk the recurrence h_t = a_t ⊙ h_{t-1} + b_t
(a_t = exp(delta_t ⊗ A), b_t = (delta_t ⊙ u_t) ⊗ B_t) is solved by a log-depth (Hillis–Steele) scan
over the chunk: after step k every position holds the composition of the last 2^k elements,
(a, b) ∘ (a', b') = (a ⊙ a', a ⊙ b' + b). Only products of the a_t ∈ (0, 1] appear — every exponent
is delta·A ≤ 0 and nothing is divided — so it is as safe as the step-by-step reference, and exact to
it up to fp32 rounding. The chunk's first element absorbs the carried state. Python runs
L/T + log2(T) iterations instead of L, which is where the CPU time of the reference goes.
"""

from __future__ import annotations

import torch

from .naive import scan_inputs_fp32, scan_output

CHUNK = 32  # fastest of 16/32/64 on a 2-core CPU at D = 64..768 (ops/README.md)


def _scan_chunk(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Inclusive scan of h_t = a_t ⊙ h_{t-1} + b_t along dim 1 of [B, T, D, N], starting from h = 0."""
    T = a.shape[1]
    k = 1
    while k < T:
        # Positions >= k combine with the element k steps back; the first k are already final.
        b = torch.cat([b[:, :k], a[:, k:] * b[:, :-k] + b[:, k:]], dim=1)
        if 2 * k < T:  # the last round never reads a again
            a = torch.cat([a[:, :k], a[:, k:] * a[:, :-k]], dim=1)
        k *= 2
    return b


def selective_scan_chunked(
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
    *,
    chunk: int = CHUNK,
):
    """Same contract and results (fp32) as `selective_scan_ref`, computed chunk by chunk."""
    dtype = u.dtype
    u, delta, A, B, C, h = scan_inputs_fp32(u, delta, A, B, C, delta_bias, delta_softplus, initial_state)
    bsz, L, d = u.shape
    ys = []
    for s in range(0, L, chunk):
        dt, ut = delta[:, s:s + chunk], u[:, s:s + chunk]
        a = torch.exp(dt[..., None] * A)  # [B, T, D, N]
        b = (dt * ut)[..., None] * B[:, s:s + chunk, None, :]
        b = torch.cat([b[:, :1] + a[:, :1] * h[:, None], b[:, 1:]], dim=1)
        hs = _scan_chunk(a, b)
        ys.append(torch.einsum("btdn,btn->btd", hs, C[:, s:s + chunk]))
        h = hs[:, -1]
    y = torch.cat(ys, dim=1) if ys else u.new_zeros(bsz, 0, d)
    return scan_output(y, h, u, D, z, dtype, return_last_state)
