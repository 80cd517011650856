"""`simba_convert.load(src)`: any accepted `--in` form -> a ready model (dense, or pruned if sparsified)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import BackendError, CheckpointError
from .layout import inspect_checkpoint
from .resolve import resolve


@dataclass(frozen=True)
class LoadInfo:
    """Where a model came from: the resolved directory, its kind (local/bundled/hub) and layout."""

    path: Path
    kind: str
    layout: str
    repo_id: str | None
    sparsified: bool
    weight_format: str


def _device(device):
    import torch

    if device is None:
        return torch.device("cpu")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BackendError(f"device {device} was asked for but CUDA is not available (use --device cpu)")
    return dev


def _build(r, info, device, dtype, apply_simba):
    from .checkpoint import load_dense

    model = load_dense(info, device=_device(device), dtype=dtype)
    if info.sparsified and apply_simba:
        if not isinstance(info.simba, dict):
            raise CheckpointError(f"{info.path}/config.json: the 'simba' section is not an object")
        from ..pruning.model import from_simba_config

        model = from_simba_config(model, info.simba)
    return model, LoadInfo(r.path, r.kind, info.layout, r.repo_id, info.sparsified, info.weight_format)


def load(src, *, device=None, dtype=None, offline: bool = False, cache_dir=None, apply_simba: bool = True):
    """Load a Mamba-1 checkpoint: a directory, a short name (mamba-tiny, mamba-1.4b, ...) or a Hub id.

    dtype: None (float32), "auto" (as stored), "float32", "bfloat16", "float16" or a torch dtype.
    device: None (cpu), "auto", or anything torch.device accepts. A sparsified checkpoint (config.json
    with a `simba` section) comes back as a PrunedMambaLM unless apply_simba=False; otherwise a MambaLM.
    """
    r = resolve(src, offline=offline, cache_dir=cache_dir)
    model, _ = _build(r, inspect_checkpoint(r.path), device, dtype, apply_simba)
    return model


def load_with_tokenizer(src, *, device=None, dtype=None, offline: bool = False, tokenizer=None,
                        cache_dir=None, apply_simba: bool = True):
    """Like `load`, plus the tokenizer (see `load_tokenizer`) and a LoadInfo: (model, tokenizer, info).

    The tokenizer is found before the weights are read, so a missing tokenizer fails fast.
    """
    from .tokenizer import load_tokenizer

    r = resolve(src, offline=offline, cache_dir=cache_dir)
    info = inspect_checkpoint(r.path)
    tok = load_tokenizer(info.path, tokenizer, offline=offline, cache_dir=cache_dir)
    model, load_info = _build(r, info, device, dtype, apply_simba)
    return model, tok, load_info
