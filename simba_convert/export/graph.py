"""The sparsified prefill and the decoding step as exportable PyTorch modules, over a dense LM's weights.

`PrefillGraph(input_ids [B, L]) -> (logits [B, P', V], kept_mask [n_layer, B, L], conv_states, ssm_states)`
computes what `PrunedMambaLM.forward` and `.prefill` compute for unpadded input, restricted to what a prefill needs:
  - layer l processes k_l = clamp(ceil(round(r_l·L, 9)), min(L, max(1, P)), L) tokens (`spec.keep_counts`),
    computed inside the graph from the dynamic L in float64 (round(x, 9) as Round(x·1e9)/1e9: the same
    count except exactly on a half-way point of the 9th decimal);
  - the tokens layer l+1 keeps are the top-k_{l+1} of layer l's scores (from layer l's own activations),
    with the last max(1, P) alive tokens forced in, gathered in original order (hidden and residual);
  - logits come out for the protected suffix only: the last P' = min(max(1, P), L) positions, which are
    always alive to the end, so the frozen residuals of pruned tokens (the highway) never reach an output;
  - kept_mask[l, b, t] is True when original position t was processed by layer l;
  - conv_states [n_layer, B, ...] (the model's dtype) and ssm_states [n_layer, B, ...] (fp32): each layer's
    recurrent state after its own (compacted) sequence, as `PrunedMambaLM.prefill` returns them, for `StepGraph`.
Work no output needs is not in the graph: a pruned layer gathers the mixer's output y [B, k, D] (before out_proj)
of the tokens the next layer keeps (the dropped tokens' out_proj rows are never formed), and the last layer
projects only the P' protected rows. The choice of the kept tokens is one `simba` SelectKept node (its reference
body: TopK, then TopK of the indices to restore their order) and the row gathers are GatherND.
A layer whose ratio equals the previous one keeps every token, so it is exported without scoring (a dense model
has no scores at all).

Everything above is architecture-free. What a layer's mixer computes (its conv, scan and the `last`/`global` score
as `simba` custom nodes, a pruned layer's scan and score as one node) comes from the architecture's export module,
`family(config).onnx_mixer()` (mixer_mamba1.py, mixer_mamba2.py), which provides
    prefill(mixer, h, fused) -> MixerOut     fused: (criterion, signed, protect) when the scan also scores
    step(mixer, h, conv_state, ssm_state) -> (out [B, d], conv_state, ssm_state)   in standard ONNX ops
    state_shapes(config) -> (conv state dims, ssm state dims) of one layer, without the batch

`StepGraph(token [B], conv_states, ssm_states) -> (logits [B, V], conv_states, ssm_states)` is the dense LM's
`step` (one token through every layer: SIMBA.md §8) in standard ONNX ops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from ..model.lm import RMSNorm
from . import torch_ops  # noqa: F401  (registers torch.ops.simba.*)

EXPORT_CRITERIA = ("last", "global", "delta", "output")


@dataclass
class MixerOut:
    """One layer's prefill: y [B, L, D] (what out_proj takes), its states after the sequence, the fused node's key
    [B, L] (scores, +inf on the protected suffix) when it was asked for, and the step size [B, L, *] (fp32) on
    demand, for the `delta` criterion."""

    y: torch.Tensor
    conv_state: torch.Tensor
    ssm_state: torch.Tensor
    key: torch.Tensor | None
    delta: Callable[[], torch.Tensor]


def export_module(config):
    """The architecture's export module (see the module docstring)."""
    from ..arch import family

    return family(config).onnx_mixer()


def linear_parts(linear: nn.Linear, h: torch.Tensor, sizes) -> list[torch.Tensor]:
    """`linear(h).split(sizes, -1)` as one projection per part, by row blocks of the weight: the same rows without a
    [.., Σ sizes] tensor split into copies in the graph."""
    w, b = linear.weight, linear.bias
    parts, start = [], 0
    for n in sizes:
        parts.append(F.linear(h, w[start:start + n], None if b is None else b[start:start + n]))
        start += n
    return parts


def conv_bias(conv: nn.Conv1d) -> torch.Tensor:
    """The conv's bias in fp32, zeros when it has none (the CausalConv1d node always takes one)."""
    w = conv.weight
    return conv.bias.float() if conv.bias is not None else w.new_zeros(w.shape[0], dtype=torch.float32)


def conv_window(x: torch.Tensor, K: int) -> torch.Tensor:
    """`conv_state_from(x, K)` without a data-dependent branch: the last K-1 rows of x [B, l, C] (zeros before the
    start) as [B, C, K-1]."""
    pad = x.new_zeros(x.shape[0], K - 1, x.shape[2])
    return torch.cat([pad, x[:, -(K - 1):]], dim=1)[:, -(K - 1):].transpose(1, 2)


def _rms_norm(norm, x: torch.Tensor) -> torch.Tensor:
    """`RMSNorm` as x / sqrt(mean(x²) + eps) · w: the form onnxruntime fuses into one SimplifiedLayerNormalization
    node (x · rsqrt(..) exports as Sqrt, Reciprocal and Mul, which it leaves as seven nodes a norm)."""
    xf = x.float()
    return (xf / torch.sqrt(xf.pow(2).mean(-1, keepdim=True) + norm.eps) * norm.weight.float()).to(norm.weight.dtype)


def _add_norm(layer, hidden: torch.Tensor, residual: torch.Tensor | None):
    """`layer.add_norm` (`add_rms_norm_ref`'s arithmetic) with its RMSNorm in the form `_rms_norm` exports."""
    if not isinstance(layer.norm, RMSNorm):
        return layer.add_norm(hidden, residual)
    residual = hidden if residual is None else hidden.to(residual.dtype) + residual
    h = _rms_norm(layer.norm, residual)
    return h, residual.float() if layer.residual_in_fp32 else residual


def _head(dense, stream: torch.Tensor) -> torch.Tensor:
    norm = dense.backbone.norm_f
    return dense.lm_head(_rms_norm(norm, stream) if isinstance(norm, RMSNorm) else norm(stream))


def _rows(x: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """x [B, l, d] at slots [B, k] -> [B, k, d]: GatherND of whole rows with batch_dims=1 (`simba::gather_rows`, a
    standard-op translation; advanced indexing built its batch index with nine nodes per call)."""
    return torch.ops.simba.gather_rows(x, slots)


class PrefillGraph(nn.Module):
    def __init__(self, dense, keep_ratios, *, criterion: str = "last", signed: bool = False, protect: int = 1):
        super().__init__()
        ratios = tuple(float(r) for r in keep_ratios)
        if len(ratios) != dense.config.n_layer:
            raise ConfigError(f"{len(ratios)} keep ratios for a model with {dense.config.n_layer} layers")
        if criterion not in EXPORT_CRITERIA:
            raise ConfigError(f"criterion {criterion!r} cannot be exported to ONNX; use one of {', '.join(EXPORT_CRITERIA)}")
        self.dense = dense
        self.arch = export_module(dense.config)
        self.ratios = ratios
        self.criterion = criterion
        self.signed = bool(signed)
        self.protect = max(1, int(protect))

    def _key(self, score: torch.Tensor) -> torch.Tensor:
        """The score with +inf at the last P slots (always kept), for `delta` and `output` (the fused op keys its own)."""
        cur = score.shape[1]
        protected = torch.arange(cur, device=score.device) >= cur - self.protect
        return torch.where(protected, torch.full_like(score, float("inf")), score.float())

    def _counts(self, n: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
        """k_l = ceil(r_l·n) for every layer at once: [n_layer] int64. Tensor ops, not Python floats: the counts must
        be computed by the graph from the dynamic length (one set of nodes for all layers, not one per layer)."""
        return self._bounded_count(torch.tensor(self.ratios, dtype=torch.float64), n, L)

    def _count(self, r: float, n: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
        """One layer's count as `_counts` forms it (a 0-d int64 tensor)."""
        return self._bounded_count(torch.tensor(r, dtype=torch.float64), n, L)

    def _bounded_count(self, r: torch.Tensor, n: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
        """ceil(r·n) in float64 (rounded to 9 decimals first), clamped to [min(L, P), L].

        min(L, P) is Min(L, P), not L.clamp(max=P): that exports as Clip with an omitted `min` input, and
        onnxruntime's GPU providers keep a node of the count arithmetic on the CPU only when each input is a CPU
        tensor or a small constant (an omitted one is neither). On the GPU the counts then feed SelectKept's host
        input `k` through a device-to-host copy and a wait at every prune point."""
        k = torch.ceil(torch.round(r * n * 1e9) / 1e9).long()
        return torch.minimum(torch.maximum(k, torch.minimum(L, torch.tensor(self.protect, dtype=L.dtype))), L)

    def _slots(self, key: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """[B, k] slots of the top-k keys (the last P protected), in original order: one `SelectKept` node."""
        k = k.item()
        torch._check(k >= 1)
        torch._check(k <= key.shape[1])
        return torch.ops.simba.select_kept(key, k, self.protect)

    def forward(self, input_ids: torch.Tensor):
        bsz, L = input_ids.shape
        n = torch.scalar_tensor(L, dtype=torch.float64)
        L_t = n.long()
        layers = self.dense.backbone.layers
        hidden, residual = self.dense.backbone.embedding(input_ids), None
        pos = torch.arange(L, device=input_ids.device).expand(bsz, L)
        kept, conv_states, ssm_states = [], [], []
        counts = self._counts(n, L_t) if any(r != 1.0 for r in self.ratios) else None
        for i, layer in enumerate(layers):
            kept.append(torch.zeros(bsz, L, dtype=torch.bool, device=input_ids.device).scatter(1, pos, True))
            h, residual = _add_norm(layer, hidden, residual)
            mixer = layer.mixer
            last = i + 1 == len(layers)
            prune = not last and self.ratios[i + 1] != self.ratios[i]
            fused = prune and self.criterion in torch_ops.KERNEL_CRITERIA  # the scan and the score in one node
            res = self.arch.prefill(mixer, h, (self.criterion, self.signed, self.protect) if fused else None)
            y = res.y
            conv_states.append(res.conv_state)
            ssm_states.append(res.ssm_state)
            if last:  # only the protected suffix reaches an output
                hidden, residual = mixer.out_proj(y[:, -self.protect:]), residual[:, -self.protect:]
            elif not prune:
                hidden = mixer.out_proj(y)
            else:
                out = mixer.out_proj(y) if self.criterion == "output" else None
                if self.criterion == "delta":
                    key = self._key(torch.linalg.vector_norm(res.delta(), dim=-1))
                elif self.criterion == "output":
                    key = self._key(out.float().clamp_min(0).sum(dim=-1))
                else:
                    key = res.key
                slots = self._slots(key, counts[i + 1])
                hidden = _rows(out, slots) if out is not None else mixer.out_proj(_rows(y, slots))
                residual = _rows(residual, slots)
                pos = torch.gather(pos, 1, slots)
        stream = hidden.to(residual.dtype) + residual
        logits = _head(self.dense, stream)
        return logits, torch.stack(kept), torch.stack(conv_states), torch.stack(ssm_states)


class StepGraph(nn.Module):
    """The dense LM's `step` over stacked states: token [B] -> logits [B, V] and the states after it (SIMBA.md §8)."""

    def __init__(self, dense):
        super().__init__()
        self.dense = dense
        self.arch = export_module(dense.config)

    def forward(self, token: torch.Tensor, conv_states: torch.Tensor, ssm_states: torch.Tensor):
        hidden, residual = self.dense.backbone.embedding(token), None
        new_conv, new_ssm = [], []
        for i, layer in enumerate(self.dense.backbone.layers):
            h, residual = _add_norm(layer, hidden, residual)
            hidden, cs, ss = self.arch.step(layer.mixer, h, conv_states[i], ssm_states[i])
            new_conv.append(cs)
            new_ssm.append(ss)
        logits = _head(self.dense, hidden.to(residual.dtype) + residual)
        return logits, torch.stack(new_conv), torch.stack(new_ssm)
