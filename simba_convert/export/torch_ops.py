"""PyTorch custom ops that stand for the `simba` ONNX domain's nodes during export.

`torch.ops.simba.selective_scan`, `torch.ops.simba.impact_score` and `torch.ops.simba.selective_scan_score` (the
scan and the score of a pruned layer in one node), and Mamba-2's `ssd_scan` / `ssd_scan_score`, run our ops
eagerly and have fake (shape-only) impls, so `torch.export` sees one opaque node per call instead of tracing (and
specialising, ONNX.md pitfall 9) the Python loop of the reference. Their ONNX translations live in
`onnx_ops.py`.

Shapes: u, delta, z [B, L, D]; A [D, N]; B, C [B, L, N]; D (skip), delta_bias [D]; state [B, D, N].
Mamba-2 (`simba::ssd_scan`, `simba::ssd_scan_score`): x [B, L, H, P]; dt [B, L, H] fp32; A, D, dt_bias [H];
B, C [B, L, G, N]; state [B, H, P, N].
`simba::select_kept(score [B, L], k, protect) -> slots [B, k]`: the pruned graph's choice of the kept tokens.
"""

from __future__ import annotations

import torch

from ..ops.conv1d import causal_conv1d_ref
from ..ops.scan import selective_scan as _selective_scan
from ..ops.score import impact_score
from ..ops.score_ssd import impact_score_ssd
from ..ops.ssd import ssd_scan as _ssd_scan
from ..pruning.select import select_kept_dense_rows

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
    delta_bias: torch.Tensor | None, criterion: str, signed: bool,
) -> torch.Tensor:
    """Scores [B, L] fp32 (`last` or `global`). delta_bias None: delta is POST-softplus, as `impact_score_ref` takes
    it; given: delta is RAW and softplus(delta + delta_bias) is fused (`impact_score(..., delta_softplus=True)`)."""
    if criterion not in KERNEL_CRITERIA:
        raise ValueError(f"simba::impact_score has kernels for {KERNEL_CRITERIA}, not {criterion!r}")
    fused = dict(delta_bias=delta_bias, delta_softplus=True) if delta_bias is not None else {}
    return impact_score(u, delta, A, B, C, criterion=criterion, signed=signed, **fused)


@impact_score_op.register_fake
def _(u, delta, A, B, C, delta_bias, criterion, signed):
    return u.new_empty(u.shape[0], u.shape[1], dtype=torch.float32)


@torch.library.custom_op("simba::selective_scan_score", mutates_args=())
def selective_scan_score(
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
    D: torch.Tensor, z: torch.Tensor, delta_bias: torch.Tensor, criterion: str, signed: bool, protect: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`selective_scan` (delta RAW) and the layer's scores [B, L] fp32 of `criterion` from the same inputs, with
    +inf at the last `protect` positions (always kept): the key the top-k of the pruned graph selects on."""
    y, last = selective_scan(u, delta, A, B, C, D, z, delta_bias)
    return y, last, _protected(impact_score_op(u, delta.float(), A, B, C, delta_bias, criterion, signed), protect)


@selective_scan_score.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, criterion, signed, protect):
    return (torch.empty_like(u), u.new_empty(u.shape[0], u.shape[2], A.shape[1], dtype=torch.float32),
            u.new_empty(u.shape[0], u.shape[1], dtype=torch.float32))


def _protected(score: torch.Tensor, protect: int) -> torch.Tensor:
    """score [B, L] with +inf at the last `protect` positions (always kept): the key the pruned graph's top-k takes."""
    if protect > 0:
        score[:, max(0, score.shape[1] - protect):] = float("inf")
    return score


@torch.library.custom_op("simba::ssd_scan", mutates_args=())
def ssd_scan(
    x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, D: torch.Tensor,
    dt_bias: torch.Tensor, dt_softplus: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(y [B, L, H, P] in x's dtype, final state [B, H, P, N] fp32) of the Mamba-2 scan from a zero state, with the
    step size delta = softplus(dt + dt_bias) (dt_softplus) or dt + dt_bias formed inside (`ops.ssd.ssd_scan`)."""
    y, state = _ssd_scan(x, dt, A, B, C, D=D, dt_bias=dt_bias, dt_softplus=dt_softplus, return_final_state=True)
    return y, state.float()


def _ssd_fake(x, B):
    return torch.empty_like(x), x.new_empty(x.shape[0], x.shape[2], x.shape[3], B.shape[3], dtype=torch.float32)


@ssd_scan.register_fake
def _(x, dt, A, B, C, D, dt_bias, dt_softplus):
    return _ssd_fake(x, B)


@torch.library.custom_op("simba::ssd_scan_score", mutates_args=())
def ssd_scan_score(
    x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, D: torch.Tensor,
    dt_bias: torch.Tensor, dt_softplus: bool, criterion: str, signed: bool, protect: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`ssd_scan` and the layer's Mamba-2 scores [B, L] fp32 of `criterion` (`impact_score_ssd`) from the same step
    size, +inf at the last `protect` positions."""
    if criterion not in KERNEL_CRITERIA:
        raise ValueError(f"simba::ssd_scan_score has kernels for {KERNEL_CRITERIA}, not {criterion!r}")
    y, state = ssd_scan(x, dt, A, B, C, D, dt_bias, dt_softplus)
    score = impact_score_ssd(x, dt, A, B, C, criterion=criterion, signed=signed, dt_bias=dt_bias,
                             dt_softplus=dt_softplus)
    return y, state, _protected(score, protect)


@ssd_scan_score.register_fake
def _(x, dt, A, B, C, D, dt_bias, dt_softplus, criterion, signed, protect):
    return *_ssd_fake(x, B), x.new_empty(x.shape[0], x.shape[1], dtype=torch.float32)


@torch.library.custom_op("simba::causal_conv1d", mutates_args=())
def causal_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """SiLU(causal depthwise conv) of x [B, L, D] with weight [D, K] and bias [D], in x's layout and dtype (the mixer's
    conv without the transposes to [B, D, L] that a standard Conv needs)."""
    return causal_conv1d_ref(x, weight, bias, activation="silu")


@causal_conv1d.register_fake
def _(x, weight, bias, kernel_size):
    return torch.empty_like(x)


@torch.library.custom_op("simba::gather_rows", mutates_args=())
def gather_rows(x: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """x [B, l, d] at slots [B, k] (int64) -> [B, k, d]; exported as a standard GatherND with batch_dims=1."""
    return torch.gather(x, 1, slots[:, :, None].expand(-1, -1, x.shape[2]))


@gather_rows.register_fake
def _(x, slots):
    return x.new_empty(x.shape[0], slots.shape[1], x.shape[2])


@torch.library.custom_op("simba::select_kept", mutates_args=())
def select_kept(score: torch.Tensor, k: int, protect: int) -> torch.Tensor:
    """Slots [B, k] int64, ascending: the last min(protect, L) positions of score [B, L] and the best of the rest,
    ties at the threshold to the lowest positions (`select_kept_dense_rows`, what the PyTorch model runs; the
    exported node `SelectKept` replaces a TopK and the TopK that sorted its indices)."""
    return select_kept_dense_rows(score.float().clone(), min(int(protect), score.shape[1]), int(k))


@select_kept.register_fake
def _(score, k, protect):
    return score.new_empty(score.shape[0], k, dtype=torch.int64)
