"""Mamba-2 through the whole pipeline: loading by architecture (both layouts), the pruned model (budget 1.0 ≡ dense,
kept sets = top-k of `impact_score_ssd`, pruned prefill + dense decoding), the FLOPs model against a hand count and
torch's FlopCounterMode, schedules meeting the budget, reproducible calibration, and the CLI end to end (convert,
reload, info, eval, fine-tune; --onnx; hybrids refused with one line).

Checkpoints are tiny random transformers Mamba2ForCausalLM models (4 layers, 4 heads of 8 channels in 2 groups of
8 states, chunk 16) saved with save_pretrained, and the same weights in the mamba_ssm layout.
"""

from __future__ import annotations

import json
import shutil
from importlib.util import find_spec
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from click.testing import CliRunner
from torch.utils.flop_counter import FlopCounterMode

import simba_convert
from simba_convert import format as fmt
from simba_convert.arch.mamba2 import Mamba2Config, Mamba2LM, write_mamba2
from simba_convert.calibrate.objective import KLObjective
from simba_convert.calibrate.search import calibrate
from simba_convert.cli.main import main
from simba_convert.errors import CheckpointError
from simba_convert.io.layout import inspect_checkpoint, parameter_count
from simba_convert.ops.score_ssd import impact_score_ssd
from simba_convert.ops.ssd import ssd_scan_ref, step_size
from simba_convert.pruning import flops, schedules
from simba_convert.pruning.model import PrunedMambaLM
from simba_convert.pruning.spec import PruningSpec
from tolerance import assert_matches
from ckpt_helpers import randomize_weights

pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]
TEXT = (ROOT / "calibration" / "default.txt").read_text(encoding="utf-8")[:20_000]
N_LAYER = 4
FAST = ["--budget", "0.6", "--samples", "4", "--seq-len", "48", "--protect", "4", "--max-evals", "3"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: on a busy 2-core machine threads cost more than they save (test_mamba2_model.py measured it)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _tokenizer(path: Path, vocab: int = 280) -> int:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator([TEXT], trainers.BpeTrainer(vocab_size=vocab, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(path))
    return tok.get_vocab_size()


def randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter random; A < 0 and the step sizes spread over (0, 1), so that token scores differ."""
    return randomize_weights(model, seed, spread_a=True, dt_bias=(0.5, -1.0)).eval()


def hf_checkpoint(path: Path, vocab: int, tokenizer: Path | None = None, seed: int = 0) -> Path:
    from transformers import Mamba2Config as HFConfig, Mamba2ForCausalLM

    torch.manual_seed(seed)
    cfg = HFConfig(hidden_size=16, num_heads=4, head_dim=8, expand=2, n_groups=2, state_size=8,
                   num_hidden_layers=N_LAYER, conv_kernel=4, vocab_size=vocab, chunk_size=16, tie_word_embeddings=False)
    randomize(Mamba2ForCausalLM(cfg), seed + 1).save_pretrained(path)
    if tokenizer is not None:
        shutil.copyfile(tokenizer, path / "tokenizer.json")
    return path


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """The same random Mamba-2 in both layouts (hf: save_pretrained; mamba_ssm: config.json + pytorch_model.bin),
    each with a tokenizer, and a calibration text file."""
    d = tmp_path_factory.mktemp("m2")
    vocab = _tokenizer(d / "tok.json")
    (d / "calib.txt").write_text(TEXT, encoding="utf-8")
    hf = hf_checkpoint(d / "hf", vocab, d / "tok.json")
    ssm = write_mamba2(simba_convert.load(hf), d / "mamba_ssm", layout="mamba_ssm", fmt="bin")
    shutil.copyfile(d / "tok.json", ssm / "tokenizer.json")
    return SimpleNamespace(src={"hf": hf, "mamba_ssm": ssm}, calib=d / "calib.txt", vocab=vocab)


@pytest.fixture(scope="module", params=["hf", "mamba_ssm"])
def dense(request, work):
    return simba_convert.load(work.src[request.param])


def spec(r, **kw) -> PruningSpec:
    return PruningSpec(tuple(r), **kw)


def ids_for(vocab: int, b: int = 2, length: int = 45, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (b, length), generator=torch.Generator().manual_seed(seed))


# --- loading and saving dispatch on the architecture ------------------------------------------------
@pytest.mark.parametrize("layout", ["hf", "mamba_ssm"])
def test_load_and_save_keep_the_architecture_and_layout(work, tmp_path, layout):
    info = inspect_checkpoint(work.src[layout])
    assert (info.architecture, info.layout) == ("mamba2", layout)
    assert info.weight_format == ("safetensors" if layout == "hf" else "bin")
    model = simba_convert.load(work.src[layout])
    assert isinstance(model, Mamba2LM) and isinstance(info.config, Mamba2Config)
    assert parameter_count(info.config) == sum(p.numel() for p in model.parameters())
    simba_convert.save_checkpoint(model, tmp_path / "out", layout=layout)
    again = inspect_checkpoint(tmp_path / "out")
    assert (again.architecture, again.layout, again.config) == ("mamba2", layout, info.config)
    ids = ids_for(work.vocab)
    with torch.no_grad():
        assert torch.equal(simba_convert.load(tmp_path / "out")(ids), model(ids))


def test_hybrids_and_other_layers_are_refused_in_one_line(work, tmp_path):
    cfg = json.loads((work.src["mamba_ssm"] / "config.json").read_text())
    for name, bad, needle in [("hybrid", {**cfg, "attn_layer_idx": [1]}, "hybrid"),
                              ("mamba3", {**cfg, "ssm_cfg": {**cfg["ssm_cfg"], "layer": "Mamba3"}}, "'Mamba3'")]:
        d = tmp_path / name
        shutil.copytree(work.src["mamba_ssm"], d)
        (d / "config.json").write_text(json.dumps(bad))
        with pytest.raises(CheckpointError, match=needle) as e:
            simba_convert.load(d)
        assert "\n" not in str(e.value) and "supported" in str(e.value)


# --- the pruned model ---------------------------------------------------------------------------
@torch.no_grad()
def test_keep_ratio_one_is_dense_exactly(dense):
    ids = ids_for(dense.config.vocab_size)
    pm = PrunedMambaLM(dense, spec([1.0] * N_LAYER, protect=3))
    assert torch.equal(pm(ids), dense(ids))
    assert torch.equal(pm(ids, num_last=3), dense(ids, num_last=3))


@torch.no_grad()
@pytest.mark.parametrize("criterion", ["last", "global", "delta"])
def test_kept_sets_are_the_top_k_of_impact_score_ssd(dense, criterion):
    """Every layer's decision replayed: the dense layers run on the tokens kept so far, scored by impact_score_ssd,
    and the next layer's tokens are the protected suffix plus the top-k of the rest (a sequence of 45 tokens with
    chunk 16: the compacted sequences cross chunk boundaries)."""
    L, P = 45, 4
    s = spec([1.0, 0.7, 0.5, 0.3], criterion=criterion, protect=P)
    ids = ids_for(dense.config.vocab_size, length=L, seed=1)
    _, info = PrunedMambaLM(dense, s, score_backend="reference")(ids, return_info=True)
    counts = s.keep_counts(L)
    layers = dense.backbone.layers
    hidden, residual = dense.backbone.embedding(ids), None
    pos = torch.arange(L).expand(2, L)
    for i in range(N_LAYER - 1):
        assert torch.equal(info.kept[i], pos)
        h, residual = layers[i].add_norm(hidden, residual)
        hidden, it = layers[i].mixer(h, return_internals=True)
        args, kw = it.score_inputs()
        scores = impact_score_ssd(*args, criterion=criterion, backend="reference", **kw)
        n, k = pos.shape[1], counts[i + 1]
        top = torch.topk(scores[:, : n - P], k - P, dim=1).indices
        slots = torch.cat([top, torch.arange(n - P, n).expand(2, P)], 1).sort(1).values
        stream = hidden.to(residual.dtype) + residual
        hidden, residual = torch.gather(stream, 1, slots[..., None].expand(-1, -1, stream.shape[-1])), None
        pos = torch.gather(pos, 1, slots)
    assert torch.equal(info.kept[-1], pos)
    assert pos.shape[1] == counts[-1] < L


@torch.no_grad()
def test_padding_and_every_criterion(dense):
    ids = ids_for(dense.config.vocab_size, b=3, length=37, seed=2)
    mask = torch.ones(3, 37, dtype=torch.bool)
    mask[1, 25:] = False
    mask[2, :9] = False
    for criterion in ("last", "global", "delta", "output", "random"):
        pm = PrunedMambaLM(dense, spec([1.0, 0.6, 0.4, 0.3], criterion=criterion, protect=3))
        out, info = pm(ids, mask, return_info=True)
        assert torch.isfinite(out).all() and (out[~mask] == 0).all()
        for b in range(3):
            if criterion != "random":  # random draws [B, n] scores at once: a batch is not its rows one by one
                assert_matches(out[b, mask[b]], pm(ids[b: b + 1, mask[b]])[0])
            for kept in info.kept:
                row = kept[b][kept[b] >= 0]
                assert mask[b, row].all(), "a padded position was kept"


def replay_kept_tokens(model, ids, kept):
    """Per-layer (conv, ssm) states and last logits by stepping each dense layer token by token from zero states
    over exactly the tokens that layer kept; a layer's input at a token is its stream as the layer below left it."""
    c = model.config
    bsz, rows = ids.shape[0], torch.arange(ids.shape[0])
    stream = model.backbone.embedding(ids)
    states = []
    for layer, kept_l in zip(model.backbone.layers, kept):
        conv = torch.zeros(bsz, c.conv_dim, c.d_conv - 1)
        ssm = torch.zeros(bsz, c.nheads, c.headdim, c.d_state)
        for t in kept_l.t():
            h, res = layer.add_norm(stream[rows, t], None)
            out, conv, ssm = layer.mixer.step(h, conv, ssm)
            stream[rows, t] = out.to(res.dtype) + res
        states.append((conv, ssm))
    return model.head(stream[:, -1]), states


@torch.no_grad()
def test_pruned_prefill_then_dense_decoding(dense):
    ids = ids_for(dense.config.vocab_size, length=40, seed=3)
    pm = PrunedMambaLM(dense, spec([1.0, 0.6, 0.4, 0.3], protect=2))
    full, info = pm(ids, return_info=True)
    last, states = pm.prefill(ids)
    assert_matches(last, full[:, -1])
    assert_matches(last, pm(ids, num_last=1)[:, 0])
    replay_last, replay_states = replay_kept_tokens(dense, ids, info.kept)
    assert_matches(last, replay_last)
    for (conv, ssm), (conv_r, ssm_r) in zip(states, replay_states):
        assert_matches(conv, conv_r)
        assert_matches(ssm, ssm_r)
    # generation: the first token is the pruned forward's argmax, the rest dense steps from the pruned states
    out = pm.generate(ids, 5)
    tokens, logits, st = [], last, states
    for _ in range(5):
        tokens.append(logits.argmax(-1))
        logits, st = dense.step(tokens[-1], st)
    assert torch.equal(out[:, 40:], torch.stack(tokens, 1)) and torch.equal(out[:, :40], ids)
    assert torch.equal(out[:, 40], full[:, -1].argmax(-1))
    assert torch.equal(PrunedMambaLM(dense, spec([1.0] * N_LAYER)).generate(ids, 5), dense.generate(ids, 5))


# --- the FLOPs model -----------------------------------------------------------------------------
CFG = Mamba2Config(d_model=16, n_layer=3, vocab_size=50, d_state=8, d_conv=4, expand=2, headdim=8, ngroups=2,
                   chunk_size=16)


def test_flops_hand_count():
    """d 4, D 8 = 2 heads of 4, 1 group of N 2, K 2, chunks of 4, vocab 8; a layer over n = 6 tokens (a chunk of 4
    and one of 2: S = 16 + 4 = 20 in-chunk pairs, 2 chunks). Counted by hand:
    residual 24, norm 96, in_proj 6·2·4·22 = 1056, conv 6·(2·12·2 + 12) = 360, silu 6·48 = 288, step 6·8 = 48,
    cumsum 6·4 = 24, dx 48, C·Bᵀ 2·1·2·20 = 80, decay 3·2·20 = 120, masked·δx 2·2·4·20 = 320,
    chunk states 6·(32 + 4 + 8) = 264, state passing 2·(32 + 2) = 68, output 6·(32 + 2 + 16) = 300, skip 96,
    gated norm 6·(72 + 2) = 444, out_proj 6·64 = 384: 4020."""
    cfg = Mamba2Config(d_model=4, n_layer=1, vocab_size=8, d_state=2, d_conv=2, expand=2, headdim=4, ngroups=1,
                       chunk_size=4)
    assert flops.layer_flops(cfg, 6) == 4020
    # the head: residual add 4, norm 16, matmul 2·4·8 = 64
    assert flops.head_flops(cfg) == 84
    rep = flops.flops_report(cfg, [1.0], 6, 2)
    assert rep.dense_total == 4020 + 2 * 84 and rep.ratio == 1.0
    # `last` per scored token: 5H 10 + 2GN 4 + 3D 24
    assert flops.score_flops(cfg, "last") == 38


def ssd_by_matmuls(x, dt, A, B, C, *, D=None, dt_bias=None, dt_softplus=False, initial_state=None,
                   return_final_state=False, chunk_size=64, backend="auto"):
    """The SSD scan written as the FLOPs model counts it: per chunk C·Bᵀ once per group, the masked matrix times
    δ·x, the chunk state as δx·B, the carried state read as C·H; every product an explicit torch.matmul."""
    bsz, L, H, P = x.shape
    G, N = B.shape[2:]
    J = H // G
    delta = step_size(dt, dt_bias, dt_softplus)
    state = torch.zeros(bsz, H, P, N) if initial_state is None else initial_state.float()
    ys = []
    for s0 in range(0, L, chunk_size):
        e = min(L, s0 + chunk_size)
        t = e - s0
        xc, dc, Bc, Cc = x[:, s0:e].float(), delta[:, s0:e], B[:, s0:e].float(), C[:, s0:e].float()
        cum = (dc * A).cumsum(1)  # [b, t, H]
        lower = torch.ones(t, t, dtype=torch.bool).tril()
        seg = (cum[:, :, None, :] - cum[:, None, :, :]).masked_fill(~lower[..., None], float("-inf"))
        CB = torch.matmul(Cc.transpose(1, 2), Bc.permute(0, 2, 3, 1))  # [b, G, t, t]
        M = CB.repeat_interleave(J, 1) * torch.exp(seg).permute(0, 3, 1, 2)  # [b, H, t, s]
        dx = xc * dc[..., None]  # [b, t, H, P]
        y = torch.matmul(M, dx.transpose(1, 2))  # [b, H, t, P]
        Ch, Bh = Cc.repeat_interleave(J, 2).transpose(1, 2), Bc.repeat_interleave(J, 2).transpose(1, 2)  # [b, H, t, N]
        y = y + torch.matmul(Ch, state.transpose(-1, -2)) * torch.exp(cum).transpose(1, 2)[..., None]
        to_end = torch.exp(cum[:, -1:] - cum)  # [b, t, H]
        new = torch.matmul((dx * to_end[..., None]).permute(0, 2, 3, 1), Bh)  # [b, H, P, N]
        state = state * torch.exp(cum[:, -1])[..., None, None] + new
        y = y.transpose(1, 2)
        ys.append(y if D is None else y + D[:, None] * xc)
    y = torch.cat(ys, 1).to(x.dtype)
    return (y, state) if return_final_state else y


@pytest.mark.parametrize("L", [16, 37])
def test_flops_model_matches_flop_counter(monkeypatch, L):
    """FlopCounterMode over the real model counts in_proj, the conv, out_proj and the head; with the scan written as
    explicit matmuls (checked against ssd_scan_ref) it counts the scan's four products too. Together they must be
    the matrix-product parts of the FLOPs model; its elementwise terms are the docstring's convention."""
    x_, dt_, A_, B_, C_ = torch.randn(2, L, 4, 8), torch.randn(2, L, 4) - 1, -torch.rand(4) - 0.5, \
        torch.randn(2, L, 2, 8), torch.randn(2, L, 2, 8)
    kw = dict(D=torch.rand(4), dt_bias=torch.rand(4), dt_softplus=True, chunk_size=16, return_final_state=True)
    for got, want in zip(ssd_by_matmuls(x_, dt_, A_, B_, C_, **kw), ssd_scan_ref(x_, dt_, A_, B_, C_, **kw)):
        assert_matches(got, want)
    model = randomize(Mamba2LM(CFG), 5).set_backend("reference")
    ids = ids_for(CFG.vocab_size, b=1, length=L)
    with torch.no_grad():
        ref = model(ids)
        from simba_convert.arch.mamba2 import model as m2

        monkeypatch.setattr(m2, "ssd_scan", ssd_by_matmuls)
        with FlopCounterMode(display=False) as fc:
            out = model(ids)
    assert_matches(out, ref)
    p = flops.layer_parts(CFG, L)
    H, D = CFG.nheads, CFG.d_inner
    matmuls = (p["in_proj"] + 2 * CFG.conv_dim * CFG.d_conv * L + p["intra_chunk_CB"] + p["intra_chunk_y"]
               + p["chunk_states"] - L * (2 * H + D) + p["output_from_states"] - L * (H + 2 * D) + p["out_proj"])
    assert fc.get_total_flops() == CFG.n_layer * matmuls + L * 2 * CFG.d_model * CFG.padded_vocab_size


def test_flops_grow_with_tokens_and_chunks():
    costs = [flops.layer_flops(CFG, n) for n in range(0, 70)]
    assert costs[0] == 0 and all(b > a for a, b in zip(costs, costs[1:]))
    # in-chunk work is quadratic in the chunk: two half chunks cost less than one whole
    assert 2 * flops.layer_flops(CFG, 8) < flops.layer_flops(CFG, 16)
    rep = flops.flops_report(CFG, [1.0, 0.5, 0.25], 64, 4, "global")
    assert rep.per_layer(CFG) == [flops.layer_flops(CFG, k) for k in rep.tokens_per_layer]
    assert rep.scoring == (64 + 32) * flops.score_flops(CFG, "global")


@pytest.mark.parametrize("name", ["linear", "uniform"])
@pytest.mark.parametrize("budget", [0.4, 0.6, 0.85])
def test_schedules_meet_the_budget(name, budget):
    cfg = Mamba2Config(d_model=64, n_layer=8, vocab_size=100, d_state=16, headdim=16, chunk_size=64)
    r = schedules.schedule_for_budget(name, cfg, budget, 512, 16)
    achieved = flops.flops_report(cfg, r, 512, 16).ratio
    assert budget - 0.005 <= achieved <= budget
    assert r[0] == 1.0 and all(a >= b for a, b in zip(r, r[1:]))


def test_same_seed_same_ratios_and_budget_met(work):
    model = simba_convert.load(work.src["hf"])
    windows = torch.randint(0, work.vocab, (6, 49), generator=torch.Generator().manual_seed(0))
    obj = KLObjective(model, windows, 4, batch_size=3, spec_kw={"criterion": "last", "seed": 0})
    runs = [calibrate(obj, model.config, 0.6, 48, 4, seed=seed, max_evals=7) for seed in (0, 0)]
    assert runs[0].best.ratios == runs[1].best.ratios
    assert [c.ratios for c in runs[0].history] == [c.ratios for c in runs[1].history]
    for c in runs[0].history:
        assert 0.6 - max(0.005, 1 / 48) <= flops.flops_report(model.config, c.ratios, 48, 4).ratio <= 0.6


# --- the command line ----------------------------------------------------------------------------
def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.mark.parametrize("layout,extra", [("hf", ["--finetune-steps", "2"]), ("mamba_ssm", [])])
def test_cli_converts_reloads_and_inspects(work, tmp_path, layout, extra):
    out = tmp_path / "out"
    r = cli("--in", work.src[layout], "--out", out, *FAST, "--calib", work.calib, *extra)
    assert r.exit_code == 0, (r.output, r.exception)
    report = json.loads((out / "simba_report.json").read_text())
    section = report["simba"]
    assert section["architecture"] == "mamba2" and report["flops"]["ratio"] <= 0.6
    assert (report["finetune"] is not None) == bool(extra)
    info = inspect_checkpoint(out)
    assert (info.architecture, info.layout, info.sparsified) == ("mamba2", layout, True)
    src = inspect_checkpoint(work.src[layout])
    # the input's layout kept, under the marking for transformers (model_type "simba", format.mark)
    assert info.raw_config["model_type"] == "simba" and info.raw_config == fmt.mark(fmt.base_config(info.raw_config))
    assert {k: v for k, v in fmt.base_config(info.raw_config).items() if k != "simba"} == src.raw_config
    pruned = simba_convert.load(out)
    assert isinstance(pruned, PrunedMambaLM) and isinstance(pruned.dense, Mamba2LM)
    assert list(pruned.spec.keep_ratios) == section["keep_ratios"] and pruned.spec.protect == 4
    ids = ids_for(work.vocab, length=48)
    with torch.no_grad():
        logits = pruned(ids)
        if not (report["finetune"] or {}).get("applied"):  # the weights are the input's: prune it by the section
            again = PrunedMambaLM(simba_convert.load(work.src[layout]), pruned.spec)
            assert torch.equal(again(ids), logits)
        assert torch.equal(simba_convert.load(out, apply_simba=False)(ids), pruned.dense(ids))

    shown = cli("info", out)
    assert shown.exit_code == 0, shown.output
    assert "Mamba-2" in shown.output and "yes (Simba)" in shown.output and '"architecture": "mamba2"' in shown.output
    as_json = json.loads(cli("info", out, "--json").output)
    assert as_json["architecture"] == "mamba2" and as_json["layout"] == layout
    assert as_json["parameters"] == sum(p.numel() for p in pruned.dense.parameters())
    assert as_json["config"]["nheads"] == 4 and as_json["simba"] == section

    ev = cli("eval", "--in", out, "--text", work.calib, "--seq-len", "32", "--windows", "2", "--json")
    assert ev.exit_code == 0, ev.output
    result = json.loads(ev.stdout)
    assert result["pruned"] and result["windows"] == 2 and result["perplexity"] > 1


@pytest.mark.skipif(not all(find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime")), reason="needs the onnx extra")
def test_cli_exports_mamba2_to_onnx(work, tmp_path, tmp_path_factory, monkeypatch):
    """--onnx on a transformers-layout Mamba-2: the pruned prefill and the step file, checked against PyTorch in stock
    onnxruntime and with libsimba_ort_ops (tests/test_onnx_mamba2.py has the detailed checks)."""
    from onnx_helpers import build_ops_library
    from simba_convert.export import runtime

    monkeypatch.setenv(runtime.ENV_VAR, str(build_ops_library(tmp_path_factory)))
    out = tmp_path / "o"
    r = cli("--in", work.src["hf"], "--out", out, *FAST, "--calib", work.calib, "--onnx")
    assert r.exit_code == 0, (r.output, r.exception)
    rep = json.loads((out / "simba_report.json").read_text())["onnx"]
    assert rep["passed"] and rep["verify"]["library"]["simba_kernels_ran"], rep["verify"]
    for path in ("portable", "library"):
        assert rep["verify"][path]["kept_match"] and rep["verify"][path]["decode"]["tokens_match"], path
    assert rep["outputs"]["ssm_states"] == [N_LAYER, "batch", 4, 8, 8]  # [H, P, N] per layer
    assert rep["custom_nodes"]["CausalConv1d"] == N_LAYER
    assert rep["custom_nodes"].get("SsdScanScore", 0) + rep["custom_nodes"]["SsdScan"] == N_LAYER
    assert (out / "model.onnx").is_file() and (out / "model_step.onnx").is_file()


def test_cli_refuses_a_hybrid_in_one_line(work, tmp_path):
    d = tmp_path / "hybrid"
    shutil.copytree(work.src["hf"], d)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "model_type": "nemotron_h"}))
    r = cli("--in", d, "--out", tmp_path / "o", *FAST, "--calib", work.calib)
    assert r.exit_code == 2, (r.output, r.exception)
    last = r.stderr.splitlines()[-1]
    assert last.startswith("error: ") and "hybrid" in last and "not supported" in last
    assert not (tmp_path / "o").exists()
