"""The sparsified prefill as an exportable PyTorch module, over a dense `MambaLM`'s weights.

`PrefillGraph(input_ids [B, L]) -> (logits [B, P', V], kept_mask [n_layer, B, L])` computes what
`PrunedMambaLM.forward` computes for unpadded input, restricted to what a prefill needs:
  - layer l processes k_l = clamp(ceil(round(r_l·L, 9)), min(L, max(1, P)), L) tokens (`spec.keep_counts`),
    computed inside the graph from the dynamic L in float64 (round(x, 9) as Round(x·1e9)/1e9: the same
    count except exactly on a half-way point of the 9th decimal);
  - the tokens layer l+1 keeps are the top-k_{l+1} of layer l's scores (from layer l's own activations),
    with the last max(1, P) alive tokens forced in, gathered in original order (hidden and residual);
  - logits come out for the protected suffix only: the last P' = min(max(1, P), L) positions, which are
    always alive to the end, so the frozen residuals of pruned tokens (the highway) never reach an output;
  - kept_mask[l, b, t] is True when original position t was processed by layer l.
The scan and the `last`/`global` scores are the custom ops `simba::selective_scan` / `simba::impact_score`;
the conv is a grouped Conv, top-k and gathers are TopK / GatherElements. A layer whose ratio equals the
previous one keeps every token, so it is exported without scoring (a dense model has no scores at all).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from ..model.mamba import MambaLM, MambaMixer
from ..ops.conv1d import causal_conv1d_ref
from . import torch_ops  # noqa: F401  (registers torch.ops.simba.*)

EXPORT_CRITERIA = ("last", "global", "delta", "output")


class PrefillGraph(nn.Module):
    def __init__(self, dense: MambaLM, keep_ratios, *, criterion: str = "last", signed: bool = False, protect: int = 1):
        super().__init__()
        ratios = tuple(float(r) for r in keep_ratios)
        if len(ratios) != dense.config.n_layer:
            raise ConfigError(f"{len(ratios)} keep ratios for a model with {dense.config.n_layer} layers")
        if criterion not in EXPORT_CRITERIA:
            raise ConfigError(f"criterion {criterion!r} cannot be exported to ONNX; use one of {', '.join(EXPORT_CRITERIA)}")
        self.dense = dense
        self.ratios = ratios
        self.criterion = criterion
        self.signed = bool(signed)
        self.protect = max(1, int(protect))

    def _mixer(self, mixer: MambaMixer, h: torch.Tensor, want_score: bool):
        """MambaMixer.forward with the scan as one custom op; also the layer's token scores [B, L] if asked."""
        x, z = mixer.in_proj(h).chunk(2, dim=-1)
        u = causal_conv1d_ref(x, mixer.conv1d.weight.squeeze(1), mixer.conv1d.bias, activation="silu")
        dt, Bm, Cm = mixer._ssm_inputs(u)
        A = mixer.A()
        bias = mixer.dt_proj.bias.float()
        y, _ = torch.ops.simba.selective_scan(u, dt, A, Bm, Cm, mixer.D.float(), z, bias)
        out = mixer.out_proj(y)
        if not want_score:
            return out, None
        delta = F.softplus(dt.float() + bias)
        if self.criterion == "delta":
            score = torch.linalg.vector_norm(delta, dim=-1)
        elif self.criterion == "output":
            score = out.float().clamp_min(0).sum(dim=-1)
        else:
            score = torch.ops.simba.impact_score(u, delta, A, Bm, Cm, self.criterion, self.signed)
        return out, score

    def _count(self, r: float, n: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
        """k = ceil(r·n) in float64 (rounded to 9 decimals first), clamped to [min(L, P), L]; a 0-d int64 tensor.

        Tensor ops, not Python floats: the count must be computed by the graph from the dynamic length.
        """
        k = torch.ceil(torch.round(torch.tensor(r, dtype=torch.float64) * n * 1e9) / 1e9).long()
        return torch.minimum(torch.maximum(k, L.clamp(max=self.protect)), L)

    def forward(self, input_ids: torch.Tensor):
        bsz, L = input_ids.shape
        n = torch.scalar_tensor(L, dtype=torch.float64)
        L_t = n.long()
        layers = self.dense.backbone.layers
        hidden, residual = self.dense.backbone.embedding(input_ids), None
        pos = torch.arange(L, device=input_ids.device).expand(bsz, L)
        kept = []
        for i, layer in enumerate(layers):
            kept.append(torch.zeros(bsz, L, dtype=torch.bool, device=input_ids.device).scatter(1, pos, True))
            h, residual = layer.add_norm(hidden, residual)
            prune = i + 1 < len(layers) and self.ratios[i + 1] != self.ratios[i]
            hidden, score = self._mixer(layer.mixer, h, prune)
            if not prune:
                continue
            cur = hidden.shape[1]
            k = self._count(self.ratios[i + 1], n, L_t).item()
            torch._check(k >= 1)
            torch._check(k <= cur)
            protected = torch.arange(cur, device=score.device) >= cur - self.protect
            key = torch.where(protected, torch.full_like(score, float("inf")), score.float())
            slots = torch.topk(key, k, dim=1, sorted=True).indices.sort(dim=1).values  # original order
            hidden, residual = _gather(hidden, slots), _gather(residual, slots)
            pos = torch.gather(pos, 1, slots)
        stream = hidden.to(residual.dtype) + residual
        logits = self.dense.head(stream[:, -self.protect:])
        return logits, torch.stack(kept)


def _gather(x: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """x [B, l, d] at slots [B, k] -> [B, k, d]."""
    return torch.gather(x, 1, slots[:, :, None].expand(-1, -1, x.shape[2]))
