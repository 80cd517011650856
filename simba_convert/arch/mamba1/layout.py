"""Mamba-1 (and FalconMamba) checkpoints: reading config.json and the tensors a config implies. Torch-free.

Two layouts hold the same tensors (io/layout.py describes them): `mamba_ssm` (d_model/n_layer/ssm_cfg) and `hf`
(model_type "mamba" or "falcon_mamba"). FalconMamba's B/C/dt norms have no weights, so its tensors are Mamba-1's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...errors import CheckpointError, SimbaError
from ...model.config import MambaConfig
from .. import SUPPORTED


def parse_config(raw: Any, where: Path | str) -> tuple[str, MambaConfig]:
    """config.json contents (a dict) -> (layout, MambaConfig); a one-line CheckpointError naming `where` otherwise."""
    try:
        if "model_type" in raw:
            return "hf", MambaConfig.from_hf(raw)
        return "mamba_ssm", MambaConfig.from_mamba_ssm(raw)
    except SimbaError as e:
        tail = "" if "supported" in str(e) else f"; {SUPPORTED}"
        raise CheckpointError(f"{where}: {e}{tail}") from None
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where} has a malformed Mamba config ({e}); {SUPPORTED}") from None


def expected_shapes(cfg: MambaConfig) -> dict[str, tuple[int, ...]]:
    """The canonical tensor names and shapes a checkpoint of `cfg` holds (lm_head.weight included)."""
    d, D, N, R, K, V = cfg.d_model, cfg.d_inner, cfg.d_state, cfg.dt_rank, cfg.d_conv, cfg.padded_vocab_size
    shapes: dict[str, tuple[int, ...]] = {"backbone.embedding.weight": (V, d)}

    def norm(prefix: str):
        shapes[f"{prefix}.weight"] = (d,)
        if not cfg.rms_norm:
            shapes[f"{prefix}.bias"] = (d,)

    for i in range(cfg.n_layer):
        p = f"backbone.layers.{i}"
        norm(f"{p}.norm")
        m = f"{p}.mixer"
        shapes[f"{m}.A_log"] = (D, N)
        shapes[f"{m}.D"] = (D,)
        shapes[f"{m}.in_proj.weight"] = (2 * D, d)
        if cfg.bias:
            shapes[f"{m}.in_proj.bias"] = (2 * D,)
        shapes[f"{m}.conv1d.weight"] = (D, 1, K)
        if cfg.conv_bias:
            shapes[f"{m}.conv1d.bias"] = (D,)
        shapes[f"{m}.x_proj.weight"] = (R + 2 * N, D)
        shapes[f"{m}.dt_proj.weight"] = (D, R)
        shapes[f"{m}.dt_proj.bias"] = (D,)
        shapes[f"{m}.out_proj.weight"] = (d, D)
        if cfg.bias:
            shapes[f"{m}.out_proj.bias"] = (d,)
    norm("backbone.norm_f")
    shapes["lm_head.weight"] = (V, d)
    return shapes


def parameter_count(cfg: MambaConfig) -> int:
    """Number of parameters, counting a tied LM head once."""
    from .. import count_parameters

    return count_parameters(expected_shapes(cfg), cfg.tie_embeddings)


def summary(cfg: MambaConfig) -> dict[str, Any]:
    """The config's fields and the derived sizes `simba-convert info` shows."""
    return cfg.to_dict() | {"d_inner": cfg.d_inner, "padded_vocab_size": cfg.padded_vocab_size}


def describe(cfg: MambaConfig) -> str:
    """One line for `simba-convert info`."""
    name = "Falcon-Mamba (Mamba-1 with B/C/dt RMSNorm)" if cfg.bcdt_rms else "Mamba-1"
    return (f"{name}, {cfg.n_layer} layers, d_model {cfg.d_model}, d_inner {cfg.d_inner}, d_state {cfg.d_state}, "
            f"d_conv {cfg.d_conv}, dt_rank {cfg.dt_rank}, vocab {cfg.vocab_size} (padded {cfg.padded_vocab_size}), "
            f"{'RMSNorm' if cfg.rms_norm else 'LayerNorm'}, {'tied' if cfg.tie_embeddings else 'untied'} head")
