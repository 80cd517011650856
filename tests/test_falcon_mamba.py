"""FalconMamba (transformers model_type "falcon_mamba"): Mamba-1 with a weightless RMSNorm on dt (before dt_proj), B
and C, and an untied head. Loaded from transformers' own save_pretrained and checked against FalconMambaForCausalLM
(the oracle): logits, decoding, generation, the impact score's inputs, the pruned model, the mamba_ssm-kernel
mixer (with CPU stand-ins for the kernels) and the save/reload round trip."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import simba_convert
from simba_convert.errors import CheckpointError, ConfigError
from simba_convert.io.layout import expected_shapes, inspect_checkpoint, parameter_count
from simba_convert.model import mixer_cuda
from simba_convert.model.config import MambaConfig
from simba_convert.model.mamba import MambaLM
from simba_convert.ops.conv1d import causal_conv1d_ref
from simba_convert.ops.score import impact_score_ref
from simba_convert.ops.scan import selective_scan_ref, step_size
from simba_convert.pruning.model import PrunedMambaLM
from simba_convert.pruning.spec import PruningSpec
from tolerance import assert_matches
from ckpt_helpers import randomize_weights

pytest.importorskip("transformers")

VOCAB, HIDDEN, STATE, LAYERS, RANK = 97, 40, 7, 2, 5
# Larger than FalconMamba's 1e-6 so that a wrong or ignored eps moves the logits well past the tolerance.
EPS = 1e-2


def _hf_falcon(seed: int = 0):
    """A FalconMambaForCausalLM with every parameter random (norm weights and D included), untied head."""
    from transformers import FalconMambaConfig, FalconMambaForCausalLM

    torch.manual_seed(seed)
    cfg = FalconMambaConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, state_size=STATE, num_hidden_layers=LAYERS, conv_kernel=4,
        time_step_rank=RANK, mixer_rms_eps=EPS, tie_word_embeddings=False,
    )
    # dt biases N(-2, 1): steps from ~0.02 to ~1, so tokens get different scores
    return randomize_weights(FalconMambaForCausalLM(cfg).eval(), seed + 1, dt_bias=(1.0, -2.0))


@pytest.fixture(scope="module")
def hf():
    return _hf_falcon()


@pytest.fixture(scope="module")
def saved(hf, tmp_path_factory):
    d = tmp_path_factory.mktemp("falcon")
    hf.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def ours(saved):
    return simba_convert.load(saved)


def _ids(length: int, b: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (b, length), generator=torch.Generator().manual_seed(seed))


def _logits(model, ids):
    with torch.no_grad():
        out = model(ids)
    return out.logits if hasattr(out, "logits") else out


# --- config ------------------------------------------------------------------------------------------------
def test_config_is_read_from_transformers_save_pretrained(saved, ours):
    raw = json.loads((saved / "config.json").read_text())
    assert raw["model_type"] == "falcon_mamba" and raw["tie_word_embeddings"] is False
    info = inspect_checkpoint(saved)
    assert info.layout == "hf"
    cfg = ours.config
    assert (cfg.bcdt_rms, cfg.mixer_rms_eps, cfg.tie_embeddings) == (True, EPS, False)
    assert (cfg.d_model, cfg.d_state, cfg.n_layer, cfg.dt_rank, cfg.padded_vocab_size) == (HIDDEN, STATE, LAYERS, RANK, VOCAB)
    assert ours.lm_head.weight is not ours.backbone.embedding.weight
    assert not torch.equal(ours.lm_head.weight, ours.backbone.embedding.weight)
    # the norms are weightless: no tensor beyond Mamba-1's, and transformers saved none either
    assert expected_shapes(cfg) == {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert parameter_count(cfg) == sum(p.numel() for p in ours.parameters())


def test_config_mappings_and_validation():
    cfg = MambaConfig.from_hf({"model_type": "falcon_mamba", "hidden_size": 40, "num_hidden_layers": 2,
                               "vocab_size": 65024, "tie_word_embeddings": False})
    assert cfg.bcdt_rms and cfg.mixer_rms_eps == 1e-6 and not cfg.tie_embeddings  # transformers' default eps
    hf = cfg.to_hf()
    assert (hf["model_type"], hf["architectures"], hf["mixer_rms_eps"]) == ("falcon_mamba", ["FalconMambaForCausalLM"], 1e-6)
    assert MambaConfig.from_hf(hf) == cfg
    # Mamba-1 configs (old ones without the fields included) load and write as before
    plain = MambaConfig.from_hf({**hf, "model_type": "mamba"})
    assert not plain.bcdt_rms and plain.to_hf()["model_type"] == "mamba" and "mixer_rms_eps" not in plain.to_hf()
    assert MambaConfig(d_model=40, n_layer=2, vocab_size=97).bcdt_rms is False
    assert MambaConfig.from_mamba_ssm(plain.to_mamba_ssm()).bcdt_rms is False
    with pytest.raises(ConfigError, match="no mamba_ssm layout"):
        cfg.to_mamba_ssm()
    for bad in (0.0, -1e-6, float("nan"), float("inf"), "1e-6", True):
        with pytest.raises(ConfigError, match="mixer_rms_eps"):
            dataclasses.replace(cfg, mixer_rms_eps=bad)
    with pytest.raises(ConfigError, match="bcdt_rms"):
        dataclasses.replace(cfg, bcdt_rms=1)
    with pytest.raises(CheckpointError, match="model_type='mamba2'"):
        MambaConfig.from_hf({**hf, "model_type": "mamba2"})


# --- the dense model against transformers -------------------------------------------------------------------
@pytest.mark.parametrize("length", [1, 37, 100])
def test_logits_equal_transformers(hf, ours, length):
    ids = _ids(length)
    assert_matches(_logits(ours, ids), _logits(hf, ids))


def test_the_norms_and_their_eps_change_the_logits(hf, ours):
    """The comparison above can fail: the same weights without the norms, or with another eps, are far off."""
    ids = _ids(37)
    ref = _logits(hf, ids)
    for cfg in (dataclasses.replace(ours.config, bcdt_rms=False), dataclasses.replace(ours.config, mixer_rms_eps=1e-6)):
        other = MambaLM(cfg).eval()
        other.load_state_dict(ours.state_dict())
        with pytest.raises(AssertionError, match="fp32 mismatch"):
            assert_matches(_logits(other, ids), ref)


def test_step_decoding_equals_full_forward(ours):
    ids = _ids(12, b=3)
    with torch.no_grad():
        full = ours(ids)
        logits, states = ours.prefill(ids[:, :5])
        steps = [logits]
        for t in range(5, ids.shape[1]):
            logits, states = ours.step(ids[:, t], states)
            steps.append(logits)
    assert_matches(torch.stack(steps, dim=1), full[:, 4:])


def test_greedy_generation_matches_transformers(hf, ours):
    ids = _ids(7)
    out = ours.generate(ids, 8)
    assert len(set(out[:, 7:].flatten().tolist())) > 2  # not one repeated token
    assert torch.equal(out, hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False))


# --- the impact score and the pruned model -----------------------------------------------------------------
def _oracle_ssm_inputs(hf, layer: int, u: torch.Tensor):
    """transformers' dt (dt_proj without bias), B, C for the conv output u [B, L, D]."""
    m = hf.backbone.layers[layer].mixer
    dt_low, Bm, Cm = torch.split(m.x_proj(u), [RANK, STATE, STATE], dim=-1)
    dt = m.dt_layernorm(dt_low) @ m.dt_proj.weight.t()
    return dt, m.b_layernorm(Bm), m.c_layernorm(Cm)


@torch.no_grad()
def test_internals_hold_normed_b_c_dt(hf, ours):
    layer = ours.backbone.layers[0]
    h, _ = layer.add_norm(ours.backbone.embedding(_ids(37)), None)
    _, it = layer.mixer(h, return_internals=True)
    dt, Bm, Cm = _oracle_ssm_inputs(hf, 0, it.u)
    assert_matches(it.dt, dt)
    assert_matches(it.Bm, Bm)
    assert_matches(it.Cm, Cm)
    assert_matches(it.delta, step_size(dt, hf.backbone.layers[0].mixer.dt_proj.bias, True))


@torch.no_grad()
def test_pruned_model_keeps_the_topk_of_the_normed_score(hf, ours):
    L, P = 40, 4
    ids = _ids(L, b=3, seed=5)
    s = PruningSpec((1.0, 0.5), protect=P)
    out, info = PrunedMambaLM(ours, s, score_backend="reference")(ids, return_info=True)
    assert torch.isfinite(out).all()
    layer = ours.backbone.layers[0]
    h, _ = layer.add_norm(ours.backbone.embedding(ids), None)
    _, it = layer.mixer(h, return_internals=True)
    m = hf.backbone.layers[0].mixer
    k = s.keep_counts(L)[1]

    def kept(dt, Bm, Cm):
        sc = impact_score_ref(it.u, step_size(dt, m.dt_proj.bias, True), it.A, Bm, Cm, criterion="last")
        return [set(torch.topk(sc[b, : L - P], k - P).indices.tolist()) | set(range(L - P, L)) for b in range(3)]

    expect = kept(*_oracle_ssm_inputs(hf, 0, it.u))
    assert [set(row.tolist()) for row in info.kept[1]] == expect
    # scores on un-normed B, C, dt keep other tokens, so the check above tells the two apart
    dt_low, Bm, Cm = torch.split(m.x_proj(it.u), [RANK, STATE, STATE], dim=-1)
    assert kept(dt_low @ m.dt_proj.weight.t(), Bm, Cm) != expect


@torch.no_grad()
def test_pruned_budget_one_is_dense_exactly(ours):
    ids = _ids(33)
    assert torch.equal(PrunedMambaLM(ours, PruningSpec((1.0,) * LAYERS, protect=3))(ids), ours(ids))


# --- the mixer on mamba_ssm's kernels (stand-ins with the kernels' channels-first signatures) ---------------
def _conv_fn(x, weight, bias, activation):
    return causal_conv1d_ref(x.transpose(1, 2), weight, bias, None, activation).transpose(1, 2)


def _scan_fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state=False):
    t = lambda a: a.transpose(1, 2)  # noqa: E731
    res = selective_scan_ref(t(u), t(delta), A, t(B), t(C), D, t(z), delta_bias, delta_softplus,
                             return_last_state=return_last_state)
    return (t(res[0]), res[1]) if return_last_state else t(res)


@torch.no_grad()
def test_cuda_kernel_mixer_applies_the_norms(ours, monkeypatch):
    monkeypatch.setattr(mixer_cuda, "_kernels", lambda: (_conv_fn, _scan_fn, None, None))
    mixer = ours.backbone.layers[1].mixer
    h = torch.randn(2, 37, HIDDEN)
    out, (conv, ssm), it = mixer_cuda.mixer_forward(mixer, h, True, True)
    ref, (rconv, rssm), rit = mixer(h, return_state=True, return_internals=True)
    assert_matches(out, ref)
    assert_matches(conv, rconv)
    assert_matches(ssm, rssm)
    for name in ("u", "dt", "Bm", "Cm"):
        assert_matches(getattr(it, name), getattr(rit, name))


# --- saving ------------------------------------------------------------------------------------------------
def test_save_reload_round_trip_keeps_falcon_mamba(hf, ours, tmp_path):
    from safetensors import safe_open
    from transformers import FalconMambaForCausalLM

    simba_convert.save_checkpoint(ours, tmp_path / "out", layout="hf")
    raw = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (raw["model_type"], raw["mixer_rms_eps"], raw["tie_word_embeddings"]) == ("falcon_mamba", EPS, False)
    with safe_open(str(tmp_path / "out" / "model.safetensors"), framework="pt") as f:
        assert "lm_head.weight" in f.keys() and "backbone.embeddings.weight" in f.keys()
    again = simba_convert.load(tmp_path / "out")
    assert again.config == ours.config
    ids = _ids(37)
    assert torch.equal(_logits(again, ids), _logits(ours, ids))
    # transformers reads what we wrote as the same FalconMamba
    theirs = FalconMambaForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert not theirs.config.tie_word_embeddings and theirs.config.mixer_rms_eps == EPS
    assert_matches(_logits(ours, ids), _logits(theirs, ids))


def test_mamba_ssm_layout_is_refused_before_writing(ours, tmp_path):
    with pytest.raises(ConfigError, match="no mamba_ssm layout"):
        simba_convert.save_checkpoint(ours, tmp_path / "out", layout="mamba_ssm")
    assert list(tmp_path.iterdir()) == []
