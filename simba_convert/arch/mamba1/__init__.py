"""Mamba-1 and FalconMamba (Mamba-1 with weightless B/C/dt norms): the architecture's entry points for generic code.

The model and its config live where they did before the architecture seam, in simba_convert/model/ (config.py,
mamba.py); this package holds what generic code dispatches to: reading configs and tensor shapes (layout.py)
and the FLOPs model (flops.py). Torch-free; `model_class` imports the model, `onnx_mixer` the export.
"""

from .flops import layer_parts, score_flops
from .layout import describe, expected_shapes, parameter_count, parse_config, summary

__all__ = ["describe", "expected_shapes", "layer_parts", "model_class", "onnx_mixer", "parameter_count",
           "parse_config", "score_flops", "summary"]


def model_class():
    """The dense LM class: `model_class()(config)` builds it."""
    from ...model.mamba import MambaLM

    return MambaLM


def onnx_mixer():
    """The module that writes this architecture's layers into the exported ONNX graphs (export/graph.py)."""
    from ...export import mixer_mamba1

    return mixer_mamba1
