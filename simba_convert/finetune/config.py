"""The brief fine-tune's configuration (SIMBA.md §7): frozen, validated, versioned."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ..errors import ConfigError

FINETUNE_VERSION = 1
TRAINABLE = ("all", "norms_dt_xproj", "lora")
# Updating every weight needs a small step; a few vectors or a low-rank adapter take a larger one.
# "all" at 1e-4 recovered family-l's perplexity at budget 0.5 in 1000 steps (3e-5 was only run on mamba-tiny,
# where neither rate moved it); 3e-4 and above pulled the student away from the dense model on held-out text
# (BENCHMARKS.md, "Fine-tune").
DEFAULT_LR = {"all": 1e-4, "norms_dt_xproj": 3e-4, "lora": 3e-4}


@dataclass(frozen=True)
class FinetuneConfig:
    """Distillation of the pruned model from its dense teacher, keep ratios fixed.

    One optimizer step consumes `grad_accum` micro-batches of `batch_size` windows. The learning rate
    (default: DEFAULT_LR of the trainable set) rises linearly over `warmup_steps` (default: 10% of
    `steps`), then follows a cosine down to `min_lr_ratio`·lr. Validation runs every `eval_every`
    steps; `patience` evaluations without an improvement of more than `min_delta` (nats of KL) stop
    training (0 = never stop early), and `restore_best` puts back the trainable weights of the best
    evaluation (the "before" one included).
    """

    steps: int = 200
    lr: float | None = None
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int | None = None
    min_lr_ratio: float = 0.1
    batch_size: int = 4
    grad_accum: int = 1
    grad_clip: float = 1.0  # max global grad norm; 0 = no clipping
    lm_weight: float = 0.0  # weight of the LM (next-token) loss added to the KL, both at protected positions
    trainable: str = "all"
    lora_rank: int = 8
    lora_alpha: float = 16.0
    checkpointing: bool = False  # recompute each mixer in the backward pass instead of storing its activations
    autocast: bool = True  # bf16 autocast on CUDA (the CPU computes in fp32 unless the weights are low-precision)
    eval_every: int = 50
    patience: int = 3
    min_delta: float = 0.0
    restore_best: bool = True
    max_valid_windows: int | None = 64
    seed: int = 0
    progress: bool = True
    version: int = FINETUNE_VERSION

    def __post_init__(self):
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        ints = (("steps", 0), ("batch_size", 1), ("grad_accum", 1), ("lora_rank", 1), ("eval_every", 1),
                ("patience", 0), ("seed", 0))
        for name, lo in ints:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ConfigError(f"finetune {name} must be an integer >= {lo}, got {v!r}")
        for name, lo in (("warmup_steps", 0), ("max_valid_windows", 1)):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < lo):
                raise ConfigError(f"finetune {name} must be None or an integer >= {lo}, got {v!r}")
        if self.trainable not in TRAINABLE:
            raise ConfigError(f"finetune trainable must be one of {', '.join(TRAINABLE)}, got {self.trainable!r}")
        if self.lr is None:
            object.__setattr__(self, "lr", DEFAULT_LR[self.trainable])
        if not (_finite(self.lr) and self.lr > 0):
            raise ConfigError(f"finetune lr must be > 0, got {self.lr!r}")
        for name in ("weight_decay", "grad_clip", "lm_weight", "min_delta", "lora_alpha"):
            v = getattr(self, name)
            if not (_finite(v) and v >= 0):
                raise ConfigError(f"finetune {name} must be a finite number >= 0, got {v!r}")
        if not (_finite(self.min_lr_ratio) and 0.0 <= self.min_lr_ratio <= 1.0):
            raise ConfigError(f"finetune min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"finetune betas must be two numbers in [0, 1), got {self.betas!r}")
        if self.version != FINETUNE_VERSION:
            raise ConfigError(
                f"finetune config version {self.version} is not supported (this tool reads {FINETUNE_VERSION})")

    @property
    def warmup(self) -> int:
        return self.steps // 10 if self.warmup_steps is None else min(self.warmup_steps, self.steps)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Multiplier of the base learning rate for optimizer step `step` (0-based) of `total`.

    Linear warm-up reaches 1 at the last warm-up step (the first step is never taken at lr 0), then a
    half cosine falls from 1 to `min_ratio` at the last step.
    """
    if step < warmup:
        return (step + 1) / warmup
    span = total - warmup
    if span <= 1:
        return 1.0
    t = (step - warmup) / (span - 1)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))
