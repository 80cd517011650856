"""Mamba-2 (mamba_ssm's Mamba2 layer, transformers' Mamba2ForCausalLM): config, model, checkpoint layout, FLOPs.

What generic code dispatches to (simba_convert/arch/__init__.py): parse_config, expected_shapes, parameter_count,
summary, describe (layout.py), layer_parts, score_flops (flops.py), model_class, onnx_mixer. The config, layout
and FLOPs are torch-free; the model, the loader and the export are imported on first use.
"""

from .config import Mamba2Config
from .flops import layer_parts, score_flops
from .layout import describe, expected_shapes, parameter_count, parse_config, summary


def model_class():
    """The dense LM class: `model_class()(config)` builds it."""
    from .model import Mamba2LM

    return Mamba2LM


def onnx_mixer():
    """The module that writes this architecture's layers into the exported ONNX graphs (export/graph.py)."""
    from ...export import mixer_mamba2

    return mixer_mamba2


from ..._lazy import lazy_attributes  # noqa: E402

_LAZY = {
    "Mamba2LM": ("simba_convert.arch.mamba2.model", "Mamba2LM"),
    "Mamba2Mixer": ("simba_convert.arch.mamba2.model", "Mamba2Mixer"),
    "Mamba2Block": ("simba_convert.arch.mamba2.model", "Mamba2Block"),
    "Mamba2Internals": ("simba_convert.arch.mamba2.model", "Mamba2Internals"),
    "load_mamba2": ("simba_convert.arch.mamba2.layout", "load_mamba2"),
    "write_mamba2": ("simba_convert.arch.mamba2.layout", "write_mamba2"),
}

__all__ = ["Mamba2Config", "describe", "expected_shapes", "layer_parts", "model_class", "onnx_mixer",
           "parameter_count", "parse_config", "score_flops", "summary", *_LAZY]


__getattr__, __dir__ = lazy_attributes('simba_convert.arch.mamba2', _LAZY, globals())
