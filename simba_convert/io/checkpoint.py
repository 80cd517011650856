"""Reading a checkpoint directory into its architecture's dense LM (`MambaLM`, `Mamba2LM`: `arch.family`), and
writing one back (atomically).

Reading is strict: every tensor the config implies must be present with its exact shape, and nothing
else may be; the only tolerated absence is a tied `lm_head.weight`. Tensors are read one at a time
(safetensors lazily, .bin through a memory map with `weights_only=True`) and placed straight into a
model built on the meta device, so peak memory is about one copy of the model.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import shutil
from pathlib import Path
from typing import Any, Iterator

import torch

from ..arch import family
from ..errors import CheckpointError, ConfigError
from ..format import base_config, is_marked, mark
from .atomic import atomic_directory, check_writable
from .layout import (
    BIN, CONFIG, LAYOUTS, SAFETENSORS, SAFETENSORS_INDEX, TOKENIZER_FILES, CheckpointInfo,
    canonical_name, inspect_checkpoint, layout_name, safetensors_header,
)

DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}
DEFAULT_MAX_SHARD_BYTES = 5 * 2**30  # transformers' long-standing default shard size (5 GB)


# --- reading -------------------------------------------------------------------------------------
class _Reader:
    """Canonical tensor name -> shape, dtype and (on demand) data, over all weight files."""

    def __init__(self, info: CheckpointInfo, stack: contextlib.ExitStack):
        self.info = info
        self._get: dict[str, Any] = {}  # canonical name -> zero-argument loader
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.dtypes: dict[str, torch.dtype] = {}
        for f in info.weight_files:
            if info.weight_format == "safetensors":
                self._add_safetensors(f, stack)
            else:
                self._add_bin(f)

    def _add(self, f: Path, name: str, shape, dtype: torch.dtype, loader):
        key = canonical_name(name)
        if key in self.shapes:
            raise CheckpointError(f"{f} holds tensor {key!r} twice (under two names or in two shards)")
        self.shapes[key], self.dtypes[key], self._get[key] = tuple(shape), dtype, loader

    def _add_safetensors(self, f: Path, stack: contextlib.ExitStack):
        from safetensors import safe_open

        table = safetensors_header(f)  # validates the header against the file size first
        try:
            handle = stack.enter_context(safe_open(str(f), framework="pt", device="cpu"))
        except Exception as e:  # safetensors raises its own SafetensorError (not exported everywhere)
            raise CheckpointError(f"{f} is corrupt ({e})") from None
        for name, meta in table.items():
            dtype = _st_dtype(meta["dtype"], f, name)
            self._add(f, name, meta["shape"], dtype, lambda h=handle, n=name: h.get_tensor(n))

    def _add_bin(self, f: Path):
        state = _torch_load(f)
        for name, t in state.items():
            if not isinstance(t, torch.Tensor):
                raise CheckpointError(f"{f}: entry {name!r} is a {type(t).__name__}, not a tensor")
            self._add(f, name, t.shape, t.dtype, lambda t=t: t)

    def get(self, name: str) -> torch.Tensor:
        try:
            return self._get[name]()
        except CheckpointError:
            raise
        except Exception as e:
            raise CheckpointError(f"cannot read tensor {name!r} from {self.info.path}: {e}") from None


def _st_dtype(code: str, f: Path, name: str) -> torch.dtype:
    from .layout import ST_DTYPES

    dtype = getattr(torch, ST_DTYPES.get(code, ""), None)
    if not isinstance(dtype, torch.dtype):
        raise CheckpointError(f"{f}: tensor {name!r} has unsupported dtype {code}")
    return dtype


def _torch_load(f: Path) -> dict:
    """torch.load with weights_only=True (never a general unpickle); memory-mapped when the format allows."""
    try:
        try:
            state = torch.load(f, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):  # the legacy (pre-zip) format cannot be memory-mapped
                raise
            state = torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        reason = str(e).splitlines()[0] if str(e) else "unpickling error"
        if "weights only" in str(e).lower() or "weights_only" in str(e):
            reason = "it holds objects other than tensors, and only weights_only loading is allowed"
        raise CheckpointError(f"{f} cannot be loaded safely: {reason}") from None
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{f} is truncated or corrupt ({msg})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{f} holds a {type(state).__name__}, not a state dict of tensors")
    return state


def _fmt(shape) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def verify_tensors(found: dict[str, tuple], expected: dict[str, tuple], *, tied: bool, where: Path) -> None:
    """Strict key/shape check; a tied lm_head.weight may be absent. Raises a one-line CheckpointError."""
    optional = {"lm_head.weight"} if tied else set()
    missing = [k for k in expected if k not in found and k not in optional]
    unexpected = [k for k in found if k not in expected]
    wrong = [k for k in expected if k in found and tuple(found[k]) != tuple(expected[k])]

    def more(items):
        return f" (and {len(items) - 1} more)" if len(items) > 1 else ""

    if wrong:
        k = wrong[0]
        raise CheckpointError(
            f"{where}: tensor {k!r} has shape {_fmt(found[k])} but the config implies {_fmt(expected[k])}{more(wrong)}"
        )
    if missing:
        k = missing[0]
        raise CheckpointError(f"{where}: missing tensor {k!r} of shape {_fmt(expected[k])}{more(missing)}")
    if unexpected:
        k = unexpected[0]
        raise CheckpointError(
            f"{where}: unexpected tensor {k!r} of shape {_fmt(found[k])}{more(unexpected)}, not part of this Mamba config"
        )


def resolve_dtype(dtype, stored: torch.dtype | None = None) -> torch.dtype:
    """None -> float32; "auto" -> the checkpoint's stored dtype; names or torch dtypes otherwise."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise ConfigError(f"dtype must be a floating-point type, got {dtype}")
        return dtype
    if dtype == "auto":
        return stored if stored is not None and stored.is_floating_point else torch.float32
    if dtype not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; choose auto, float32, bfloat16 or float16")
    return DTYPES[dtype]


def load_dense(info: CheckpointInfo | str | Path, *, device="cpu", dtype=None):
    """Build the dense LM of a checkpoint directory (its architecture's: MambaLM, Mamba2LM); dtype default float32
    ("auto": as stored)."""
    if not isinstance(info, CheckpointInfo):
        info = inspect_checkpoint(info)
    cfg = info.config
    with torch.device("meta"):
        model = family(cfg).model_class()(cfg)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    with contextlib.ExitStack() as stack:
        reader = _Reader(info, stack)
        verify_tensors(reader.shapes, expected, tied=cfg.tie_embeddings, where=info.path)
        bad = [k for k, dt in reader.dtypes.items() if not dt.is_floating_point]
        if bad:
            raise CheckpointError(f"{info.path}: tensor {bad[0]!r} has non-float dtype {reader.dtypes[bad[0]]}")
        if cfg.tie_embeddings and "lm_head.weight" in reader.shapes:
            _check_tied(reader, info.path)
        target = resolve_dtype(dtype, reader.dtypes["backbone.embedding.weight"])
        state = {}
        for name in expected:
            if name == "lm_head.weight" and cfg.tie_embeddings:
                continue
            t = reader.get(name)
            _check_finite(t, name, info.path)
            state[name] = t.to(device=device, dtype=target)
            if target != t.dtype and not bool(torch.isfinite(state[name]).all()):
                raise ConfigError(
                    f"{info.path}: tensor {name!r} has values beyond the range of {str(target).removeprefix('torch.')};"
                    f" load it as {str(t.dtype).removeprefix('torch.')} or float32 instead", option="dtype")
    model.load_state_dict(state, strict=False, assign=True)
    if cfg.tie_embeddings:  # assign=True replaced the embedding Parameter; re-tie the head to it
        model.lm_head.weight = model.backbone.embedding.weight
    left = [n for n, p in model.named_parameters() if p.is_meta]
    if left:
        raise CheckpointError(f"{info.path}: parameter {left[0]!r} was not loaded")  # unreachable after verify
    return model.eval()


def _check_finite(t: torch.Tensor, name: str, where: Path) -> None:
    """A one-line CheckpointError for NaN or infinite weights (a diverged or corrupt checkpoint)."""
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        n = int(bad.sum())
        raise CheckpointError(
            f"{where}: tensor {name!r} holds {n} NaN or infinite value{'s' if n > 1 else ''} (of {t.numel()}); "
            "the checkpoint is corrupt or its training diverged")


def stored_dtype(info: CheckpointInfo) -> torch.dtype:
    """The dtype of the stored embedding: what dtype="auto" loads the checkpoint in."""
    with contextlib.ExitStack() as stack:
        return _Reader(info, stack).dtypes["backbone.embedding.weight"]


def _check_tied(reader: _Reader, where: Path) -> None:
    """mamba_ssm saves a tied head as a second name for the embedding; a different tensor is inconsistent."""
    emb, head = reader.get("backbone.embedding.weight"), reader.get("lm_head.weight")
    same_storage = emb.data_ptr() == head.data_ptr() and emb.stride() == head.stride()
    if not same_storage and not torch.equal(emb, head):
        raise CheckpointError(
            f"{where}: the config ties lm_head to the embedding (tie_embeddings) but lm_head.weight differs from it"
        )


# --- writing -------------------------------------------------------------------------------------
def _config_dict(cfg, layout: str, dtype: torch.dtype) -> dict:
    if layout == "hf":
        out = cfg.to_hf()
        out["dtype"] = str(dtype).removeprefix("torch.")  # transformers >= 4.56 reads "dtype", older "torch_dtype"
        out["torch_dtype"] = out["dtype"]
        return out
    return cfg.to_mamba_ssm()


def _shards(tensors: dict[str, torch.Tensor], max_bytes: int) -> list[dict[str, torch.Tensor]]:
    """Split in order into groups of at most `max_bytes` (a larger tensor gets a group of its own)."""
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in tensors.items():
        n = t.numel() * t.element_size()
        if shards[-1] and size + n > max_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += n
    return shards


def _write_safetensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    from .atomic import file_mode

    save_file(tensors, str(path), metadata={"format": "pt"})
    path.chmod(file_mode())  # safetensors >= 0.6 creates its files 0600


def _write_sharded(dest: Path, tensors: dict[str, torch.Tensor], max_shard_bytes: int) -> None:
    """model.safetensors, or shards of at most `max_shard_bytes` with model.safetensors.index.json."""
    shards = _shards(tensors, max_shard_bytes)
    if len(shards) == 1:
        _write_safetensors(dest / SAFETENSORS, shards[0])
        return
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        _write_safetensors(dest / fname, shard)
        weight_map.update({k: fname for k in shard})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (dest / SAFETENSORS_INDEX).write_text(json.dumps(index, indent=2) + "\n")


def _copy_tokenizer(src, dest: Path) -> None:
    """Copy tokenizer files from a directory or a tokenizer.json path, or save a tokenizer object."""
    if hasattr(src, "save") and not isinstance(src, (str, Path)):
        src.save(str(dest / "tokenizer.json"))
        return
    src = Path(src)
    if src.is_file():
        shutil.copyfile(src, dest / "tokenizer.json")
        return
    if not src.is_dir():
        raise CheckpointError(f"tokenizer path {src} does not exist")
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, dest / name)


def _prepare(model, layout: str, extra_config: dict | None, dtype=None):
    """(dense model, config.json dict); every check that can fail happens here, before anything is written."""
    if getattr(model, "is_pruned", False):
        model = model.dense
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown checkpoint layout {layout!r}; choose one of {', '.join(LAYOUTS)}", option="layout")
    config = _config_dict(model.config, layout, model.dtype if dtype is None else resolve_dtype(dtype))
    extra = base_config(extra_config or {}, "extra_config")  # e.g. format.with_section({}, section), marked
    clash = sorted(set(extra) & set(config))
    if clash:
        raise ConfigError(f"extra_config may not override the architecture field {clash[0]!r}")
    config.update(extra)
    return model, mark(config)  # with a `simba` section: marked for transformers (format.mark)


def write_config(dest: str | Path, config: dict) -> None:
    """Write config.json into the checkpoint directory `dest`; a sparsified one (with a `simba` section) is marked
    for transformers (`format.mark`) and gets the remote code files its auto_map names (io/hf_remote/)."""
    config = mark(config)
    (Path(dest) / CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    if is_marked(config):
        from .hf_remote import write_remote_code

        write_remote_code(dest)


def write_checkpoint(
    model,
    dest: str | Path,
    *,
    layout: str = "mamba_ssm",
    extra_config: dict | None = None,
    tokenizer_dir=None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    dtype=None,
    weight_format: str = "safetensors",
    create: bool = False,
) -> None:
    """Write the checkpoint files of `model` into the existing directory `dest` (no atomicity: for a
    caller that stages its own output directory; otherwise use `save_checkpoint`). `dtype`: the stored
    dtype (default: the model's). `weight_format` "bin" writes one pytorch_model.bin with a tied head saved as
    a second name of the embedding, as mamba_ssm does (for tests and tools; never sharded). `create`: make `dest`
    (and its parents) if missing."""
    if weight_format not in ("safetensors", "bin"):
        raise ConfigError(f"unknown weight format {weight_format!r}; choose safetensors or bin", option="weight_format")
    model, config = _prepare(model, layout, extra_config, dtype)
    target = None if dtype is None else resolve_dtype(dtype)
    dest = Path(dest)
    if create:
        dest.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, t in model.state_dict().items():
        if name == "lm_head.weight" and model.config.tie_embeddings:
            continue
        t = t.detach().to("cpu")
        tensors[layout_name(name, layout)] = (t if target is None else t.to(target)).contiguous()
    if weight_format == "bin":
        if model.config.tie_embeddings:
            tensors["lm_head.weight"] = tensors[layout_name("backbone.embedding.weight", layout)]
        torch.save(tensors, dest / BIN)
    else:
        _write_sharded(dest, tensors, max_shard_bytes)
    write_config(dest, config)
    if tokenizer_dir is not None:
        _copy_tokenizer(tokenizer_dir, dest)


def save_checkpoint(
    model,
    out_dir: str | Path,
    *,
    layout: str = "mamba_ssm",
    extra_config: dict | None = None,
    tokenizer_dir=None,
    force: bool = False,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
) -> Path:
    """Write `model` (a dense LM of any architecture, or a pruned model's dense weights) as safetensors + config.json
    in `layout`.

    The tied lm_head.weight is omitted (as transformers does); tensors are saved in the model's dtype
    byte for byte; above `max_shard_bytes` the weights are sharded with `model.safetensors.index.json`.
    `extra_config` (e.g. {"simba": {...}}) is merged into config.json; with a `simba` section the checkpoint is
    sparsified: config.json is marked for transformers (model_type "simba", `format.mark`) and the remote code
    files that run it pruned in transformers are written beside it (io/hf_remote/). `tokenizer_dir` is a directory
    of tokenizer files, a tokenizer.json path, or an object with `save(path)`. The directory appears
    complete or not at all; an existing one is replaced only with `force` (else OutputExistsError).
    """
    _prepare(model, layout, extra_config)  # fail before creating anything
    check_writable(out_dir, force)
    with atomic_directory(out_dir, force=force) as tmp:
        write_checkpoint(model, tmp, layout=layout, extra_config=extra_config, tokenizer_dir=tokenizer_dir,
                         max_shard_bytes=max_shard_bytes)
    return Path(out_dir)


def iter_checkpoint_tensors(info: CheckpointInfo | str | Path) -> Iterator[tuple[str, torch.Tensor]]:
    """(canonical name, tensor as stored) for every tensor of a checkpoint; for tests and tools."""
    if not isinstance(info, CheckpointInfo):
        info = inspect_checkpoint(info)
    with contextlib.ExitStack() as stack:
        reader = _Reader(info, stack)
        for name in reader.shapes:
            yield name, reader.get(name)


def stored_dtypes(info: CheckpointInfo) -> dict[str, int]:
    """{dtype name: number of tensors} as stored; .bin files are memory-mapped, not read."""
    counts = info.stored_dtypes()
    if counts is not None:
        return counts
    counts = {}
    for f in info.weight_files:
        for t in _torch_load(f).values():
            if isinstance(t, torch.Tensor):
                name = str(t.dtype).removeprefix("torch.")
                counts[name] = counts.get(name, 0) + 1
    return counts
