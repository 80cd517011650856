"""Keep-ratio schedules and solving them for a FLOPs budget (SIMBA.md §5).

A schedule family maps one scalar "strength" s ∈ [0, 1] to ratios r_1..r_n (s = 0 is dense, s = 1 the
sparsest member); FLOPs fall monotonically in s, so a budget is met by bisection on s against the
exact FLOPs model with the integer token counts it implies. `cfg` is any architecture's config: the FLOPs
model (pruning/flops.py) dispatches on it.
"""

from __future__ import annotations

from typing import Callable

from ..errors import ConfigError
from .flops import flops_report
from .spec import DEFAULT_FLOOR, validate_ratios

BUDGET_TOLERANCE = 0.005  # achieved FLOPs ratio within [budget - 0.5%, budget]
PAPER_END_RATIO = 0.1


def linear_ratios(n: int, slope: float, floor: float = DEFAULT_FLOOR) -> tuple[float, ...]:
    """The paper's trapezoid: dense at the bottom, falling linearly in depth by `slope` per layer, clipped at the floor."""
    return tuple(max(floor, min(1.0, 1.0 - slope * i)) for i in range(n))


def paper_linear(n: int, end: float = PAPER_END_RATIO, floor: float = DEFAULT_FLOOR) -> tuple[float, ...]:
    """Linear from 1.0 at the first layer to `end` at the last (10% kept at the top in the paper)."""
    return linear_ratios(n, (1.0 - end) / max(1, n - 1), floor)


def uniform_ratios(n: int, ratio: float, floor: float = DEFAULT_FLOOR) -> tuple[float, ...]:
    """One ratio for every layer after the first (which must see every token)."""
    return (1.0,) + tuple(max(floor, min(1.0, ratio)) for _ in range(n - 1))


def shaped_ratios(n: int, prefix: int, end: float, gamma: float, floor: float = DEFAULT_FLOOR) -> tuple[float, ...]:
    """The calibration family: `prefix` dense layers, then 1 → `end` along (1 - x)^gamma, x ∈ (0, 1].

    gamma = 1 with prefix 1 is `linear`; gamma → 0 approaches `uniform`; gamma > 1 prunes late, < 1 early.
    """
    prefix = max(1, min(prefix, n))
    out = []
    for i in range(n):
        if i < prefix:
            out.append(1.0)
            continue
        x = (i - prefix + 1) / (n - prefix)
        out.append(max(floor, min(1.0, end + (1.0 - end) * (1.0 - x) ** gamma)))
    return tuple(out)


def check_every(every) -> int:
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ConfigError(f"prune_every must be an integer >= 1, got {every!r}", option="prune_every")
    return every


def stepped(ratios, every: int) -> tuple[float, ...]:
    """The ratios held constant over groups of `every` layers above the first (layers 1..every, every+1..2·every, …),
    each group at its first layer's ratio: the token count changes, so scores and a selection run, after layers
    0, every, 2·every, … only: ⌈(n − 1) / every⌉ prune points instead of up to n − 1. Non-increasing ratios stay
    non-increasing and never fall: a budget is met again by solving the stepped family. every = 1 is the identity."""
    r = tuple(ratios)
    if check_every(every) == 1:
        return r
    return tuple(x if i == 0 else r[1 + (i - 1) // every * every] for i, x in enumerate(r))


def prune_points(ratios) -> int:
    """How many layers score and select: those after which the kept count can fall (the ratio drops)."""
    return sum(b < a for a, b in zip(ratios, ratios[1:]))


def family(name: str, n: int, floor: float = DEFAULT_FLOOR, every: int = 1, **shape) -> Callable[[float], tuple[float, ...]]:
    """The strength → ratios map of a named family (s = 0 dense, s = 1 sparsest), stepped over `every` layers."""
    check_every(every)
    if name == "linear":
        make = lambda s: linear_ratios(n, s * (1.0 - floor), floor)  # noqa: E731
    elif name == "uniform":
        make = lambda s: uniform_ratios(n, 1.0 - s * (1.0 - floor), floor)  # noqa: E731
    elif name == "shaped":
        prefix, gamma = int(shape.get("prefix", 1)), float(shape.get("gamma", 1.0))
        make = lambda s: shaped_ratios(n, prefix, 1.0 - s * (1.0 - floor), gamma, floor)  # noqa: E731
    else:
        raise ConfigError(f"unknown schedule family {name!r}")
    return make if every == 1 else (lambda s: stepped(make(s), every))


def solve_budget(
    make: Callable[[float], tuple[float, ...]],
    cfg,
    budget: float,
    L: int,
    protect: int,
    criterion: str = "last",
    iters: int = 60,
) -> tuple[float, ...]:
    """The densest member of a family whose exact FLOPs ratio is ≤ budget (bisection on strength)."""
    check_budget(budget)

    def ratio(s: float) -> float:
        return flops_report(cfg, make(s), L, protect, criterion).ratio

    if ratio(0.0) <= budget:
        return make(0.0)
    if ratio(1.0) > budget:
        raise ConfigError(
            f"budget {budget:g} is below what this schedule can reach at L={L}, protect={protect} "
            f"(minimum {ratio(1.0):.4f}); raise the budget, lower protect or use a longer seq_len",
            option=("budget", "protect", "seq_len"),
        )
    lo, hi = 0.0, 1.0  # ratio(lo) > budget >= ratio(hi)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if ratio(mid) > budget:
            lo = mid
        else:
            hi = mid
    return make(hi)


def check_budget(budget: float) -> None:
    if not (isinstance(budget, (int, float)) and 0.0 < budget <= 1.0):
        raise ConfigError(f"budget must satisfy 0 < budget <= 1, got {budget!r}")


def schedule_for_budget(
    schedule: str, cfg, budget: float, L: int, protect: int, criterion: str = "last",
    floor: float = DEFAULT_FLOOR, every: int = 1,
) -> tuple[float, ...]:
    """`linear` or `uniform` ratios meeting the budget, stepped over `every` layers; budget 1.0 gives the dense
    schedule."""
    if schedule not in ("linear", "uniform"):
        raise ConfigError(f"schedule {schedule!r} is not a closed-form schedule (use linear or uniform)")
    r = solve_budget(family(schedule, cfg.n_layer, floor, every), cfg, budget, L, protect, criterion)
    validate_schedule(r, cfg, budget, L, protect, criterion, floor)
    return r


def validate_schedule(r, cfg, budget: float, L: int, protect: int, criterion: str, floor: float = DEFAULT_FLOOR):
    """Monotone, within [floor, 1], one ratio per layer, and the budget met within BUDGET_TOLERANCE."""
    if len(r) != cfg.n_layer:
        raise ConfigError(f"{len(r)} keep ratios given for a model with {cfg.n_layer} layers")
    validate_ratios(tuple(r), floor)
    achieved = flops_report(cfg, r, L, protect, criterion).ratio
    if achieved > budget + 1e-12:
        raise ConfigError(f"schedule exceeds the budget: FLOPs ratio {achieved:.4f} > {budget:g}")
    # one token more in every layer moves the ratio by about 1/L: short sequences cannot land closer than that
    tol = max(BUDGET_TOLERANCE, 1.0 / L)
    if budget - achieved > tol and any(x < 1.0 for x in r):
        raise ConfigError(f"schedule undershoots the budget: FLOPs ratio {achieved:.4f} < {budget:g} - {tol:.4f}")
    return achieved
