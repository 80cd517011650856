"""PyTorch custom ops that stand for the `simba` ONNX domain's nodes during export.

`torch.ops.simba.selective_scan` and `torch.ops.simba.impact_score` run our ops eagerly and have fake
(shape-only) impls, so `torch.export` sees one opaque node per call instead of tracing (and
specialising, ONNX.md pitfall 9) the Python loop of the reference. Their ONNX translations live in
`onnx_ops.py`.

Shapes: u, delta, z [B, L, D]; A [D, N]; B, C [B, L, N]; D (skip), delta_bias [D]; state [B, D, N].
"""

from __future__ import annotations

import torch

from ..ops.impact_score import impact_score
from ..ops.selective_scan import selective_scan as _selective_scan

# The criteria with a kernel in the `simba` domain; `delta` and `output` export as standard ONNX ops.
KERNEL_CRITERIA = ("last", "global")


@torch.library.custom_op("simba::selective_scan", mutates_args=())
def selective_scan(
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
    D: torch.Tensor, z: torch.Tensor, delta_bias: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(y [B, L, D] in u's dtype, last_state [B, D, N] fp32) with delta RAW: softplus(delta + delta_bias) is fused."""
    y, last = _selective_scan(u, delta, A, B, C, D, z, delta_bias, True, return_last_state=True)
    return y, last.float()


@selective_scan.register_fake
def _(u, delta, A, B, C, D, z, delta_bias):
    return torch.empty_like(u), u.new_empty(u.shape[0], u.shape[2], A.shape[1], dtype=torch.float32)


@torch.library.custom_op("simba::impact_score", mutates_args=())
def impact_score_op(
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
    criterion: str, signed: bool,
) -> torch.Tensor:
    """Scores [B, L] fp32 (`last` or `global`) with delta POST-softplus, as `impact_score_ref` takes it."""
    if criterion not in KERNEL_CRITERIA:
        raise ValueError(f"simba::impact_score has kernels for {KERNEL_CRITERIA}, not {criterion!r}")
    return impact_score(u, delta, A, B, C, criterion=criterion, signed=signed)


@impact_score_op.register_fake
def _(u, delta, A, B, C, criterion, signed):
    return u.new_empty(u.shape[0], u.shape[1], dtype=torch.float32)
