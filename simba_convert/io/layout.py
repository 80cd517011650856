"""What is in a checkpoint directory: its architecture, layout, config, weight files and the tensors it must hold.

Everything here is torch-free (JSON and safetensors headers only), so `simba-convert info` and the
early checks of a run stay cheap. Reading and writing tensors is in `checkpoint.py`.

The architecture comes from config.json (`arch.detect_architecture`); its config, tensor names and shapes from
its family (`arch.family`: arch/mamba1/ for Mamba-1 and FalconMamba, arch/mamba2/ for Mamba-2). Every family has
the same two layouts (CHECKPOINTS.md §1.3, §2.2):
- `mamba_ssm`: config.json with d_model/n_layer/ssm_cfg/... (ssm_cfg.layer "Mamba2" for Mamba-2); weights usually
  `pytorch_model.bin`.
- `hf` (transformers): config.json with model_type "mamba", "falcon_mamba" or "mamba2"; `model.safetensors` (maybe
  sharded with `model.safetensors.index.json`) or `pytorch_model.bin`. The embedding is named
  `backbone.embeddings.weight` instead of `backbone.embedding.weight`; all other names are equal.
  FalconMamba's B/C/dt norms have no weights (transformers keeps only non-persistent buffers of ones), so
  its tensors are Mamba-1's; its LM head is usually untied (tie_word_embeddings false).
A sparsified (Simba) checkpoint is either layout with a `simba` section in config.json, marked for transformers
(model_type "simba", the dense entries kept under "simba_base_config": `format.mark`) and carrying the two remote
code files that run it pruned (io/hf_remote/); `CheckpointInfo.raw_config` is config.json as stored, and the
architecture and layout are read from `format.base_config` of it. Sparsified checkpoints written before the
marking (a plain dense config plus the section) are read the same way.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..arch import SUPPORTED, detect_architecture, family
from ..errors import CheckpointError

CONFIG = "config.json"
SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "vocab.json", "merges.txt", "tokenizer.model", "added_tokens.json",
)
LAYOUTS = ("mamba_ssm", "hf")
WEIGHT_FILES = f"{SAFETENSORS}, {SAFETENSORS_INDEX} + shards, {BIN} or {BIN_INDEX} + shards"

# The canonical (our and mamba_ssm's) tensor names differ from transformers' in this one place.
_HF_RENAMES = {"backbone.embedding.weight": "backbone.embeddings.weight"}
_FROM_HF = {v: k for k, v in _HF_RENAMES.items()}

# safetensors dtype codes -> torch dtype names
ST_DTYPES = {
    "F64": "float64", "F32": "float32", "BF16": "bfloat16", "F16": "float16",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
}


def canonical_name(name: str) -> str:
    """A tensor name of either layout -> the canonical (mamba_ssm) name."""
    return _FROM_HF.get(name, name)


def layout_name(name: str, layout: str) -> str:
    """A canonical tensor name -> its name in `layout`."""
    return _HF_RENAMES.get(name, name) if layout == "hf" else name


def read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"{path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); the file is corrupt or truncated") from None
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from None


def parse_config(raw: Any, where: Path) -> tuple[str, Any]:
    """config.json contents -> (layout, config of its architecture); a one-line CheckpointError for anything else
    (another model type, a hybrid, a malformed config)."""
    if not isinstance(raw, dict):
        raise CheckpointError(f"{where} holds a JSON {type(raw).__name__}, not a model config; {SUPPORTED}")
    from ..format import base_config

    raw = base_config(raw, where)  # a sparsified checkpoint's marked config: the dense config it was made from
    try:
        arch = detect_architecture(raw)
    except CheckpointError as e:
        raise CheckpointError(f"{where}: {e}") from None
    return family(arch).parse_config(raw, where)


def safetensors_header(path: Path) -> dict[str, dict]:
    """The tensor table of a .safetensors file {name: {dtype, shape, data_offsets}}, checked against the file size."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path} is truncated ({size} bytes); not a safetensors file")
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                raise CheckpointError(f"{path} is truncated or corrupt (header of {n} bytes in a {size}-byte file)")
            table = json.loads(f.read(n))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{path} is corrupt (unreadable safetensors header)") from None
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from None
    if not isinstance(table, dict):
        raise CheckpointError(f"{path} is corrupt (unreadable safetensors header)")
    table.pop("__metadata__", None)
    end = max((int(t["data_offsets"][1]) for t in table.values()), default=0)
    if 8 + n + end > size:
        raise CheckpointError(f"{path} is truncated: {size} bytes, its header describes {8 + n + end}")
    return table


@dataclass(frozen=True)
class CheckpointInfo:
    """A checkpoint directory, inspected without reading tensor data."""

    path: Path
    layout: str  # "mamba_ssm" | "hf"
    config: Any  # of the architecture's family: MambaConfig (Mamba-1, FalconMamba) or Mamba2Config
    raw_config: dict
    weight_format: str  # "safetensors" | "bin"
    weight_files: tuple[Path, ...]

    @property
    def architecture(self) -> str:
        """"mamba1" | "mamba2" | "falcon_mamba" (`simba_convert.arch`)."""
        return self.config.architecture

    @property
    def simba(self) -> dict | None:
        """The `simba` section of a sparsified checkpoint as stored (unchecked), else None."""
        from ..format import SECTION

        return self.raw_config.get(SECTION)

    @property
    def section(self):
        """The `simba` section read and checked (a format.SimbaSection, older layouts converted), else None;
        a one-line CheckpointError naming config.json when it cannot be read."""
        from ..format import read

        return read(self.raw_config, self.path / "config.json")

    @property
    def sparsified(self) -> bool:
        return self.simba is not None

    @property
    def has_tokenizer(self) -> bool:
        return (self.path / "tokenizer.json").is_file()

    def stored_dtypes(self) -> dict[str, int] | None:
        """{torch dtype name: number of tensors} from the safetensors headers; None for .bin (needs torch)."""
        if self.weight_format != "safetensors":
            return None
        counts: dict[str, int] = {}
        for f in self.weight_files:
            for t in safetensors_header(f).values():
                name = ST_DTYPES.get(t["dtype"], t["dtype"])
                counts[name] = counts.get(name, 0) + 1
        return counts


def find_weights(path: Path) -> tuple[str, tuple[Path, ...]]:
    """(format, files) of the weights in `path`; safetensors is preferred when both are present."""
    for index, fmt in ((SAFETENSORS_INDEX, "safetensors"), (BIN_INDEX, "bin")):
        if (path / index).is_file():
            index_json = read_json(path / index)
            weight_map = index_json.get("weight_map") if isinstance(index_json, dict) else None
            if not isinstance(weight_map, dict) or not weight_map:
                raise CheckpointError(f"{path / index} has no weight_map; the index is corrupt")
            files = tuple(path / f for f in dict.fromkeys(weight_map.values()))
            missing = [f.name for f in files if not f.is_file()]
            if missing:
                raise CheckpointError(
                    f"{path / index} lists shard {missing[0]} which is missing"
                    + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                    + "; the download is incomplete"
                )
            return fmt, files
    if (path / SAFETENSORS).is_file():
        return "safetensors", (path / SAFETENSORS,)
    if (path / BIN).is_file():
        return "bin", (path / BIN,)
    raise CheckpointError(f"no weights in {path} (expected {WEIGHT_FILES})")


def inspect_checkpoint(path: str | Path) -> CheckpointInfo:
    """Detect the layout of a checkpoint directory and check that its config and weight files are there."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory {path} does not exist")
    if not (path / CONFIG).is_file():
        raise CheckpointError(f"no {CONFIG} in {path}; not a model checkpoint directory")
    raw = read_json(path / CONFIG)
    layout, cfg = parse_config(raw, path / CONFIG)
    fmt, files = find_weights(path)
    return CheckpointInfo(path, layout, cfg, raw, fmt, files)


def expected_shapes(cfg) -> dict[str, tuple[int, ...]]:
    """The canonical tensor names and shapes a checkpoint of `cfg` (any architecture's config) holds, lm_head.weight
    included."""
    return family(cfg).expected_shapes(cfg)


def parameter_count(cfg) -> int:
    """Number of parameters of a model of `cfg` (any architecture's config), counting a tied LM head once."""
    return family(cfg).parameter_count(cfg)
