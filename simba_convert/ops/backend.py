"""Choosing a compute backend for an op: `auto` takes Triton on CUDA and the PyTorch reference elsewhere."""

from __future__ import annotations

import logging
import os

import torch

from ..errors import BackendError

log = logging.getLogger("simba_convert.ops")

BACKENDS = ("auto", "triton", "reference")
# A whole model (MambaLM.set_backend) may also run on mamba_ssm / causal_conv1d's CUDA kernels ("cuda").
MODEL_BACKENDS = ("auto", "cuda", "triton", "reference")
_announced: set[tuple[str, str, str]] = set()


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def needs_grad(*tensors) -> bool:
    """True when autograd will differentiate through any of `tensors` (None entries allowed): the forward-only
    Triton kernels then give way to their references."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


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
        raise BackendError(f"backend 'triton' cannot run {op}: {why} (use backend auto or reference)",
                           option="backend")
    chosen = backend
    if backend == "auto":
        chosen = "triton" if (can_triton and device.type == "cuda") else "reference"
    key = (op, backend, chosen)
    if key not in _announced:
        _announced.add(key)
        log.info("%s: backend %s -> %s on %s", op, backend, chosen, device.type)
    return chosen


def resolve_model(backend: str, device: torch.device, cuda_available=None) -> str:
    """Return "cuda", "triton" or "reference" for a model's layers on `device`.

    `auto` takes mamba_ssm / causal_conv1d's kernels when they import on a CUDA device, else Triton on CUDA, else
    the reference; a Mamba-1 layer on "cuda" still runs Triton on the shapes where that was measured faster
    (model.mixer_cuda.preferred; BENCHMARKS.md, "Against mamba_ssm").
    `cuda_available` tells whether the architecture's kernels import (default: Mamba-1's, model.mixer_cuda).
    """
    if backend not in MODEL_BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose one of {', '.join(MODEL_BACKENDS)}")
    if backend in ("triton", "reference"):
        return resolve("mamba_layer", backend, device)
    if cuda_available is None:
        from ..model import mixer_cuda

        cuda_available = mixer_cuda.available
    if device.type == "cuda" and cuda_available():
        chosen = "cuda"
    elif backend == "cuda":
        why = "the model is not on a CUDA device" if device.type != "cuda" else "mamba_ssm / causal_conv1d do not import"
        raise BackendError(f"backend 'cuda' cannot run: {why} (pip install 'simba-convert[cuda]' on a CUDA machine)")
    else:
        chosen = resolve("mamba_layer", "auto", device)
    key = ("mamba_layer", backend, chosen)
    if key not in _announced:
        _announced.add(key)
        log.info("mamba_layer: backend %s -> %s on %s", backend, chosen, device.type)
    return chosen
