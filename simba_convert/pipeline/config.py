"""The conversion's configuration: frozen, validated, versioned, and written into the output."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from ..errors import ConfigError
from ..names import SCHEDULES
from ..pruning.spec import CRITERIA, DEFAULT_FLOOR

CONFIG_VERSION = 1
DTYPES = ("auto", "float32", "bfloat16", "float16")
# A CPU conversion of a small model should take a minute or two, not twenty: fewer windows and candidates.
DEVICE_DEFAULTS = {"cuda": {"samples": 32, "max_evals": 40}, "cpu": {"samples": 8, "max_evals": 16}}
DEVICES = "auto, cpu, cuda or cuda:N"
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_device_name(device) -> None:
    """A one-line ConfigError unless `device` names a device this tool runs on (availability is checked at load)."""
    if not (isinstance(device, str) and _DEVICE.fullmatch(device)):
        raise ConfigError(f"unknown device {device!r}; expected {DEVICES}", option="device")


@dataclass(frozen=True)
class ConvertConfig:
    src: str
    budget: float = 0.6
    out: str | None = None
    schedule: str = "calibrated"
    criterion: str = "last"
    protect: int = 64
    samples: int | None = None  # None: DEVICE_DEFAULTS for the device the model runs on
    seq_len: int = 512
    calib: str | None = None
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    tokenizer: str | None = None
    finetune_steps: int = 0
    onnx: bool = False
    force: bool = False
    offline: bool = False
    max_evals: int | None = None
    batch_size: int = 8
    floor: float = DEFAULT_FLOOR
    prune_every: int = 1  # the ratios change every K layers only (pruning.schedules.stepped)
    progress: bool = True
    version: int = CONFIG_VERSION

    def __post_init__(self):
        if not self.src:
            raise ConfigError("no input model: give src, a checkpoint directory, a hub id or a short name such as "
                              "mamba-tiny", option="src")
        b = self.budget
        if isinstance(b, bool) or not (isinstance(b, (int, float)) and math.isfinite(b) and 0.0 < b <= 1.0):
            raise ConfigError(f"budget must be in (0, 1], got {b!r}", option="budget")
        for name, allowed in (("schedule", SCHEDULES), ("criterion", CRITERIA), ("dtype", DTYPES)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}",
                                  option=name)
        check_device_name(self.device)
        for name, lo in (("protect", 1), ("samples", 1), ("seq_len", 2), ("finetune_steps", 0), ("max_evals", 2),
                         ("batch_size", 1), ("prune_every", 1)):
            v = getattr(self, name)
            if v is None and name in ("samples", "max_evals"):
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ConfigError(f"{name} must be an integer >= {lo}, got {v!r}", option=name)
        if self.protect >= self.seq_len:
            raise ConfigError(f"protect ({self.protect}) must be smaller than seq_len ({self.seq_len})",
                              option=("protect", "seq_len"))
        if not 0.0 < self.floor <= 1.0:
            raise ConfigError(f"floor must be in (0, 1], got {self.floor}", option="floor")
        if self.version != CONFIG_VERSION:
            raise ConfigError(f"convert config version {self.version} is not supported")

    def for_device(self, device_type: str) -> "ConvertConfig":
        """This config with the unset device-dependent options filled in (the output records these values)."""
        d = DEVICE_DEFAULTS["cuda" if device_type == "cuda" else "cpu"]
        return replace(self, **{k: v for k, v in d.items() if getattr(self, k) is None})

    def out_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        name = Path(str(self.src).rstrip("/")).name or "model"
        return Path(f"{name}-simba-{self.budget:g}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ConvertConfig":
        """The config `to_dict` wrote (e.g. simba_report.json's "config"); unknown keys and newer versions are
        a ConfigError, and the values are validated as on construction."""
        if not isinstance(d, dict):
            raise ConfigError(f"a convert config must be an object, got {type(d).__name__}")
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            plural = "s" if len(unknown) > 1 else ""
            raise ConfigError(f"unknown convert config key{plural} {', '.join(map(repr, unknown))}")
        version = d.get("version", CONFIG_VERSION)
        if isinstance(version, int) and not isinstance(version, bool) and version > CONFIG_VERSION:
            raise ConfigError(f"convert config version {version} is newer than this tool reads ({CONFIG_VERSION}); "
                              "upgrade simba-convert")
        return cls(**{"src": None, **d})  # a missing src gets the same one-line error as an empty one
