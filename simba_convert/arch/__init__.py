"""Architectures, one folder each (`arch/<name>/`), telling them apart from a config.json, and the one place generic
code (io, pruning, calibration, pipeline, cli) finds an architecture's code.

The seam: generic code never branches on the architecture. It asks `family(name or config)` for the architecture's
module, which provides
    parse_config(raw, where) -> (layout, config)   config.json contents -> a frozen config (one-line CheckpointError)
    expected_shapes(config), parameter_count(config)   the tensors a checkpoint holds, the parameter count
    summary(config) -> dict, describe(config) -> str   what `simba-convert info` shows
    layer_parts(config, n) -> dict, score_flops(config, criterion) -> int   the FLOPs model (pruning/flops.py)
    model_class() -> the dense LM class, built as model_class()(config)
    onnx_mixer() -> the module of simba_convert/export/ that writes its layers into ONNX graphs (export/graph.py)
and configs carry their own name (`config.architecture`). The dense LM classes share one surface, which is all the
pruned model, calibration, evaluation and fine-tuning use: `backbone.embedding`, `backbone.layers[i].add_norm`,
`backbone.layers[i].mixer(h, return_state=, return_internals=)` whose internals have `score(...)` (the impact score
of that architecture), `head`, `step`, `prefill`, `config.n_layer`, `config.padded_vocab_size`.

Mamba-1 and FalconMamba share `arch/mamba1/` (their model and config live in `simba_convert/model/`); Mamba-2 is
`arch/mamba2/`. Torch-free: nothing here or in the families' `__init__` imports torch.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from ..errors import CheckpointError, ConfigError

ARCHITECTURES = ("mamba1", "mamba2", "falcon_mamba")
LABELS = {"mamba1": "Mamba-1", "mamba2": "Mamba-2", "falcon_mamba": "Falcon-Mamba"}
_FAMILIES = {"mamba1": "mamba1", "falcon_mamba": "mamba1", "mamba2": "mamba2"}

# transformers model types of Mamba/attention (or Mamba/MoE) hybrids: recognised so that the error says why.
HYBRID_MODEL_TYPES = ("nemotron_h", "granitemoehybrid", "zamba", "zamba2", "falcon_h1", "jamba", "bamba")
_MODEL_TYPES = {"mamba": "mamba1", "mamba2": "mamba2", "falcon_mamba": "falcon_mamba"}
_SSM_LAYERS = {"Mamba1": "mamba1", "Mamba2": "mamba2"}
SUPPORTED = (
    "supported: Mamba-1 (mamba_ssm layout or model_type 'mamba'), Mamba-2 (ssm_cfg.layer 'Mamba2' or model_type "
    "'mamba2') and Falcon-Mamba (model_type 'falcon_mamba')"
)


def detect_architecture(config: Any) -> str:
    """config.json contents -> "mamba1" | "mamba2" | "falcon_mamba"; a one-line CheckpointError otherwise.

    The transformers layout is told by `model_type`; the mamba_ssm layout (d_model, n_layer, ssm_cfg) by
    `ssm_cfg.layer` (absent: Mamba-1). Hybrids with attention layers are refused by name. A sparsified checkpoint's
    config (model_type "simba", `format.mark`) is read as the dense config it was made from.
    """
    if not isinstance(config, dict):
        raise CheckpointError(f"config.json holds a JSON {type(config).__name__}, not a model config; {SUPPORTED}")
    from ..format import base_config  # here: format imports this package

    config = base_config(config)
    model_type = config.get("model_type")
    if model_type in HYBRID_MODEL_TYPES:
        raise CheckpointError(
            f"found a hybrid Mamba/attention model (model_type {model_type!r}); hybrids are not supported yet; "
            f"{SUPPORTED}")
    if config.get("attn_layer_idx"):
        raise CheckpointError(
            f"found a hybrid Mamba/attention model (attention at layers {list(config['attn_layer_idx'])}); "
            f"hybrids are not supported yet; {SUPPORTED}")
    if model_type is not None:
        if model_type in _MODEL_TYPES:
            return _MODEL_TYPES[model_type]
        raise CheckpointError(f"found model_type {model_type!r}, not a Mamba model; {SUPPORTED}")
    if "d_model" in config and "n_layer" in config:
        ssm_cfg = config.get("ssm_cfg") or {}
        if not isinstance(ssm_cfg, dict):
            raise CheckpointError(f"ssm_cfg is a JSON {type(ssm_cfg).__name__}, not an object; {SUPPORTED}")
        layer = ssm_cfg.get("layer", "Mamba1")
        if layer in _SSM_LAYERS:
            return _SSM_LAYERS[layer]
        raise CheckpointError(f"found a mamba_ssm checkpoint of layer {layer!r} (ssm_cfg.layer); {SUPPORTED}")
    raise CheckpointError(f"not a Mamba config (no model_type, no d_model/n_layer); {SUPPORTED}")


def family(arch: Any) -> ModuleType:
    """The module of an architecture's code (see the module docstring), by name or from a config object."""
    name = getattr(arch, "architecture", arch)
    if name not in _FAMILIES:
        raise ConfigError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}")
    return importlib.import_module(f"{__name__}.{_FAMILIES[name]}")


def count_parameters(shapes: dict[str, tuple[int, ...]], tie_embeddings: bool) -> int:
    """Parameters of a checkpoint with these tensor shapes, counting a tied LM head once."""
    import math

    return sum(math.prod(s) for name, s in shapes.items() if not (tie_embeddings and name == "lm_head.weight"))
