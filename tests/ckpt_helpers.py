"""Tiny random Mamba checkpoints for the I/O and dense-model tests, written by transformers itself or
in the mamba_ssm layout (config.json from MambaConfig.to_mamba_ssm, pytorch_model.bin via torch.save)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from simba_convert.model.config import MambaConfig

# (hidden, state, layers, conv, vocab, tied): odd sizes on purpose
TINY_CONFIGS = [
    (24, 5, 1, 3, 101, True),
    (40, 16, 3, 4, 257, True),
    (40, 5, 3, 4, 104, False),
]


def hf_model(hidden=24, state=5, layers=2, conv=3, vocab=101, tied=True, seed=0):
    """A transformers MambaForCausalLM whose every parameter is random (norm weights and D included),
    so that a tensor loaded into the wrong place changes the logits."""
    from transformers import MambaConfig as HFConfig, MambaForCausalLM

    torch.manual_seed(seed)
    cfg = HFConfig(
        vocab_size=vocab, hidden_size=hidden, state_size=state, num_hidden_layers=layers,
        conv_kernel=conv, tie_word_embeddings=tied,
    )
    model = randomize_weights(MambaForCausalLM(cfg).eval(), seed + 1)
    return model


def hf_logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits


def write_mamba_ssm(hf, out: Path, *, fmt: str = "bin", vocab_size: int | None = None,
                    pad_multiple: int | None = None) -> Path:
    """Write `hf`'s weights in the mamba_ssm layout: original names, lm_head included (shared storage)."""
    cfg = MambaConfig.from_hf(hf.config.to_dict())
    if vocab_size is not None:
        cfg = MambaConfig(**{**cfg.to_dict(), "vocab_size": vocab_size, "pad_vocab_size_multiple": pad_multiple})
        assert cfg.padded_vocab_size == hf.config.vocab_size
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg.to_mamba_ssm()))
    state = {k.replace("backbone.embeddings.", "backbone.embedding."): v for k, v in hf.state_dict().items()}
    if fmt == "bin":
        torch.save(state, out / "pytorch_model.bin")
    else:
        from safetensors.torch import save_file

        if cfg.tie_embeddings:
            state = {k: v for k, v in state.items() if k != "lm_head.weight"}
        save_file({k: v.contiguous() for k, v in state.items()}, str(out / "model.safetensors"))
    return out


def listing(root: Path) -> set[str]:
    """Every path under root, for checking that a failed call wrote nothing."""
    return {os.path.relpath(os.path.join(d, f), root) for d, ds, fs in os.walk(root) for f in ds + fs}


def randomize_weights(model, seed: int, *, spread_a: bool = False, dt_bias: tuple[float, float] | None = None):
    """Every parameter of `model` random, so that a tensor loaded into the wrong place changes the logits: norm
    weights and D near 1, embeddings and head N(0, 1), other matrices N(0, 1/fan-in); A_log perturbed by N(0, 0.1)
    or, with spread_a, set so that A spreads over -(0.5 .. 4.5); dt_bias = (scale, shift) sets the step-size biases
    (`dt_bias`, `dt_proj.bias`) to scale·N(0, 1) + shift, so that the step sizes and the token scores differ."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if name.endswith(("norm.weight", "norm_f.weight", ".D")):
                p.copy_(1 + 0.2 * noise)
            elif name.endswith("A_log"):
                if spread_a:
                    p.copy_(torch.log(0.5 + 4 * torch.rand(p.shape, generator=g)))
                else:
                    p.add_(0.1 * noise)
            elif dt_bias is not None and name.endswith(("dt_bias", "dt_proj.bias")):
                p.copy_(dt_bias[0] * noise + dt_bias[1])
            elif name.endswith(("embeddings.weight", "embedding.weight", "lm_head.weight")):
                p.copy_(noise)
            else:
                p.copy_(noise / p.shape[-1] ** 0.5)
    return model
