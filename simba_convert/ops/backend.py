"""Choosing a compute backend for an op: `auto` takes Triton on CUDA and the PyTorch reference elsewhere."""

from __future__ import annotations

import logging
import os

import torch

from ..errors import BackendError

log = logging.getLogger("simba_convert.ops")

BACKENDS = ("auto", "triton", "reference")
_announced: set[tuple[str, str, str]] = set()


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def interpret_mode() -> bool:
    """True when Triton runs kernels on the CPU (TRITON_INTERPRET=1), as CI does to test them."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def resolve(op: str, backend: str, device: torch.device) -> str:
    """Return "triton" or "reference" for running `op` on `device`.

    Asking for Triton where it cannot run is an error, never a silent fallback.
    """
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r} for {op}; choose one of {', '.join(BACKENDS)}")
    can_triton = triton_available() and (device.type == "cuda" or interpret_mode())
    if backend == "triton" and not can_triton:
        why = "triton is not installed" if not triton_available() else f"the tensors are on {device.type}"
        raise BackendError(f"backend 'triton' cannot run {op}: {why} (use --backend auto or reference)")
    chosen = backend
    if backend == "auto":
        chosen = "triton" if (can_triton and device.type == "cuda") else "reference"
    key = (op, backend, chosen)
    if key not in _announced:
        _announced.add(key)
        log.info("%s: backend %s -> %s on %s", op, backend, chosen, device.type)
    return chosen
