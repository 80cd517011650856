"""The mixers' derived parameters (A = -exp(A_log), fp32 D and step-size bias: model/derived.py) are formed once for
inference and never go stale: an in-place update, a new dtype or a gradient pass each sees fresh values."""

from __future__ import annotations

import pytest
import torch

from simba_convert.arch.mamba2 import Mamba2Config, Mamba2LM
from simba_convert.model.config import MambaConfig
from simba_convert.model.mamba import MambaLM


def mixers():
    torch.manual_seed(0)
    m1 = MambaLM(MambaConfig(d_model=16, n_layer=1, vocab_size=31, d_state=5)).backbone.layers[0].mixer
    m2 = Mamba2LM(Mamba2Config(d_model=16, n_layer=1, vocab_size=31, d_state=5, headdim=8)).backbone.layers[0].mixer
    return [("mamba1", m1, lambda m: m.dt_proj.bias), ("mamba2", m2, lambda m: m.dt_bias)]


def fresh(m, bias):
    return -torch.exp(m.A_log.float()), m.D.float(), bias(m).float()


@pytest.mark.parametrize("name", ["mamba1", "mamba2"])
def test_cached_for_inference_and_never_stale(name):
    _, m, bias = next(x for x in mixers() if x[0] == name)
    with torch.no_grad():
        first = m.fp32_params()
        assert m.fp32_params() is first  # formed once
        for got, want in zip(first, fresh(m, bias)):
            assert not got.requires_grad and torch.equal(got, want)
            assert not isinstance(got, torch.nn.Parameter)  # a copy: the cache never aliases a parameter
        m.A_log.add_(0.5)  # an in-place update (a fine-tuning step, a loaded state dict) is seen
        m.D.mul_(2.0)
        bias(m).sub_(0.25)
        again = m.fp32_params()
        assert again is not first
        for got, want in zip(again, fresh(m, bias)):
            assert torch.equal(got, want)
    m.double()  # a new dtype (a new storage) is seen too
    with torch.no_grad():
        assert m.fp32_params()[0].dtype == torch.float32
        assert torch.equal(m.fp32_params()[0], -torch.exp(m.A_log.float()))


@pytest.mark.parametrize("name", ["mamba1", "mamba2"])
def test_gradients_reach_the_parameters_when_they_train(name):
    _, m, bias = next(x for x in mixers() if x[0] == name)
    with torch.no_grad():
        m.fp32_params()  # a cache from an earlier inference pass must not be returned to autograd
    A, D, b = m.fp32_params()
    assert A.requires_grad and D.requires_grad and b.requires_grad
    (A.sum() + D.sum() + b.sum()).backward()
    assert m.A_log.grad is not None and m.D.grad is not None and bias(m).grad is not None
    assert torch.allclose(m.A_log.grad, -torch.exp(m.A_log.detach()))


def test_not_cached_for_inference_tensors():
    with torch.inference_mode():
        m = Mamba2LM(Mamba2Config(d_model=16, n_layer=1, vocab_size=31, d_state=5, headdim=8)).backbone.layers[0].mixer
        a, b = m.fp32_params(), m.fp32_params()
    assert a[0] is not b[0] and "_derived_cache" not in m.__dict__
