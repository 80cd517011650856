"""Tensors a mixer derives from its parameters on every call (A = -exp(A_log), fp32 copies of D and the step-size
bias), formed once for inference.

Forming them costs a few small launches a layer: ~1 ms of a 1.4B Mamba-1 forward at B = 1 on the H200
(benchmarks/kernel_profile.py), and a fixed cost that token pruning cannot shrink.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch


def derived_params(owner, params: Sequence[torch.Tensor], make: Callable[[], tuple],
                   finish: Callable[[tuple], None] | None = None) -> tuple:
    """make()'s tensors, formed once and reused while `params` keep their storage, dtype, device and version and
    no gradient flows to them; formed afresh (differentiable) whenever one may.

    `finish(out)` runs on the cached tensors only (extras a kernel reads, e.g. a transposed copy). The cache lives
    in `owner._derived_cache`. Inference tensors (a model built under torch.inference_mode) keep no version
    counter, so an in-place update could not be seen: nothing is cached for them; nor while a graph is traced
    (torch.export, the ONNX exporter: the graph computes them from the parameters)."""
    if (torch.is_grad_enabled() and any(p.requires_grad for p in params)) or any(p.is_inference() for p in params) \
            or torch.compiler.is_compiling():
        return make()
    try:
        key = tuple((p._version, p.data_ptr(), p.dtype, p.device) for p in params)
    except RuntimeError:  # fake tensors of a non-strict export trace have no storage
        return make()
    cache = owner.__dict__.get("_derived_cache")
    if cache is None or cache[0] != key:
        # Ordinary tensors even under inference_mode, so a later frozen-weight autograd pass may use them; a
        # parameter returned as is (`.float()` of an fp32 one) is copied, so the cache holds no parameter.
        with torch.inference_mode(False), torch.no_grad():
            out = tuple(t.detach().clone() if isinstance(t, torch.nn.Parameter) else t for t in make())
            if finish is not None:
                finish(out)
        cache = owner.__dict__["_derived_cache"] = (key, out)
    return cache[1]

