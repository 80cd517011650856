"""Which weights a fine-tune trains, and the training state of the model while it does.

`training_state` is a context manager: inside it the chosen parameters (and only they) require grad
and are held in fp32 (master weights: a small update to a bf16 weight would round away), LoRA adapters
are attached when asked, and the pruned model recomputes its mixers in the backward pass when
checkpointing is on. On exit every parameter gets back its dtype and requires_grad flag, adapters are
merged, and the model is back in eval mode.
"""

from __future__ import annotations

import re
from contextlib import contextmanager

import torch

from ..errors import ConfigError
from . import lora

# Norm weights (and LayerNorm biases; Mamba-2's gated mixer.norm too), the delta path (Mamba-1: x_proj, dt_proj;
# Mamba-2, whose dt comes out of in_proj: dt_bias) and the SSM's A_log and D.
_NORMS_DT_XPROJ = re.compile(
    r"(^|\.)(norm|norm_f)\.(weight|bias)$|\.mixer\.(x_proj|dt_proj)\.(weight|bias)$|\.mixer\.(A_log|D|dt_bias)$"
)


def select(dense, which: str) -> list[tuple[str, torch.nn.Parameter]]:
    """(name, parameter) of `dense` (a dense LM of any architecture) that `which` trains: "all" or "norms_dt_xproj"
    (LoRA adds its own)."""
    named = list(dense.named_parameters())  # a tied lm_head appears once, under the embedding's name
    if which == "all":
        return named
    if which == "norms_dt_xproj":
        return [(n, p) for n, p in named if _NORMS_DT_XPROJ.search(n)]
    if which == "lora":
        return []
    raise ConfigError(f"unknown trainable set {which!r}; choose one of all, norms_dt_xproj, lora")


@contextmanager
def training_state(model, cfg):
    """Yield the list of trainable parameters of the pruned `model`, set up as described in the module docstring."""
    dense = model.dense
    flags = {id(p): p.requires_grad for p in dense.parameters()}
    was_training = model.training
    chosen = [p for _, p in select(dense, cfg.trainable)]
    dtypes = [p.dtype for p in chosen]
    adapters = []
    ok = False
    try:
        for p in dense.parameters():
            p.requires_grad_(False)
        if cfg.trainable == "lora":
            adapters = lora.attach(dense, cfg.lora_rank, cfg.lora_alpha, cfg.seed)
            chosen = [p for _, _, a in adapters for p in (a.lora_A, a.lora_B)]
            dtypes = [p.dtype for p in chosen]
        for p in chosen:
            # .data keeps the Parameter object, so ties (embedding = lm_head) and the optimizer see one tensor
            p.data = p.data.float()
            p.requires_grad_(True)
        model.checkpoint_layers = cfg.checkpointing
        model.train()
        yield chosen
        ok = True
    finally:
        for p, dt in zip(chosen, dtypes):
            p.requires_grad_(False)
            p.data = p.data.to(dt)
        if adapters:
            lora.detach(adapters, merge=ok)
        for p in dense.parameters():
            p.requires_grad_(flags.get(id(p), False))
        model.checkpoint_layers = False
        model.train(was_training)


def count(params) -> int:
    return sum(p.numel() for p in params)


def low_precision(module) -> bool:
    """True when any weight of `module` is stored in a 16-bit float type."""
    return any(p.dtype in (torch.bfloat16, torch.float16) for p in module.parameters())
