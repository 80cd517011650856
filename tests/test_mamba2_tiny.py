"""The bundled `mamba2-tiny`: found by its short name offline, a trained (not random) Mamba-2 model on the bundled
calibration text, the 8192-token tokenizer of `mamba-tiny`, within the 16 MB budget, and converted end to end by
the command line. And the recipe that trained it (simba_convert.recipes.train --arch mamba2): a tiny run learns and
writes a loadable mamba_ssm-layout checkpoint, and a run stopped and resumed ends bit for bit where an uninterrupted
one does.

The calibration text (calibration/default.txt) is excerpts from the middle of the training works, so its loss is
in-distribution, not held out; the held-out numbers (the corpus' validation split) are in the model's
train_summary.json and README.md.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

import pytest
import torch
from click.testing import CliRunner

import simba_convert
from simba_convert.arch.mamba2 import Mamba2LM
from simba_convert.cli.main import main
from simba_convert.io.layout import inspect_checkpoint
from simba_convert.io.resolve import bundled_root, resolve
from simba_convert.model.init import init_mamba2_weights
from simba_convert.pruning.model import PrunedMambaLM
from simba_convert.recipes import tokenize_corpus, train
from simba_convert.recipes import tokenizer as bpe

ROOT = Path(__file__).resolve().parents[1]
CALIB = ROOT / "calibration" / "default.txt"
VOCAB = 8192
SEQ, WINDOWS = 256, 6


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Other work shares this 2-core machine; at these sizes one thread costs little."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny():
    model, tok, _ = simba_convert.load_with_tokenizer("mamba2-tiny", offline=True, device="cpu", dtype="float32")
    return model, tok


def calibration_ids(tok) -> torch.Tensor:
    return torch.tensor(tok.encode(CALIB.read_text(encoding="utf-8")))


def windows(ids: torch.Tensor) -> torch.Tensor:
    """WINDOWS windows [W, SEQ+1] spread evenly over the calibration tokens (each excerpt is sampled)."""
    step = (ids.numel() - SEQ - 1) // (WINDOWS - 1)
    return torch.stack([ids[i * step:i * step + SEQ + 1] for i in range(WINDOWS)])


@torch.no_grad()
def mean_nll(model, win: torch.Tensor) -> float:
    logits = model(win[:, :-1])
    return torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), win[:, 1:].flatten()).item()


def test_short_name_resolves_to_the_bundled_mamba2_checkpoint(tiny):
    r = resolve("mamba2-tiny", offline=True)
    assert r.kind == "bundled" and r.path == bundled_root() / "mamba2-tiny"
    info = inspect_checkpoint(r.path)
    assert (info.architecture, info.layout, info.sparsified) == ("mamba2", "mamba_ssm", False)
    model, tok = tiny
    assert isinstance(model, Mamba2LM) and model.config.vocab_size == VOCAB and tok.vocab_size == VOCAB
    # the same tokenizer as mamba-tiny, so the same calibration text and windows work for both
    assert (r.path / "tokenizer.json").read_bytes() == (bundled_root() / "mamba-tiny" / "tokenizer.json").read_bytes()
    on_disk = sum(p.stat().st_size for p in r.path.iterdir() if p.is_file())
    assert on_disk <= 16_000_000, on_disk
    summary = json.loads((r.path / "train_summary.json").read_text())
    assert summary["config"] == json.loads((r.path / "config.json").read_text())  # the card describes these weights


def test_loss_on_calibration_text_is_far_below_uniform_and_unigram(tiny):
    model, tok = tiny
    ids = calibration_ids(tok)
    loss = mean_nll(model, windows(ids))
    uniform = math.log(VOCAB)  # 9.01 nats: a model that learned nothing (a freshly initialised one scores about this)
    assert loss < uniform - 3.0, loss
    # The entropy of the text's own token frequencies (6.5 nats), a unigram model fitted to this very text: only a
    # model that uses the context gets well below it (4.49 nats measured when mamba2-tiny was bundled).
    freq = torch.bincount(ids, minlength=VOCAB).double()
    freq = freq[freq > 0] / freq.sum()
    unigram = -(freq * freq.log()).sum().item()
    assert loss < unigram - 1.0, (loss, unigram)


def test_cli_converts_mamba2_tiny_end_to_end(tmp_path):
    out = tmp_path / "mamba2-tiny-simba-0.6"
    r = CliRunner().invoke(main, ["--in", "mamba2-tiny", "--budget", "0.6", "--out", str(out), "--samples", "4",
                                  "--seq-len", "128", "--protect", "16", "--max-evals", "6", "--quiet"])
    assert r.exit_code == 0, (r.output, r.exception)
    report = json.loads((out / "simba_report.json").read_text())
    section = report["simba"]
    assert section["architecture"] == "mamba2"
    assert 0.6 - max(0.005, 1 / 128) <= section["achieved_flops_ratio"] <= 0.6
    assert report["calibration"]["best"]["kl"] <= report["calibration"]["linear"]["kl"]
    assert (out / "tokenizer.json").read_bytes() == (bundled_root() / "mamba2-tiny" / "tokenizer.json").read_bytes()
    pruned = simba_convert.load(out)
    assert isinstance(pruned, PrunedMambaLM) and isinstance(pruned.dense, Mamba2LM)
    ids = torch.randint(1, VOCAB, (1, 128), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits, info = pruned(ids, return_info=True)
    assert logits.shape == (1, 128, pruned.dense.config.padded_vocab_size) and torch.isfinite(logits).all()
    assert info.counts()[:, 0].tolist() == pruned.spec.keep_counts(128, 16)


# --- the recipe ---------------------------------------------------------------------------------------------------
TINY_TEXT = "the cat sat on the mat. the dog sat on the log. " * 200


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("m2data")
    tj = bpe.train_tokenizer([TINY_TEXT], 300)
    (d / "tokenizer.json").write_text(tj, encoding="utf-8")
    (d / "tokens").mkdir()
    np.save(d / "tokens" / "train.u16.npy", tokenize_corpus.encode_documents(tj, [TINY_TEXT]))
    np.save(d / "tokens" / "valid.u16.npy", tokenize_corpus.encode_documents(tj, [TINY_TEXT[:2000]]))
    return d


def _train(data: Path, out: Path, *extra: str):
    args = train.parse_args([
        "--arch", "mamba2", "--smoke", "--quiet", "--out", str(out), "--tokens", str(data / "tokens"),
        "--tokenizer", str(data / "tokenizer.json"), "--d-model", "32", "--n-layer", "2", "--headdim", "16",
        "--d-state", "8", "--chunk-size", "8", "--seq-len", "24", "--steps", "24", "--log-every", "5",
        "--eval-every", "12", "--dtype-save", "float32", "--threads", "1", *extra,
    ])
    return train.run(args)


def test_mamba2_recipe_learns_and_writes_a_loadable_checkpoint(tiny_data, tmp_path):
    model, summary = _train(tiny_data, tmp_path / "a")
    losses = [e["loss"] for e in map(json.loads, (tmp_path / "a" / "train_log.jsonl").read_text().splitlines())
              if "loss" in e]
    assert losses[-1] < losses[0] - 1.0, losses  # a repeated text: the loss must drop clearly
    assert summary["architecture"] == "mamba2" and summary["steps"] == 24 and not summary["stopped_early"]
    assert summary["config"]["ssm_cfg"]["layer"] == "Mamba2" and summary["loss_curve"][-1][0] == 24
    assert not (tmp_path / ".a.resume.pt").exists()  # a finished run leaves no training state behind
    info = inspect_checkpoint(tmp_path / "a")
    assert (info.architecture, info.layout) == ("mamba2", "mamba_ssm")
    loaded = simba_convert.load(tmp_path / "a")
    x = torch.randint(0, model.config.vocab_size, (2, 11), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))


def test_mamba2_recipe_init_follows_mamba_ssm():
    from simba_convert.arch.mamba2 import Mamba2Config

    cfg = Mamba2Config(d_model=64, n_layer=4, vocab_size=128, d_state=16, headdim=16)
    m = init_mamba2_weights(Mamba2LM(cfg), seed=3)
    mix = m.backbone.layers[0].mixer
    dt = torch.nn.functional.softplus(mix.dt_bias)
    assert dt.min() >= 1e-4 * 0.999 and dt.max() <= 0.1 * 1.001
    assert (-mix.A()).min() >= 1 and (-mix.A()).max() <= 16 and torch.equal(mix.D, torch.ones(cfg.nheads))
    assert mix.out_proj.weight.abs().max() <= 1 / math.sqrt(cfg.d_inner) / math.sqrt(cfg.n_layer)
    assert abs(m.backbone.embedding.weight.std().item() - 0.02) < 0.002 and m.lm_head.weight is m.backbone.embedding.weight
    again = init_mamba2_weights(Mamba2LM(cfg), seed=3)
    assert all(torch.equal(p, q) for p, q in zip(m.state_dict().values(), again.state_dict().values()))


def test_stopped_and_resumed_run_equals_an_uninterrupted_one(tiny_data, tmp_path):
    _train(tiny_data, tmp_path / "full")
    _, stopped = _train(tiny_data, tmp_path / "split", "--stop-at", "13")  # mid log interval
    assert stopped["stopped_early"] and stopped["steps"] == 13 and (tmp_path / ".split.resume.pt").is_file()
    with pytest.raises(SystemExit, match="lr was 0.01"):  # the optimiser may not change under a resume
        _train(tiny_data, tmp_path / "split", "--resume", "--force", "--lr", "0.02")
    _, resumed = _train(tiny_data, tmp_path / "split", "--resume", "--force")
    full = tmp_path / "full"
    split = tmp_path / "split"
    assert (split / "model.safetensors").read_bytes() == (full / "model.safetensors").read_bytes()

    def log(d):
        return [{k: v for k, v in e.items() if k not in ("elapsed_s", "tokens_per_s")}
                for e in map(json.loads, (d / "train_log.jsonl").read_text().splitlines())]

    assert log(split) == log(full)
    assert resumed["resumes"][0]["step"] == 13 and resumed["valid_loss"] == json.loads(
        (full / "train_summary.json").read_text())["valid_loss"]
