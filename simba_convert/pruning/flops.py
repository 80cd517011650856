"""Exact FLOPs of dense and token-pruned Mamba-1 forward passes (SIMBA.md §5, notes/CHECKPOINTS.md §5).

Convention: one multiply-add = 2 FLOPs; every elementwise operation (add, multiply, exp, softplus, SiLU,
rsqrt, max, abs) = 1 FLOP per element; the embedding lookup, gathers, top-k and sorting = 0 FLOPs (they
move data). The LM head and final norm are counted on the positions whose predictions are needed
(the P protected positions when pruning, all L when not given). Counts are per token per layer unless named.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ShapeError
from ..model.config import MambaConfig
from .spec import keep_counts


def layer_parts(cfg: MambaConfig) -> dict[str, int]:
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


def layer_flops(cfg: MambaConfig) -> int:
    return sum(layer_parts(cfg).values())


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


def head_flops(cfg: MambaConfig) -> int:
    """FLOPs per predicted position: final residual add, final norm and the LM head matmul."""
    d = cfg.d_model
    return d + (4 * d if cfg.rms_norm else 6 * d) + 2 * d * cfg.padded_vocab_size


@dataclass(frozen=True)
class FlopsReport:
    """FLOPs of one sequence of L tokens, dense and pruned, with the ratios the budget refers to."""

    L: int
    predicted: int
    tokens_per_layer: tuple[int, ...]
    dense_total: int
    sparse_total: int
    dense_backbone: int
    sparse_backbone: int
    scoring: int
    head: int

    @property
    def ratio(self) -> float:
        """Sparse/dense FLOPs, everything counted (the figure the budget is met against)."""
        return self.sparse_total / self.dense_total

    @property
    def backbone_ratio(self) -> float:
        """Sparse/dense FLOPs of the blocks alone (no head, no scoring): mean(k_l)/L."""
        return self.sparse_backbone / self.dense_backbone

    def per_layer(self, cfg: MambaConfig) -> list[int]:
        return [k * layer_flops(cfg) for k in self.tokens_per_layer]

    def to_dict(self) -> dict:
        return {
            "L": self.L, "predicted_positions": self.predicted,
            "tokens_per_layer": list(self.tokens_per_layer),
            "dense_total": self.dense_total, "sparse_total": self.sparse_total,
            "dense_backbone": self.dense_backbone, "sparse_backbone": self.sparse_backbone,
            "scoring": self.scoring, "head": self.head,
            "ratio": self.ratio, "backbone_ratio": self.backbone_ratio,
        }


def flops_report(cfg: MambaConfig, keep_ratios, L: int, protect: int, criterion: str = "last") -> FlopsReport:
    """FLOPs of the pruned model with `keep_ratios` against the dense model on one sequence of L tokens.

    Both predict the `protect` last positions (all L when protect is 0 or >= L). Layer l is scored
    (to choose layer l+1's tokens) only where the next layer keeps fewer tokens than this one.
    """
    ks = keep_counts(keep_ratios, L, protect)
    predicted = L if protect <= 0 else min(L, protect)
    c = layer_flops(cfg)
    s = score_flops(cfg, criterion)
    scoring = sum(ks[i] * s for i in range(len(ks) - 1) if ks[i + 1] < ks[i])
    head = predicted * head_flops(cfg)
    dense_backbone = cfg.n_layer * L * c
    sparse_backbone = sum(ks) * c
    return FlopsReport(
        L=L, predicted=predicted, tokens_per_layer=tuple(ks),
        dense_total=dense_backbone + head, sparse_total=sparse_backbone + scoring + head,
        dense_backbone=dense_backbone, sparse_backbone=sparse_backbone, scoring=scoring, head=head,
    )


def dense_flops(cfg: MambaConfig, L: int, predicted: int | None = None) -> int:
    """FLOPs of the dense model on L tokens with predictions at `predicted` positions (default all L)."""
    return cfg.n_layer * L * layer_flops(cfg) + (L if predicted is None else predicted) * head_flops(cfg)
