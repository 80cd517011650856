"""Exact FLOPs of dense and token-pruned forward passes (SIMBA.md §5), for every architecture.

Convention: one multiply-add = 2 FLOPs; every elementwise operation (add, multiply, exp, softplus, SiLU,
rsqrt, max, abs) = 1 FLOP per element; the embedding lookup, gathers, top-k and sorting = 0 FLOPs (they
move data). The LM head and final norm are counted on the positions whose predictions are needed
(the P protected positions when pruning, all L when not given).

A layer's cost is a function of the number n of tokens it processes, given by its architecture
(`arch.family(config)`, dispatched on the config's type):
- Mamba-1 / FalconMamba (arch/mamba1/flops.py): n times a per-token cost (in_proj, conv, x_proj, dt_proj, the
  selective scan's 9·D·N, gate, out_proj, ...; notes/CHECKPOINTS.md §5);
- Mamba-2 (arch/mamba2/flops.py): the per-token projections, conv, gate and norm plus the SSD scan's chunked
  cost, whose in-chunk part grows with the square of each chunk's length: n·(...) + (2·G·N + 3·H + 2·H·P)·S +
  c·(2·H·P·N + H) with S = (n // T)·T² + (n % T)² and c = ceil(n / T) chunks of T = chunk_size (its docstring
  lists every part).
The impact score costs a fixed number of FLOPs per scored token (`score_flops`), the head a fixed number per
predicted position (`head_flops`, the same for every architecture).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..arch import family
from .spec import keep_counts


def layer_parts(cfg, n: int = 1) -> dict[str, int]:
    """FLOPs of one pre-norm block of `cfg`'s architecture over a sequence of n tokens, by part (n = 1: per token)."""
    return family(cfg).layer_parts(cfg, n)


def layer_flops(cfg, n: int = 1) -> int:
    """FLOPs of one block over a sequence of n tokens (n = 1: the cost of a one-token sequence)."""
    return sum(layer_parts(cfg, n).values())


def score_flops(cfg, criterion: str) -> int:
    """FLOPs per scored token of the architecture's impact score (SIMBA.md §3)."""
    return family(cfg).score_flops(cfg, criterion)


def head_flops(cfg) -> int:
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
        """Sparse/dense FLOPs of the blocks alone (no head, no scoring): mean(k_l)/L for Mamba-1, a little less for
        Mamba-2 (its in-chunk work grows faster than the token count)."""
        return self.sparse_backbone / self.dense_backbone

    def per_layer(self, cfg) -> list[int]:
        return [layer_flops(cfg, k) for k in self.tokens_per_layer]

    def to_dict(self) -> dict:
        return {
            "L": self.L, "predicted_positions": self.predicted,
            "tokens_per_layer": list(self.tokens_per_layer),
            "dense_total": self.dense_total, "sparse_total": self.sparse_total,
            "dense_backbone": self.dense_backbone, "sparse_backbone": self.sparse_backbone,
            "scoring": self.scoring, "head": self.head,
            "ratio": self.ratio, "backbone_ratio": self.backbone_ratio,
        }


def flops_report(cfg, keep_ratios, L: int, protect: int, criterion: str = "last") -> FlopsReport:
    """FLOPs of the pruned model with `keep_ratios` against the dense model on one sequence of L tokens.

    Both predict the `protect` last positions (all L when protect is 0 or >= L). Layer l is scored
    (to choose layer l+1's tokens) only where the next layer keeps fewer tokens than this one.
    """
    ks = keep_counts(keep_ratios, L, protect)
    predicted = L if protect <= 0 else min(L, protect)
    s = score_flops(cfg, criterion)
    scoring = sum(ks[i] * s for i in range(len(ks) - 1) if ks[i + 1] < ks[i])
    head = predicted * head_flops(cfg)
    dense_backbone = cfg.n_layer * layer_flops(cfg, L)
    sparse_backbone = sum(layer_flops(cfg, k) for k in ks)
    return FlopsReport(
        L=L, predicted=predicted, tokens_per_layer=tuple(ks),
        dense_total=dense_backbone + head, sparse_total=sparse_backbone + scoring + head,
        dense_backbone=dense_backbone, sparse_backbone=sparse_backbone, scoring=scoring, head=head,
    )


def dense_flops(cfg, L: int, predicted: int | None = None) -> int:
    """FLOPs of the dense model on L tokens with predictions at `predicted` positions (default all L)."""
    return cfg.n_layer * layer_flops(cfg, L) + (L if predicted is None else predicted) * head_flops(cfg)
