"""The calibration objective: KL(dense ‖ sparse) of next-token distributions at the protected positions.

The dense distributions are computed once; each candidate schedule costs one pruned forward pass over
the calibration windows (which runs the impact score of every pruned layer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..pruning.model import PrunedMambaLM
from ..pruning.spec import PruningSpec


@dataclass
class Evaluation:
    kl: float  # mean over protected positions, nats
    nll: float  # mean NLL of the next tokens at the protected positions (sparse model)


class KLObjective:
    """Scores keep-ratio candidates on fixed windows [S, L+1]; the last `protect` of the L inputs are scored."""

    def __init__(self, dense, windows: torch.Tensor, protect: int, *, batch_size: int = 8, spec_kw=None, progress=None):
        self.dense = dense
        self.device = dense.device
        self.inputs = windows[:, :-1]
        self.L = self.inputs.shape[1]
        self.P = min(max(1, protect), self.L)
        self.protect = protect
        self.targets = windows[:, -self.P:].to(self.device)  # the token after each protected position
        self.batch_size = batch_size
        self.spec_kw = dict(spec_kw or {})
        self.calls = 0
        with torch.no_grad():
            self.dense_logp = torch.cat(
                [self._logp(self.dense(ids, num_last=self.P)) for ids in self._batches(progress, "dense reference")]
            )
        self.dense_nll = self._nll(self.dense_logp)

    def _batches(self, progress=None, desc=""):
        chunks = list(self.inputs.split(self.batch_size))
        it = progress(chunks, desc) if progress else chunks
        for ids in it:
            yield ids.to(self.device)

    def _logp(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(logits[:, -self.P:].float(), dim=-1)

    def _nll(self, logp: torch.Tensor) -> float:
        return float(-logp.gather(-1, self.targets[:, :, None]).mean())

    @torch.no_grad()
    def __call__(self, ratios) -> Evaluation:
        self.calls += 1
        spec = PruningSpec(tuple(ratios), protect=self.protect, **self.spec_kw)
        model = PrunedMambaLM(self.dense, spec)
        kl_sum, logps = 0.0, []
        for i, ids in enumerate(self._batches()):
            lp = self._logp(model(ids, num_last=self.P))
            ref = self.dense_logp[i * self.batch_size: i * self.batch_size + ids.shape[0]]
            kl_sum += float((ref.exp() * (ref - lp)).sum())
            logps.append(lp.gather(-1, self.targets[i * self.batch_size: i * self.batch_size + ids.shape[0], :, None]))
        n = self.inputs.shape[0] * self.P
        return Evaluation(kl=kl_sum / n, nll=float(-torch.cat(logps).mean()))


@torch.no_grad()
def score_profile(dense, windows: torch.Tensor, criterion: str, *, batch_size: int = 8, quantile: float = 0.25) -> list[float]:
    """Per layer, the share of the total score held by its top `quantile` of tokens (dense run).

    A share near `quantile` means scores are flat (pruning hurts evenly); near 1 means a few tokens
    carry the layer (pruning is cheap). `delta`/`output`/`random` are profiled as they are.
    """
    inputs = windows[:, :-1]
    layers = dense.backbone.layers
    totals = [0.0] * len(layers)
    for ids in inputs.split(batch_size):
        ids = ids.to(dense.device)
        hidden, residual = dense.backbone.embedding(ids), None
        for i, layer in enumerate(layers):
            h, residual = layer.add_norm(hidden, residual)
            hidden, it = layer.mixer(h, return_internals=True)
            gen = torch.Generator(device=ids.device).manual_seed(i)
            s = it.score(criterion=criterion, y=hidden, generator=gen)
            s = s.clamp_min(0).double()
            k = max(1, math.ceil(quantile * s.shape[1]))
            top = torch.topk(s, k, dim=1).values.sum(1)
            totals[i] += float((top / s.sum(1).clamp_min(1e-30)).sum())
    return [t / inputs.shape[0] for t in totals]
