"""A minimal LoRA for the mixer's in_proj and out_proj, merged back into the weights after training.

W x + (alpha/r) · B A x with A [r, in] (small random), B [out, r] (zeros): the adapted model starts
exactly equal to the original one. Merging writes W + (alpha/r) · B A into the base weight (computed
in fp32), so the fine-tuned checkpoint has the original layout and no adapter tensors.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

TARGETS = ("in_proj", "out_proj")


class LoRALinear(nn.Module):
    """nn.Linear `base` (frozen) plus a rank-r update; x [..., in] -> [..., out]."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, generator: torch.Generator):
        super().__init__()
        self.base = base
        self.scale = alpha / rank
        # A ~ U(-1/sqrt(in), 1/sqrt(in)) as nn.Linear's default; drawn on the CPU so every device gets the same values.
        bound = 1.0 / math.sqrt(base.in_features)
        a = (torch.rand(rank, base.in_features, generator=generator, dtype=torch.float32) * 2 - 1) * bound
        self.lora_A = nn.Parameter(a.to(base.weight.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        update = F.linear(F.linear(x.to(self.lora_A.dtype), self.lora_A), self.lora_B)
        return out + (self.scale * update).to(out.dtype)

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """The base layer with the update folded into its weight (in place), in the base's dtype."""
        w = self.base.weight
        w.copy_((w.float() + self.scale * (self.lora_B.float() @ self.lora_A.float())).to(w.dtype))
        return self.base


def attach(dense, rank: int, alpha: float, seed: int) -> list[tuple[nn.Module, str, LoRALinear]]:
    """Wrap every mixer's in_proj and out_proj of `dense` (a MambaLM or Mamba2LM: both have them) in a LoRALinear;
    returns the adapters."""
    g = torch.Generator().manual_seed(seed)
    adapters = []
    for layer in dense.backbone.layers:
        for name in TARGETS:
            adapter = LoRALinear(getattr(layer.mixer, name), rank, alpha, g)
            setattr(layer.mixer, name, adapter)
            adapters.append((layer.mixer, name, adapter))
    return adapters


def detach(adapters, *, merge: bool) -> None:
    """Put the plain nn.Linear layers back, with the LoRA update merged into them when `merge`."""
    for owner, name, adapter in adapters:
        setattr(owner, name, adapter.merged() if merge else adapter.base)
