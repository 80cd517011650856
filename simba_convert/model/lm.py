"""What every architecture's language model shares: norms, the pre-norm residual block, and the stack
(embedding, blocks, final norm, head) with its forward, prefill and decoding step loops, written once.

An architecture supplies its mixer: `mixer(h, return_state=, return_internals=)` on h [B, L, d], `mixer.step(h,
conv_state, ssm_state)` on h [B, d], and a `backend` attribute (model/mamba.py, arch/mamba2/model.py).
Shapes: input_ids [B, L]; hidden and residual [B, L, d]; logits [B, L, V].
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import BackendError
from ..ops.backend import resolve_model
from ..ops.rms_norm import add_rms_norm


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight.float()
        return y.to(self.weight.dtype)


class LayerNorm(nn.LayerNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.float(), self.normalized_shape, self.weight.float(), self.bias.float(), self.eps)
        return y.to(self.weight.dtype)


def make_norm(cfg, d: int) -> nn.Module:
    return RMSNorm(d, cfg.norm_eps) if cfg.rms_norm else LayerNorm(d, eps=cfg.norm_eps)


class PreNormBlock(nn.Module):
    """Pre-norm residual block: residual = hidden + residual; hidden = mixer(norm(residual))."""

    def __init__(self, cfg, mixer: nn.Module):
        super().__init__()
        self.residual_in_fp32 = cfg.residual_in_fp32
        self.norm = make_norm(cfg, cfg.d_model)
        self.mixer = mixer

    def add_norm(self, hidden: torch.Tensor, residual: torch.Tensor | None):
        """(norm(hidden + residual), hidden + residual), the residual in fp32 if the config asks; one fused Triton
        pass with RMSNorm on CUDA (also on the `cuda` backend: ours measured faster than mamba_ssm's)."""
        if isinstance(self.norm, RMSNorm):
            kind = resolve_model(self.mixer.backend, hidden.device)
            return add_rms_norm(hidden, residual, self.norm.weight, self.norm.eps, self.residual_in_fp32,
                                backend="auto" if kind == "cuda" else kind)
        residual = hidden if residual is None else hidden.to(residual.dtype) + residual
        h = self.norm(residual)
        if self.residual_in_fp32:
            residual = residual.float()
        return h, residual


class Backbone(nn.Module):
    def __init__(self, cfg, block):
        super().__init__()
        self.embedding = nn.Embedding(cfg.padded_vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(block(cfg) for _ in range(cfg.n_layer))
        self.norm_f = make_norm(cfg, cfg.d_model)


class StackedLM(nn.Module):
    """Embedding, n pre-norm blocks, final norm, head (tied to the embedding if the config says so).

    Subclasses set `block` (a PreNormBlock factory taking the config) and `backends` (what set_backend accepts)."""

    block: type
    backends: tuple[str, ...]
    graphed_step = True  # generate() replays the step as a CUDA graph (model/generate.py)

    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        self.backbone = Backbone(cfg, self.block)
        self.lm_head = nn.Linear(cfg.d_model, cfg.padded_vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.backbone.embedding.weight

    @property
    def device(self) -> torch.device:
        return self.backbone.embedding.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.backbone.embedding.weight.dtype

    def set_backend(self, backend: str):
        """Run every layer on `backend` (one of the class's `backends`; ops.backend)."""
        if backend not in self.backends:
            raise BackendError(f"unknown backend {backend!r} for {type(self).__name__}; choose one of "
                               f"{', '.join(self.backends)}", option="backend")
        for layer in self.backbone.layers:
            layer.mixer.backend = backend
        return self

    def head(self, residual: torch.Tensor) -> torch.Tensor:
        """Final norm and LM head on a residual stream [..., d] -> logits [..., V]."""
        return self.lm_head(self.backbone.norm_f(residual))

    def forward(self, input_ids: torch.Tensor, *, return_state: bool = False, num_last: int | None = None):
        """input_ids [B, L] -> logits [B, L, V] (and per-layer (conv, ssm) states when return_state).

        num_last=n computes the head on the last n positions only: logits [B, n, V].
        """
        hidden, residual = self.backbone.embedding(input_ids), None
        states = []
        for layer in self.backbone.layers:
            h, residual = layer.add_norm(hidden, residual)
            if return_state:
                hidden, st = layer.mixer(h, return_state=True)
                states.append(st)
            else:
                hidden = layer.mixer(h)
        stream = hidden.to(residual.dtype) + residual
        logits = self.head(stream if num_last is None else stream[:, stream.shape[1] - num_last:])
        return (logits, states) if return_state else logits

    def prefill(self, input_ids: torch.Tensor):
        """Run the prompt [B, L]; return last-position logits [B, V] and the per-layer recurrent states."""
        logits, states = self.forward(input_ids, return_state=True, num_last=1)
        return logits[:, -1], states

    @torch.no_grad()
    def step(self, token: torch.Tensor, states: list):
        """One decoding step: token [B] -> logits [B, V], new states."""
        hidden, residual = self.backbone.embedding(token), None
        new_states = []
        for layer, (conv_state, ssm_state) in zip(self.backbone.layers, states):
            h, residual = layer.add_norm(hidden, residual)
            hidden, cs, ss = layer.mixer.step(h, conv_state, ssm_state)
            new_states.append((cs, ss))
        return self.head(hidden.to(residual.dtype) + residual), new_states

    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, **kw) -> torch.Tensor:
        from .generate import generate

        return generate(self, input_ids, max_new_tokens, **kw)
