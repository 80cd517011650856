"""Whole-model backends: every backend the machine can run gives the reference's logits and kept-token sets.

`reference` runs everywhere; `triton` on CUDA (the Triton ops are tested one by one under the CPU interpreter
in their own files); `cuda` (mamba_ssm / causal_conv1d) where those packages import on a GPU.
"""

from __future__ import annotations

import pytest
import torch

from simba_convert.errors import BackendError
from simba_convert.model import mixer_cuda
from simba_convert.model.config import MambaConfig
from simba_convert.model.mamba import MambaLM
from simba_convert.ops.backend import resolve_model
from simba_convert.pruning import schedules
from simba_convert.pruning.model import PrunedMambaLM
from simba_convert.pruning.spec import PruningSpec
from tests.tolerance import assert_matches, rel_rms

GPU_BACKENDS = ["triton", pytest.param("cuda", marks=pytest.mark.skipif(
    not mixer_cuda.available(), reason="mamba_ssm / causal_conv1d do not import here"))]


def test_unknown_backend_is_refused():
    model = MambaLM(MambaConfig(d_model=16, n_layer=1, vocab_size=32))
    with pytest.raises(BackendError, match="unknown backend 'fast'"):
        model.set_backend("fast")
    with pytest.raises(BackendError, match="unknown backend"):
        resolve_model("fast", torch.device("cpu"))


def test_cuda_backend_off_gpu_names_the_extra():
    with pytest.raises(BackendError, match=r"simba-convert\[cuda\]"):
        resolve_model("cuda", torch.device("cpu"))


def test_auto_on_cpu_is_the_reference():
    assert resolve_model("auto", torch.device("cpu")) == "reference"
    model = MambaLM(MambaConfig(d_model=16, n_layer=2, vocab_size=32)).eval()
    ids = torch.randint(0, 32, (2, 9))
    with torch.no_grad():
        assert torch.equal(model.set_backend("auto")(ids), model.set_backend("reference")(ids))


@pytest.mark.parametrize("B, L, cuda", [
    (1, 2048, True), (4, 2048, True),  # mamba_ssm's layer was faster (H200, graph replays)
    (16, 2048, False), (1, 8192, False), (4, 8192, False),  # ours was
    (1, 1640, False),  # off mamba_ssm's even-length path (a pruned layer's token count)
])
def test_auto_takes_mamba_ssm_only_where_it_was_faster(B, L, cuda):
    assert mixer_cuda.preferred(B, L) is cuda


def _model(dtype):
    torch.manual_seed(0)
    cfg = MambaConfig(d_model=96, n_layer=4, vocab_size=200)
    return MambaLM(cfg).to("cuda", dtype).eval(), cfg


@pytest.mark.gpu
@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("L", [1, 63, 100])
def test_dense_backend_matches_reference(backend, dtype, L):
    model, cfg = _model(dtype)
    ids = torch.randint(0, cfg.vocab_size, (3, L), device="cuda")
    with torch.no_grad():
        ref = model.set_backend("reference")(ids).float()
        out = model.set_backend(backend)(ids)
        logits, states = model(ids, return_state=True)
        _, ref_states = model.set_backend("reference")(ids, return_state=True)
    # The reference itself runs in the model's dtype between ops (bf16 rounding at each op boundary), so
    # compare bf16 by relative RMS of the logits; fp32 under the elementwise contract.
    if dtype == torch.float32:
        assert_matches(out, ref)
        for (c, s), (rc, rs) in zip(states, ref_states):
            assert_matches(c.float(), rc.float())
            assert_matches(s, rs)
    else:
        assert rel_rms(out.float(), ref) <= 2e-2  # bf16 everywhere, 4 layers: rounding differs op by op


@pytest.mark.gpu
@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_pruned_backend_keeps_the_reference_tokens(backend):
    model, cfg = _model(torch.float32)
    L, P = 100, 8
    spec = PruningSpec(schedules.schedule_for_budget("linear", cfg, 0.5, L, P), protect=P)
    pm = PrunedMambaLM(model, spec)
    ids = torch.randint(0, cfg.vocab_size, (3, L), device="cuda")
    with torch.no_grad():
        model.set_backend("reference")
        ref, ref_info = pm(ids, return_info=True)
        model.set_backend(backend)
        out, info = pm(ids, return_info=True)
    for k, rk in zip(info.kept, ref_info.kept):
        assert torch.equal(k, rk)
    assert_matches(out, ref)


def test_graphed_generation_is_refused_off_cuda():
    from simba_convert.errors import ConfigError

    model = MambaLM(MambaConfig(d_model=16, n_layer=1, vocab_size=32)).eval()
    with pytest.raises(ConfigError, match="CUDA"):
        model.generate(torch.randint(0, 32, (1, 5)), 3, cuda_graph=True)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["reference", *GPU_BACKENDS])
def test_graphed_generation_matches_eager(backend):
    model, cfg = _model(torch.float32)
    model.set_backend(backend)
    ids = torch.randint(0, cfg.vocab_size, (2, 37), device="cuda")
    eager = model.generate(ids, 9, cuda_graph=False)
    assert torch.equal(model.generate(ids, 9, cuda_graph=True), eager)
    assert torch.equal(model.generate(ids, 9), eager)  # the default on CUDA; reuses the captured step


@pytest.mark.gpu
@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_graphed_pruned_prefill_matches_eager(backend):
    from simba_convert.model import generate as gen

    model, cfg = _model(torch.float32)
    model.set_backend(backend)
    pm = PrunedMambaLM(model, PruningSpec([1.0] + [0.5] * (cfg.n_layer - 1), protect=3))
    calls = [torch.randint(0, cfg.vocab_size, (2, 41), device="cuda") for _ in range(3)]
    for i, ids in enumerate(calls):  # the shape's second prompt is captured, the third replays the capture
        eager = pm.generate(ids, 6, cuda_graph=False)
        assert torch.equal(pm.generate(ids, 6), eager), f"call {i}"
    assert len(pm.__dict__["_graphed_prefills"]) == 1
    for L in range(8, 10 + gen.PREFILL_GRAPHS):  # older shapes give way to newer ones
        for _ in range(2):
            pm.generate(calls[0][:, :L], 1)
    assert len(pm.__dict__["_graphed_prefills"]) == gen.PREFILL_GRAPHS


@pytest.mark.gpu
@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_step_matches_reference(backend):
    model, cfg = _model(torch.float32)
    ids = torch.randint(0, cfg.vocab_size, (3, 20), device="cuda")
    _, states = model.set_backend("reference").prefill(ids)
    tok = torch.randint(0, cfg.vocab_size, (3,), device="cuda")
    kept = [(c.clone(), s.clone()) for c, s in states]
    ref, ref_states = model.step(tok, states)
    out, new_states = model.set_backend(backend).step(tok, states)
    assert_matches(out, ref)
    for (c, s), (rc, rs), (kc, ks) in zip(new_states, ref_states, kept):
        assert_matches(c, rc)
        assert_matches(s, rs)
    for (c, s), (kc, ks) in zip(states, kept):  # the caller's states are not modified
        assert torch.equal(c, kc) and torch.equal(s, ks)
