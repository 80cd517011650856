"""Stepped schedules (`--prune-every K`): the kept count changes every K layers only, so only those layers score
and select; the budget is still met, calibration keeps the steps, and the pruned model scores exactly there."""

import math

import pytest
import torch

from simba_convert.calibrate.search import calibrate
from simba_convert.errors import ConfigError
from simba_convert.model.config import MambaConfig
from simba_convert.model.mamba import MambaLM
from simba_convert.pipeline.config import ConvertConfig
from simba_convert.pruning import flops, schedules
from simba_convert.pruning.model import PrunedMambaLM
from simba_convert.pruning.spec import PruningSpec, validate_ratios
from test_calibrate import CFG48, late_pruning_is_cheap


def _steps_only_at_group_starts(r, every):
    return all(r[i] == r[i - 1] for i in range(2, len(r)) if (i - 1) % every)


@pytest.mark.parametrize("every", [1, 2, 4, 5])
@pytest.mark.parametrize("name", ["linear", "uniform"])
@pytest.mark.parametrize("budget", [0.4, 0.6, 0.8])
def test_stepped_schedules_meet_the_budget_with_fewer_prune_points(name, budget, every):
    r = schedules.schedule_for_budget(name, CFG48, budget, 2048, 64, every=every)
    validate_ratios(r)
    assert budget - 0.005 <= flops.flops_report(CFG48, r, 2048, 64).ratio <= budget
    assert _steps_only_at_group_starts(r, every)
    assert schedules.prune_points(r) <= math.ceil(47 / every)
    if name == "linear" and every > 1:  # the steps are real: it still prunes in more than one place
        assert schedules.prune_points(r) > 1


def test_every_one_is_the_paper_schedule_and_bad_values_are_refused():
    assert schedules.stepped((1.0, 0.9, 0.8), 1) == (1.0, 0.9, 0.8)
    assert schedules.stepped((1.0, 0.9, 0.8, 0.7, 0.6, 0.5), 2) == (1.0, 0.9, 0.9, 0.7, 0.7, 0.5)
    assert schedules.family("linear", 48, every=1)(0.5) == schedules.linear_ratios(48, 0.5 * 0.95)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="prune_every"):
            schedules.stepped((1.0, 0.5), bad)
        with pytest.raises(ConfigError, match="prune_every"):
            ConvertConfig(src="x", prune_every=bad)


def test_calibration_keeps_the_steps_and_the_budget():
    res = calibrate(late_pruning_is_cheap, CFG48, 0.6, 1024, 32, max_evals=30, every=4)
    assert len(res.history) == 30
    for c in res.history:
        validate_ratios(c.ratios)
        assert _steps_only_at_group_starts(c.ratios, 4), c.label
        assert 0.595 <= flops.flops_report(CFG48, c.ratios, 1024, 32).ratio <= 0.6
    assert res.best.kl <= res.linear.kl
    again = calibrate(late_pruning_is_cheap, CFG48, 0.6, 1024, 32, max_evals=30, every=4)
    assert again.best.ratios == res.best.ratios


@torch.no_grad()
def test_the_pruned_model_scores_only_at_the_steps(monkeypatch):
    cfg = MambaConfig(d_model=16, n_layer=9, vocab_size=37, d_state=4)
    model = MambaLM(cfg).eval()
    r = schedules.schedule_for_budget("linear", cfg, 0.6, 64, 4, every=3)
    calls = []
    from simba_convert.model.mamba import MambaMixer

    real = MambaMixer.forward

    def spy(self, h, *a, **kw):
        calls.append(bool(kw.get("return_internals")))
        return real(self, h, *a, **kw)

    monkeypatch.setattr(MambaMixer, "forward", spy)
    PrunedMambaLM(model, PruningSpec(r, protect=4))(torch.randint(0, 37, (2, 64)))
    assert [i for i, c in enumerate(calls) if c] == [i for i in range(8) if r[i + 1] < r[i]]
    assert sum(calls) == schedules.prune_points(r) <= 3
