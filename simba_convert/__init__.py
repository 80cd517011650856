"""simba-convert: token-pruned (Simba) Mamba models (Mamba-1, FalconMamba, Mamba-2) from dense checkpoints.

`import simba_convert` is light (no torch); the API below is imported on first use.
"""

from ._version import __version__

from ._lazy import lazy_attributes  # noqa: E402

_LAZY = {
    "load": ("simba_convert.io.load", "load"),
    "load_with_tokenizer": ("simba_convert.io.load", "load_with_tokenizer"),
    "save_checkpoint": ("simba_convert.io.checkpoint", "save_checkpoint"),
    "load_tokenizer": ("simba_convert.io.tokenizer", "load_tokenizer"),
    "MambaConfig": ("simba_convert.model.config", "MambaConfig"),
    "convert": ("simba_convert.pipeline.convert", "convert"),
    "PrunedMambaLM": ("simba_convert.pruning.model", "PrunedMambaLM"),
    "PruningSpec": ("simba_convert.pruning.spec", "PruningSpec"),
    "export_onnx": ("simba_convert.export", "export_onnx"),
}

__all__ = ["__version__", *_LAZY]


__getattr__, __dir__ = lazy_attributes('simba_convert', _LAZY, globals())
