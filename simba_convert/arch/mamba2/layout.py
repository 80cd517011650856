"""Mamba-2 checkpoints on disk: reading config.json, the tensors a config implies, and (through the generic
io/checkpoint.py) reading a directory of either layout into a `Mamba2LM` and writing one back.

Two layouts hold the same tensors (config.py says how their configs differ):
- `mamba_ssm`: config.json with d_model/n_layer/ssm_cfg {"layer": "Mamba2", ...}; names `backbone.embedding.weight`,
  `backbone.layers.N.{norm, mixer.in_proj, mixer.conv1d, mixer.dt_bias, mixer.A_log, mixer.D, mixer.norm,
  mixer.out_proj}`, `backbone.norm_f.weight`, `lm_head.weight`.
- `hf` (transformers, model_type "mamba2"): the same names but `backbone.embeddings.weight`.
Weights are `model.safetensors` (maybe sharded with an index) or `pytorch_model.bin` (read with
torch.load(weights_only=True) only). Module import is torch-free; the loader imports torch when called.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...errors import CheckpointError, SimbaError
from ...io.layout import CONFIG
from .. import detect_architecture
from .config import Mamba2Config


def parse_config(raw: Any, where: Path | str = CONFIG) -> tuple[str, Mamba2Config]:
    """config.json contents -> (layout, Mamba2Config); a one-line CheckpointError naming `where` otherwise."""
    try:
        arch = detect_architecture(raw)
        if arch != "mamba2":
            raise CheckpointError(f"found a {arch} model; this loader reads Mamba-2 checkpoints only")
        if "model_type" in raw:
            return "hf", Mamba2Config.from_hf(raw)
        return "mamba_ssm", Mamba2Config.from_mamba_ssm(raw)
    except SimbaError as e:
        raise CheckpointError(f"{where}: {e}") from None
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where} has a malformed Mamba-2 config ({e})") from None


def expected_shapes(cfg: Mamba2Config) -> dict[str, tuple[int, ...]]:
    """The canonical tensor names and shapes a checkpoint of `cfg` holds (lm_head.weight included)."""
    d, Di, H, K, V = cfg.d_model, cfg.d_inner, cfg.nheads, cfg.d_conv, cfg.padded_vocab_size
    shapes: dict[str, tuple[int, ...]] = {"backbone.embedding.weight": (V, d)}

    def norm(prefix: str):
        shapes[f"{prefix}.weight"] = (d,)
        if not cfg.rms_norm:
            shapes[f"{prefix}.bias"] = (d,)

    for i in range(cfg.n_layer):
        p = f"backbone.layers.{i}"
        norm(f"{p}.norm")
        m = f"{p}.mixer"
        shapes[f"{m}.in_proj.weight"] = (cfg.d_in_proj, d)
        if cfg.bias:
            shapes[f"{m}.in_proj.bias"] = (cfg.d_in_proj,)
        shapes[f"{m}.conv1d.weight"] = (cfg.conv_dim, 1, K)
        if cfg.conv_bias:
            shapes[f"{m}.conv1d.bias"] = (cfg.conv_dim,)
        shapes[f"{m}.dt_bias"] = (H,)
        shapes[f"{m}.A_log"] = (H,)
        shapes[f"{m}.D"] = (Di if cfg.D_has_hdim else H,)
        if cfg.gated_rmsnorm:
            shapes[f"{m}.norm.weight"] = (Di,)
        shapes[f"{m}.out_proj.weight"] = (d, Di)
        if cfg.bias:
            shapes[f"{m}.out_proj.bias"] = (d,)
    norm("backbone.norm_f")
    shapes["lm_head.weight"] = (V, d)
    return shapes


def parameter_count(cfg: Mamba2Config) -> int:
    """Number of parameters, counting a tied LM head once."""
    from .. import count_parameters

    return count_parameters(expected_shapes(cfg), cfg.tie_embeddings)


def summary(cfg: Mamba2Config) -> dict[str, Any]:
    """The config's fields and the derived sizes `simba-convert info` shows."""
    return cfg.to_dict() | {"d_inner": cfg.d_inner, "nheads": cfg.nheads, "conv_dim": cfg.conv_dim,
                            "padded_vocab_size": cfg.padded_vocab_size}


def describe(cfg: Mamba2Config) -> str:
    """One line for `simba-convert info`."""
    norm = ("gated RMSNorm " + ("before" if cfg.norm_before_gate else "after") + " the gate") if cfg.gated_rmsnorm \
        else "no gated norm"
    return (f"Mamba-2, {cfg.n_layer} layers, d_model {cfg.d_model}, d_inner {cfg.d_inner} ({cfg.nheads} heads of "
            f"{cfg.headdim}), {cfg.ngroups} group{'s' if cfg.ngroups > 1 else ''} of d_state {cfg.d_state}, "
            f"d_conv {cfg.d_conv}, chunk {cfg.chunk_size}, vocab {cfg.vocab_size} (padded {cfg.padded_vocab_size}), "
            f"{'RMSNorm' if cfg.rms_norm else 'LayerNorm'}, {norm}, {'tied' if cfg.tie_embeddings else 'untied'} head")


# --- reading and writing: the generic checkpoint I/O (io/checkpoint.py), which dispatches on the architecture ---
def load_mamba2(path_or_dir, device="cpu", dtype=None):
    """Read a local Mamba-2 checkpoint directory (either layout) into a Mamba2LM in eval mode; a CheckpointError
    for any other architecture. Strict as `io.checkpoint.load_dense` (which this is, for Mamba-2 only): every
    tensor the config implies with its exact shape and nothing else, finite values, a tied head equal to the
    embedding. dtype: None (float32), "auto" (as stored), a name or a torch dtype."""
    from ...io.checkpoint import load_dense
    from ...io.layout import inspect_checkpoint

    info = inspect_checkpoint(path_or_dir)
    if info.architecture != "mamba2":
        raise CheckpointError(f"{info.path / CONFIG}: found a {info.architecture} model; this loader reads Mamba-2 "
                              "checkpoints only")
    return load_dense(info, device=device, dtype=dtype)


def write_mamba2(model, dest, *, layout: str = "mamba_ssm", fmt: str = "safetensors") -> Path:
    """Write `model` (a Mamba2LM) into the directory `dest` (created if needed; no atomicity, no tokenizer):
    config.json of `layout` and model.safetensors (a tied head omitted) or pytorch_model.bin (a tied head saved as
    a second name of the embedding, as mamba_ssm does)."""
    from ...io.checkpoint import write_checkpoint

    dest = Path(dest)
    write_checkpoint(model, dest, layout=layout, weight_format=fmt, create=True)
    return dest
