"""The Mamba-2 scan (SSD, "state space duality"): the dispatching entry point `ssd_scan`.

Shapes: x [B, L, H, P]; dt [B, L, H] (raw); A [H] (negative, fp32); B, C [B, L, G, N]; D (skip) [H]; dt_bias [H];
state [B, H, P, N] fp32. The recurrence, the reference `ssd_scan_ref` and one decoding step `ssd_step_ref` are in
naive.py, the Triton kernels (forward and backward) in triton.py (imported only when they run).
"""

from __future__ import annotations

import logging

import torch

from ...errors import BackendError
from .._common import step_size
from .naive import ssd_scan_ref, ssd_step_ref

log = logging.getLogger("simba_convert.ops")

__all__ = ["ssd_scan", "ssd_scan_ref", "ssd_step_ref", "step_size"]


def ssd_scan(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    *,
    D: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    dt_softplus: bool = False,
    initial_state: torch.Tensor | None = None,
    return_final_state: bool = False,
    chunk_size: int = 64,
    backend: str = "auto",
):
    """Same contract as `ssd_scan_ref`; `backend` is auto | triton | reference (see ops.backend).

    `triton` runs `ssd_scan_triton` (ssd/triton.py; differentiable, so it also runs under autograd). `auto` takes
    it on CUDA when that module imports and falls back to the reference otherwise (logged once); asking for
    `triton` where it cannot run is an error.
    """
    from .. import backend as _backend

    kw = dict(D=D, dt_bias=dt_bias, dt_softplus=dt_softplus, initial_state=initial_state,
              return_final_state=return_final_state, chunk_size=chunk_size)
    chosen = _backend.resolve("ssd_scan", backend, x.device)
    if chosen == "triton":
        try:
            from .triton import MAX_CHUNK, ssd_scan_triton
        except ImportError as e:
            if backend == "triton":
                raise BackendError(f"backend 'triton' cannot run ssd_scan: ssd/triton.py does not import ({e})",
                                   option="backend") from None
            _warn_once(e)
        else:
            # The chunk length only changes how the same sums are grouped; the kernel's tiles need a power of two
            # of at least 16, so other lengths run at 64 there (an explicit `triton` keeps the kernel's error), and
            # longer chunks (mamba_ssm's checkpoints say 256, its kernels' choice) at the kernel's MAX_CHUNK.
            if backend == "auto" and (chunk_size < 16 or chunk_size & (chunk_size - 1)):
                kw["chunk_size"] = 64
            kw["chunk_size"] = min(kw["chunk_size"], MAX_CHUNK)
            return ssd_scan_triton(x, dt, A, B, C, **kw)
    return ssd_scan_ref(x, dt, A, B, C, **kw)


_warned: list[bool] = []


def _warn_once(e: ImportError) -> None:
    if not _warned:
        _warned.append(True)
        log.warning("ssd_scan: the Triton kernel does not import (%s); running the PyTorch reference", e)
