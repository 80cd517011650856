"""`simba_convert.load(src)`: any accepted `--in` form -> a ready model (dense, or pruned if sparsified), of the
architecture its config.json names (`simba_convert.arch`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import BackendError, CheckpointError, ConfigError, SimbaError
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
    architecture: str  # "mamba1" | "mamba2" | "falcon_mamba"


def parse_device(device):
    """None -> cpu; "auto" -> cuda when available, else cpu; "cpu", "cuda", "cuda:N" or a torch.device otherwise."""
    import torch

    if device is None:
        return torch.device("cpu")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"unknown device {device!r}; expected auto, cpu, cuda or cuda:N", option="device")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise BackendError(f"device {device} was asked for but CUDA is not available (use device cpu)",
                               option="device")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise BackendError(f"device {device} was asked for but there are {torch.cuda.device_count()} CUDA "
                               "devices", option="device")
    return dev


def _build(r, info, device, dtype, apply_simba):
    from .checkpoint import load_dense

    section = info.section if apply_simba else None  # before the weights: a bad section fails fast
    if section is not None and section.architecture not in (None, info.architecture):
        raise CheckpointError(f"{info.path}/config.json: its 'simba' section was written for a {section.architecture} "
                              f"model, but the config describes a {info.architecture} model")
    import torch

    # Ordinary tensors even when the caller loads under torch.inference_mode (common in serving code): inference
    # tensors cannot be trained, and they keep no version counter, which the mixers' cached fp32 parameters check.
    with torch.inference_mode(False):
        model = load_dense(info, device=parse_device(device), dtype=dtype)
    if section is not None:
        from ..pruning.model import from_simba_config

        try:
            model = from_simba_config(model, section)
        # ValueError: e.g. keep ratios for another number of layers (pruning/model.py)
        except (SimbaError, ValueError) as e:
            raise CheckpointError(f"{info.path}/config.json: invalid 'simba' section ({e})") from None
    return model, LoadInfo(r.path, r.kind, info.layout, r.repo_id, info.sparsified, info.weight_format,
                           info.architecture)


def load(src, *, device=None, dtype=None, offline: bool = False, cache_dir=None, apply_simba: bool = True):
    """Load a Mamba checkpoint: a directory, a short name (mamba-tiny, mamba-1.4b, ...) or a Hub id.

    dtype: None (float32), "auto" (as stored), "float32", "bfloat16", "float16" or a torch dtype.
    device: None (cpu), "auto", or anything torch.device accepts. A sparsified checkpoint (config.json
    with a `simba` section) comes back as a PrunedMambaLM unless apply_simba=False; otherwise the dense LM of
    its architecture: a MambaLM (Mamba-1, FalconMamba) or a Mamba2LM.
    """
    r = resolve(src, offline=offline, cache_dir=cache_dir)
    model, _ = _build(r, inspect_checkpoint(r.path), device, dtype, apply_simba)
    return model


def load_with_tokenizer(src, *, device=None, dtype=None, offline: bool = False, tokenizer=None,
                        cache_dir=None, apply_simba: bool = True):
    """Like `load`, plus the tokenizer (see `load_tokenizer`) and a LoadInfo: (model, tokenizer, info).

    The tokenizer is found, and checked to fit the model's embedding, before the weights are read, so a
    missing or mismatched tokenizer fails fast.
    """
    from .tokenizer import load_tokenizer

    r = resolve(src, offline=offline, cache_dir=cache_dir)
    info = inspect_checkpoint(r.path)
    tok = load_tokenizer(info.path, tokenizer, offline=offline, cache_dir=cache_dir,
                         vocab_size=info.config.padded_vocab_size)
    model, load_info = _build(r, info, device, dtype, apply_simba)
    return model, tok, load_info
