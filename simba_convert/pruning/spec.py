"""What a sparsified model prunes: per-layer keep ratios, the scoring criterion and the protected suffix."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ..errors import ConfigError
from ..names import CRITERIA  # noqa: F401
SPEC_VERSION = 1
DEFAULT_FLOOR = 0.05


@dataclass(frozen=True)
class PruningSpec:
    """keep_ratios[l] = r_{l+1}: the fraction of the original L processed by layer l+1 (SIMBA.md §4).

    r_1 = 1 because the first pruning decision needs the scores of layer 1; the tokens layer l+1 keeps
    are chosen with layer l's scores. Ratios are non-increasing and at least `floor`.
    """

    keep_ratios: tuple[float, ...]
    criterion: str = "last"
    protect: int = 64
    signed: bool = False
    floor: float = DEFAULT_FLOOR
    seed: int = 0
    version: int = SPEC_VERSION

    def __post_init__(self):
        r = tuple(float(x) for x in self.keep_ratios)
        object.__setattr__(self, "keep_ratios", r)
        validate_ratios(r, self.floor)
        if self.criterion not in CRITERIA:
            raise ConfigError(f"unknown criterion {self.criterion!r}; choose one of {', '.join(CRITERIA)}")
        if not isinstance(self.protect, int) or self.protect < 0:
            raise ConfigError(f"protect must be an integer >= 0, got {self.protect!r}")
        if self.version != SPEC_VERSION:
            raise ConfigError(f"pruning spec version {self.version} is not supported (this tool reads {SPEC_VERSION})")

    @property
    def n_layer(self) -> int:
        return len(self.keep_ratios)

    @property
    def is_dense(self) -> bool:
        return all(r == 1.0 for r in self.keep_ratios)

    def keep_counts(self, L: int, protect: int | None = None) -> list[int]:
        """Tokens each layer processes for a sequence of L real tokens: ceil(r_l·L), never below the protected set."""
        return keep_counts(self.keep_ratios, L, self.protect if protect is None else protect)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["keep_ratios"] = list(self.keep_ratios)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PruningSpec":
        known = {"keep_ratios", "criterion", "protect", "signed", "floor", "seed", "version"}
        return cls(**{k: (tuple(v) if k == "keep_ratios" else v) for k, v in d.items() if k in known})


def validate_ratios(r, floor: float = DEFAULT_FLOOR) -> None:
    if len(r) == 0:
        raise ConfigError("keep_ratios is empty")
    if not 0.0 < floor <= 1.0:
        raise ConfigError(f"floor must be in (0, 1], got {floor}")
    if any(not math.isfinite(x) for x in r):
        raise ConfigError("keep_ratios must be finite")
    if r[0] != 1.0:
        raise ConfigError(f"keep_ratios[0] must be 1.0 (the first layer sees every token), got {r[0]}")
    for i, x in enumerate(r):
        if not floor - 1e-12 <= x <= 1.0:
            raise ConfigError(f"keep ratio of layer {i} is {x}; ratios must lie in [floor={floor}, 1]")
        if i and x > r[i - 1] + 1e-12:
            raise ConfigError(f"keep_ratios must be non-increasing: layer {i} has {x} > {r[i - 1]} (a pruned token never returns)")


def forced_count(L: int, protect: int) -> int:
    """Tokens that are always kept: the protected suffix, and at least the last position."""
    return min(L, max(1, protect))


def keep_counts(ratios, L: int, protect: int) -> list[int]:
    f = forced_count(L, protect)
    # round before ceil so that r·L a hair above an integer through float error does not add a token
    return [min(L, max(f, math.ceil(round(r * L, 9)))) for r in ratios]
