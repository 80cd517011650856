"""The Mamba-1 selective scan (SIMBA.md §2): the dispatching entry point `selective_scan`.

Shapes: u, delta, z: [B, L, D]; A: [D, N]; B, C: [B, L, N]; D (skip): [D]; state: [B, D, N].
The reference is in naive.py, the chunked CPU scan in chunked.py, the Triton kernels in triton.py and
triton_seq.py (imported only when they run).
"""

from __future__ import annotations

from .._common import step_size
from .naive import selective_scan_ref

CHUNKED_MIN_LEN = 64  # the `reference` backend runs the chunked scan from this length on

__all__ = ["CHUNKED_MIN_LEN", "selective_scan", "selective_scan_ref", "step_size"]


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
