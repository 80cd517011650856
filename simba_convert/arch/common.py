"""Config pieces the architectures share (torch-free)."""

from __future__ import annotations

import dataclasses
from typing import Any


class LMConfigMixin:
    """What every architecture's frozen config dataclass derives the same way."""

    @property
    def padded_vocab_size(self) -> int:
        m = self.pad_vocab_size_multiple
        return self.vocab_size + (-self.vocab_size) % m

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def mamba_ssm_config(cfg, ssm: dict[str, Any]) -> dict[str, Any]:
    """mamba_ssm's config.json (MambaLMHeadModel: no attention layers, fused add + norm) for a config with the
    fields every architecture here has, around its layer's `ssm_cfg`."""
    out = {
        "d_model": cfg.d_model,
        "d_intermediate": 0,
        "n_layer": cfg.n_layer,
        "vocab_size": cfg.vocab_size,
        "ssm_cfg": ssm,
        "attn_layer_idx": [],
        "attn_cfg": {},
        "rms_norm": cfg.rms_norm,
        "residual_in_fp32": cfg.residual_in_fp32,
        "fused_add_norm": True,
        "pad_vocab_size_multiple": cfg.pad_vocab_size_multiple,
        "tie_embeddings": cfg.tie_embeddings,
    }
    if cfg.norm_eps != 1e-5:
        out["norm_epsilon"] = cfg.norm_eps
    return out
