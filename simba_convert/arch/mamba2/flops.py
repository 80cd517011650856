"""Exact FLOPs of a Mamba-2 layer over n tokens and of its impact score; the convention is pruning/flops.py's
(a multiply-add = 2 FLOPs, any other elementwise operation 1 FLOP per element, data movement 0).

Notation (config.py): d = d_model, D = expand·d = H·P, H heads of P channels, G groups of N states,
K = d_conv, Cd = D + 2·G·N (the conv's channels: x, B, C), E = 2·D + 2·G·N + H (in_proj's outputs), T = chunk_size.
The scan is counted as the SSD algorithm runs it (ops/ssd/naive.py's docstring, the Mamba-2 paper §6; mamba_ssm's
kernels), chunk by chunk over the layer's n tokens: n // T full chunks of T tokens and one of r = n % T, so
    S = (n // T)·T² + r²        the in-chunk (t, s) pairs, each chunk's T×T block computed whole
    c = ceil(n / T)             chunks.
One layer over n tokens, by part:
    residual_add        n·d
    norm                n·4d (RMSNorm; LayerNorm 6d)
    in_proj             n·2·d·E            (+ n·E with bias)
    conv1d              n·2·Cd·K           (+ n·Cd with conv bias)
    silu_xBC            n·4·Cd
    step_size           n·4H               softplus(dt + dt_bias) (+ n·2H for the dt_limit clamp)
    chunk_cumsum        n·2H               δ·A and its in-chunk cumulative sum s
    dx                  n·D                δ_s·x_s
    intra_chunk_CB      2·G·N·S            C·Bᵀ per group (shared by its H/G heads)
    intra_chunk_decay   3·H·S              segment sum, exp, ∘ (C·Bᵀ) per head
    intra_chunk_y       2·H·P·S            the masked matrix times δ·x, per head
    chunk_states        n·(2·H·P·N + 2H + D)   exp(s_end − s_t), its product with δ·x, the outer products with B
    state_passing       c·(2·H·P·N + H)    H_{c+1} = exp(s_end)·H_c + S_c, every chunk
    output_from_states  n·(2·H·P·N + H + 2D)   exp(s_t), C_t·H_c, its scaling and the add to the in-chunk y
    skip                n·2D               D·x and its add
    gate_norm           n·(9D + 2G)        silu(z) 4D, ·gate D, RMSNorm over G groups (square, mean, rsqrt + eps
                                           per group, scale, weight); without the gated norm n·5D
    out_proj            n·2·D·d            (+ n·d with bias)
The matrix products (in_proj, conv1d, the three chunk matmuls C·Bᵀ, masked·δx, δx·B and C·H, out_proj) are
what tests/test_mamba2_pipeline.py counts independently with torch's FlopCounterMode.
"""

from __future__ import annotations

from ...errors import ShapeError
from .config import Mamba2Config


def layer_parts(cfg: Mamba2Config, n: int = 1) -> dict[str, int]:
    """FLOPs of one Mamba-2 block over a sequence of n tokens, by part (the module docstring)."""
    d, D, H, P, G, N, K = cfg.d_model, cfg.d_inner, cfg.nheads, cfg.headdim, cfg.ngroups, cfg.d_state, cfg.d_conv
    Cd, E, T = cfg.conv_dim, cfg.d_in_proj, cfg.chunk_size
    bias = 1 if cfg.bias else 0
    S = (n // T) * T * T + (n % T) ** 2
    chunks = -(-n // T)
    return {
        "residual_add": n * d,
        "norm": n * (4 * d if cfg.rms_norm else 6 * d),
        "in_proj": n * (2 * d * E + bias * E),
        "conv1d": n * (2 * Cd * K + (Cd if cfg.conv_bias else 0)),
        "silu_xBC": n * 4 * Cd,
        "step_size": n * (4 * H + (2 * H if cfg.has_dt_limit else 0)),
        "chunk_cumsum": n * 2 * H,
        "dx": n * D,
        "intra_chunk_CB": 2 * G * N * S,
        "intra_chunk_decay": 3 * H * S,
        "intra_chunk_y": 2 * H * P * S,
        "chunk_states": n * (2 * H * P * N + 2 * H + D),
        "state_passing": chunks * (2 * H * P * N + H),
        "output_from_states": n * (2 * H * P * N + H + 2 * D),
        "skip": n * 2 * D,
        "gate_norm": n * (9 * D + 2 * G if cfg.gated_rmsnorm else 5 * D),
        "out_proj": n * (2 * D * d + bias * d),
    }


def score_flops(cfg: Mamba2Config, criterion: str) -> int:
    """FLOPs per scored token of `impact_score_ssd` (ops/score_ssd/), δ taken as formed by the layer."""
    d, D, H, G, N = cfg.d_model, cfg.d_inner, cfg.nheads, cfg.ngroups, cfg.d_state
    if criterion == "last":
        # reverse cumsum of δ (H); per head A·R, exp, ×(C_T·B_t), ×δ (4H); C_T·B_t per group (2GN);
        # per channel ×x, |·|, max (3D)
        return 5 * H + 2 * G * N + 3 * D
    if criterion == "global":
        # per head exp(δA) (2H) and ×δ (H); per (head, state) the G update (2HN) and B·G (2HN); per channel 3D
        return 3 * H + 4 * H * N + 3 * D
    if criterion == "delta":
        return 2 * H + 1  # squares summed over the heads, sqrt
    if criterion == "output":
        return 2 * d  # clamp and sum
    if criterion == "random":
        return 0
    raise ShapeError(f"unknown criterion {criterion!r}")
