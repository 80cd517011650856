"""Exact FLOPs of a Mamba-1 (or FalconMamba) layer, its impact score and its head (SIMBA.md §5,
notes/CHECKPOINTS.md §5); the convention is pruning/flops.py's.

Every part of a Mamba-1 layer costs the same for each token (the selective scan is a recurrence), so a layer
over n tokens costs n times the per-token parts below.
"""

from __future__ import annotations

from ...errors import ShapeError
from ...model.config import MambaConfig


def token_parts(cfg: MambaConfig) -> dict[str, int]:
    """FLOPs per token of one pre-norm Mamba block, by part."""
    d, D, N, R, K = cfg.d_model, cfg.d_inner, cfg.d_state, cfg.dt_rank, cfg.d_conv
    bias = 1 if cfg.bias else 0
    return {
        "residual_add": d,
        "norm": 4 * d if cfg.rms_norm else 6 * d,  # square, mean, rsqrt-scale, weight (+ centre, bias)
        "in_proj": 2 * d * 2 * D + bias * 2 * D,
        "conv1d": 2 * D * K + (D if cfg.conv_bias else 0),
        "silu_u": 4 * D,  # x·sigmoid(x): exp, add, divide, multiply
        "x_proj": 2 * D * (R + 2 * N),
        "dt_proj": 2 * R * D + D,  # matmul + bias
        "softplus": 3 * D,  # exp, add, log
        # discretise exp(δ·A) (2), δ·u·B (2), state update (2), C readout (2) + 1: the 9·D·N of mamba#110
        "scan": 9 * D * N,
        "skip_gate": 2 * D + 4 * D + D,  # D·u + add, SiLU(z), gate multiply
        "out_proj": 2 * D * d + bias * d,
    }


def layer_parts(cfg: MambaConfig, n: int = 1) -> dict[str, int]:
    """FLOPs of one layer over a sequence of n tokens, by part: n times the per-token parts."""
    return {k: n * v for k, v in token_parts(cfg).items()}


def score_flops(cfg: MambaConfig, criterion: str) -> int:
    """FLOPs per scored token of the impact score (SIMBA.md §3)."""
    D, N, d = cfg.d_inner, cfg.d_state, cfg.d_model
    if criterion == "last":
        # reverse cumsum of δ (1), u·δ (1), per (d,n): A·R, exp, ×(C_T·B_t), add (4); C_T·B_t (2N); |·| and max (2)
        return 2 * D + 4 * D * N + 2 * N + 2 * D
    if criterion == "global":
        # per (d,n): exp(δA) (2), G update (2), B·G (2); u·δ (1), |·| and max (2)
        return 6 * D * N + 3 * D
    if criterion == "delta":
        return 2 * D + 1  # squares summed, sqrt
    if criterion == "output":
        return 2 * d  # clamp and sum
    if criterion == "random":
        return 0
    raise ShapeError(f"unknown criterion {criterion!r}")

