"""Search for per-layer keep ratios under a FLOPs budget (SIMBA.md §6).

1. Evaluate `linear` and `uniform` at the budget (the search can always fall back to them).
2. Evaluate a small grid of the `shaped` family (dense prefix × curvature), each solved to the budget.
3. Refine per layer from the best: move δ of keep ratio between two layers, re-solve the budget by
   scaling every layer's pruned fraction, keep the move if the KL falls; δ shrinks over rounds.
With `every` > 1 every candidate is stepped (`schedules.stepped`: the ratio changes every `every` layers only)
and the refinement moves ratio between groups.
The move order comes from `seed`, so the same seed gives the same ratios. `cfg` is any architecture's config:
budgets are met against its FLOPs model (pruning/flops.py).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable

from ..errors import ConfigError
from ..pruning import schedules
from ..pruning.flops import flops_report
from ..pruning.spec import DEFAULT_FLOOR


@dataclass
class Candidate:
    label: str
    ratios: tuple[float, ...]
    kl: float
    nll: float
    flops_ratio: float


@dataclass
class CalibrationResult:
    best: Candidate
    linear: Candidate
    uniform: Candidate
    history: list[Candidate] = field(default_factory=list)
    holdout: dict | None = None  # the held-out check of the chosen schedule against linear, if made

    def curve(self) -> list[float]:
        """Best KL so far after each evaluation (the calibration curve)."""
        out, best = [], float("inf")
        for c in self.history:
            best = min(best, c.kl)
            out.append(best)
        return out

    def to_dict(self) -> dict:
        def cd(c: Candidate):
            return {"label": c.label, "keep_ratios": list(c.ratios), "kl": c.kl, "nll": c.nll, "flops_ratio": c.flops_ratio}

        return {"best": cd(self.best), "linear": cd(self.linear), "uniform": cd(self.uniform),
                "evaluations": len(self.history), "curve": self.curve(), "holdout": self.holdout,
                "history": [cd(c) for c in self.history]}


def shift(ratios, i: int, j: int, delta: float, floor: float) -> tuple[float, ...]:
    """Raise layer i's ratio by delta and lower layer j's, then restore monotonicity by lifting the layers
    below i and lowering the layers above j as far as needed (the first layer stays at 1)."""
    r = list(ratios)
    r[i] = min(1.0, r[i] + delta)
    r[j] = max(floor, r[j] - delta)
    for k in range(1, i):
        r[k] = max(r[k], r[i])
    for k in range(j + 1, len(r)):
        r[k] = min(r[k], r[j])
    for k in range(1, len(r)):  # i above j: the two moves can cross; keep the sequence non-increasing
        r[k] = min(r[k], r[k - 1])
    return tuple(r)


def rebalance(ratios, cfg, budget: float, L: int, protect: int, criterion: str, floor: float):
    """Scale every layer's pruned fraction (1 - r) by one factor so the budget is met; None if it cannot be."""
    base = tuple(ratios)
    top = max(base[1:], default=1.0)
    if top >= 1.0:
        return None
    t_max = (1.0 - floor) / (1.0 - top)  # at t_max every layer after the first sits at the floor
    make = lambda s: tuple(max(floor, min(1.0, 1.0 - (1.0 - r) * s * t_max)) if i else 1.0 for i, r in enumerate(base))  # noqa: E731
    try:
        return schedules.solve_budget(make, cfg, budget, L, protect, criterion)
    except ConfigError:
        return None


def calibrate(
    evaluate: Callable,
    cfg,
    budget: float,
    L: int,
    protect: int,
    *,
    criterion: str = "last",
    floor: float = DEFAULT_FLOOR,
    seed: int = 0,
    max_evals: int = 40,
    on_eval: Callable[[Candidate], None] | None = None,
    holdout: Callable | None = None,
    every: int = 1,
) -> CalibrationResult:
    """Minimise evaluate(ratios).kl over schedules meeting `budget` (exact FLOPs at length L, protect P).

    `holdout` (an objective on windows the search never saw; `holdout_count` of them) makes the result fall back to
    `linear` when the searched schedule is worse than it there (SIMBA.md §6): the shipped algorithm, whoever calls it.
    """
    n = cfg.n_layer
    history: list[Candidate] = []
    seen: dict[tuple, Candidate] = {}

    def run(label: str, ratios) -> Candidate:
        key = tuple(round(r, 6) for r in ratios)
        if key in seen:
            return seen[key]
        ev = evaluate(ratios)
        c = Candidate(label, tuple(ratios), ev.kl, ev.nll, flops_report(cfg, ratios, L, protect, criterion).ratio)
        seen[key] = c
        history.append(c)
        if on_eval:
            on_eval(c)
        return c

    lin = run("linear", schedules.schedule_for_budget("linear", cfg, budget, L, protect, criterion, floor, every))
    uni = run("uniform", schedules.schedule_for_budget("uniform", cfg, budget, L, protect, criterion, floor, every))
    best = min((lin, uni), key=lambda c: c.kl)
    if budget >= 1.0 or n < 3:
        return CalibrationResult(best, lin, uni, history)

    prefixes = sorted({1, 2, max(1, n // 4)})
    for prefix in prefixes:
        for gamma in (0.5, 1.0, 2.0):
            if len(history) >= max_evals:
                break
            make = schedules.family("shaped", n, floor, every, prefix=prefix, gamma=gamma)
            try:
                r = schedules.solve_budget(make, cfg, budget, L, protect, criterion)
            except ConfigError:
                continue
            c = run(f"shaped(prefix={prefix},gamma={gamma})", r)
            best = min(best, c, key=lambda c: c.kl)

    rng = random.Random(seed)
    starts = range(1, n, every)  # a group's first layer carries the group's ratio
    pairs = [(i, j) for i in starts for j in starts if i != j]
    for delta in (0.1, 0.05, 0.025):
        rng.shuffle(pairs)
        for i, j in pairs:
            if len(history) >= max_evals:
                break
            moved = schedules.stepped(shift(best.ratios, i, j, delta, floor), every)
            r = rebalance(moved, cfg, budget, L, protect, criterion, floor)
            if r is None:
                continue
            c = run(f"refine(δ={delta},{i}↔{j})", r)
            if c.kl < best.kl:
                best = c
    return check_holdout(CalibrationResult(best, lin, uni, history), holdout)


def holdout_count(samples: int) -> int:
    """How many of `samples` calibration windows are held out of the search to check its result (a quarter)."""
    return samples // 4


def check_holdout(result: CalibrationResult, holdout: Callable | None) -> CalibrationResult:
    """Fall back to `linear` when the searched schedule is worse than it on the held-out windows (SIMBA.md §6)."""
    if holdout is None or result.best.ratios == result.linear.ratios:
        return result
    best_kl, lin_kl = holdout(result.best.ratios).kl, holdout(result.linear.ratios).kl
    result.holdout = {"windows": int(holdout.inputs.shape[0]), "best_kl": best_kl, "linear_kl": lin_kl,
                      "fell_back": best_kl > lin_kl}
    if best_kl > lin_kl:
        result.best = result.linear
    return result
