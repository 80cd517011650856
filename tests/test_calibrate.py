"""The calibration search on synthetic objectives: budget, monotonicity, determinism, never worse than linear."""

import pytest

from simba_convert.calibrate.objective import Evaluation
from simba_convert.calibrate.search import calibrate, shift
from simba_convert.model.config import MambaConfig
from simba_convert.pruning.flops import flops_report
from simba_convert.pruning.spec import validate_ratios

CFG48 = MambaConfig(d_model=256, n_layer=48, vocab_size=1000)


def late_pruning_is_cheap(r):
    """A synthetic KL that prefers keeping the lower layers dense (a trapezoid with a late drop)."""
    return Evaluation(kl=sum(w * (1 - x) ** 2 for w, x in zip(range(len(r), 0, -1), r)), nll=1.0)


@pytest.mark.parametrize("budget", [0.4, 0.6, 0.8])
def test_every_candidate_is_valid_and_meets_the_budget(budget):
    res = calibrate(late_pruning_is_cheap, CFG48, budget, 1024, 32, max_evals=30)
    assert len(res.history) == 30, "a deep model must still get refinement candidates"
    for c in res.history:
        validate_ratios(c.ratios)
        assert budget - 0.005 <= flops_report(CFG48, c.ratios, 1024, 32).ratio <= budget
    assert res.best.kl <= res.linear.kl and res.best.kl <= res.uniform.kl
    assert res.best.kl < res.linear.kl, "the refinement found something better than linear"


def test_same_seed_same_ratios_other_seed_other_path():
    a = calibrate(late_pruning_is_cheap, CFG48, 0.6, 1024, 32, max_evals=25, seed=1)
    b = calibrate(late_pruning_is_cheap, CFG48, 0.6, 1024, 32, max_evals=25, seed=1)
    c = calibrate(late_pruning_is_cheap, CFG48, 0.6, 1024, 32, max_evals=25, seed=2)
    assert a.best.ratios == b.best.ratios
    assert [x.ratios for x in a.history] != [x.ratios for x in c.history]


def test_shift_keeps_monotone():
    r = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)
    for i in range(1, 6):
        for j in range(1, 6):
            if i != j:
                out = shift(r, i, j, 0.15, 0.05)
                validate_ratios(out)
    assert shift(r, 4, 2, 0.1, 0.05)[4] <= shift(r, 4, 2, 0.1, 0.05)[3]


def test_curve_is_best_so_far():
    res = calibrate(late_pruning_is_cheap, CFG48, 0.6, 1024, 32, max_evals=12)
    curve = res.curve()
    assert len(curve) == 12 and all(a >= b for a, b in zip(curve, curve[1:]))
    assert curve[-1] == res.best.kl


class _HeldOut:
    """A held-out objective: `inputs` (its windows) and a KL per schedule."""

    def __init__(self, kl):
        self.inputs, self.kl = __import__("torch").zeros(3, 8), kl

    def __call__(self, r):
        return Evaluation(kl=self.kl(r), nll=1.0)


@pytest.mark.parametrize("linear_wins_held_out", [True, False])
def test_calibrate_owns_the_held_out_fallback(linear_wins_held_out):
    """calibrate(holdout=) is the shipped algorithm: it falls back to linear exactly when linear is better held out."""
    plain = calibrate(late_pruning_is_cheap, CFG48, 0.6, 1024, 32, max_evals=20)
    assert plain.best.ratios != plain.linear.ratios
    lin = plain.linear.ratios
    held = _HeldOut(lambda r: (0.0 if tuple(r) == tuple(lin) else 1.0) if linear_wins_held_out else
                    (1.0 if tuple(r) == tuple(lin) else 0.0))
    res = calibrate(late_pruning_is_cheap, CFG48, 0.6, 1024, 32, max_evals=20, holdout=held)
    assert res.holdout == {"windows": 3, "best_kl": 1.0 if linear_wins_held_out else 0.0,
                           "linear_kl": 0.0 if linear_wins_held_out else 1.0, "fell_back": linear_wins_held_out}
    assert res.best.ratios == (lin if linear_wins_held_out else plain.best.ratios)
