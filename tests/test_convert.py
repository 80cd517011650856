"""End-to-end conversion on CPU: the pipeline, the CLI shell, determinism, atomic output and bad inputs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from simba_convert.errors import CheckpointError, ConfigError, DataError, OutputExistsError
from simba_convert.model.config import MambaConfig
from simba_convert.model.mamba import MambaLM
from simba_convert.pipeline.convert import convert

ROOT = Path(__file__).resolve().parents[1]
CALIB = ROOT / "calibration" / "default.txt"
FAST = dict(samples=4, seq_len=96, protect=8, max_evals=6, batch_size=4, progress=False)


@pytest.fixture(scope="module", autouse=True)
def _small_calibration(tmp_path_factory):
    """A 60 kB slice of the bundled text keeps each conversion's tokenisation fast."""
    f = tmp_path_factory.mktemp("calib") / "calib.txt"
    f.write_text(CALIB.read_text(encoding="utf-8")[:60_000], encoding="utf-8")
    FAST["calib"] = str(f)


def _tokenizer(path: Path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([CALIB.read_text(encoding="utf-8")[:200_000]], trainer)
    tok.save(str(path))
    return tok


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    """A small random-weight Mamba checkpoint (mamba_ssm layout) with its own tokenizer."""
    from simba_convert.io.checkpoint import save_checkpoint

    d = tmp_path_factory.mktemp("ckpt")
    tok_file = d / "tok.json"
    tok = _tokenizer(tok_file)
    torch.manual_seed(0)
    m = MambaLM(MambaConfig(d_model=32, n_layer=6, vocab_size=tok.get_vocab_size(), d_state=8))
    with torch.no_grad():
        for layer in m.backbone.layers:
            layer.mixer.dt_proj.bias.uniform_(-4, -1)
    save_checkpoint(m, d / "model", tokenizer_dir=tok_file)
    return d / "model"


def test_convert_end_to_end(src, tmp_path):
    out = tmp_path / "out"
    rep = convert(str(src), str(out), budget=0.6, **FAST)
    assert rep["simba"]["achieved_flops_ratio"] <= 0.6
    assert rep["simba"]["achieved_flops_ratio"] >= 0.6 - max(0.005, 1 / FAST["seq_len"])
    assert rep["calibration"]["best"]["kl"] <= rep["calibration"]["linear"]["kl"]
    for f in ("config.json", "model.safetensors", "tokenizer.json", "simba_report.json", "report.txt", "keep_ratios.png"):
        assert (out / f).is_file(), f
    def no_constants(name):
        raise AssertionError(f"simba_report.json holds {name}, which is not JSON")

    json.loads((out / "simba_report.json").read_text(), parse_constant=no_constants)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["simba"]["keep_ratios"] == rep["simba"]["keep_ratios"] and len(cfg["simba"]["keep_ratios"]) == 6
    assert (out / "model.safetensors").read_bytes() == (src / "model.safetensors").read_bytes(), "weights unchanged"
    import simba_convert

    model = simba_convert.load(str(out))
    assert model.is_pruned and model.spec.keep_ratios == tuple(rep["simba"]["keep_ratios"])
    with pytest.raises(OutputExistsError):
        convert(str(src), str(out), budget=0.6, **FAST)
    with pytest.raises(CheckpointError, match="already a sparsified"):
        convert(str(out), str(tmp_path / "again"), budget=0.6, **FAST)


def test_same_seed_same_ratios_and_budget_one_is_dense(src, tmp_path):
    a = convert(str(src), str(tmp_path / "a"), budget=0.5, seed=1, **FAST)
    b = convert(str(src), str(tmp_path / "b"), budget=0.5, seed=1, **FAST)
    assert a["simba"]["keep_ratios"] == b["simba"]["keep_ratios"]
    d = convert(str(src), str(tmp_path / "d"), budget=1.0, **FAST)
    assert d["simba"]["keep_ratios"] == [1.0] * 6 and d["calibration"]["best"]["kl"] < 1e-9


@pytest.mark.parametrize("schedule", ["linear", "uniform"])
def test_closed_form_schedules(src, tmp_path, schedule):
    rep = convert(str(src), str(tmp_path / schedule), budget=0.7, schedule=schedule, **FAST)
    assert rep["calibration"]["best"]["label"] == schedule


def test_bad_inputs_write_nothing(src, tmp_path):
    out = tmp_path / "never"
    with pytest.raises(ConfigError, match="budget"):
        convert(str(src), str(out), budget=1.5, **FAST)
    with pytest.raises(ConfigError, match="budget"):
        convert(str(src), str(out), budget=0.0, **FAST)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(DataError, match="empty"):
        convert(str(src), str(out), budget=0.6, **{**FAST, "calib": str(empty)})
    short = tmp_path / "short.txt"
    short.write_text("A few words only.")
    with pytest.raises(DataError, match="fewer than samples"):
        convert(str(src), str(out), budget=0.6, **{**FAST, "calib": str(short)})
    with pytest.raises(CheckpointError):
        convert(str(tmp_path / "missing"), str(out), budget=0.6, **FAST)
    with pytest.raises(ConfigError, match="protect"):
        convert(str(src), str(out), budget=0.6, **{**FAST, "protect": 200})
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".never")]


def test_jsonl_calibration(src, tmp_path):
    f = tmp_path / "c.jsonl"
    text = CALIB.read_text(encoding="utf-8")[:60_000]
    f.write_text("\n".join(json.dumps({"text": p}) for p in text.split("\n\n") if p.strip()))
    rep = convert(str(src), str(tmp_path / "o"), budget=0.7, **{**FAST, "calib": str(f)})
    assert rep["simba"]["calibration"]["source"] == str(f)


def _cli(*args, env=None, **kw):
    e = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "simba_convert.cli", *args], capture_output=True, text=True, env=e, **kw)


def test_help_does_not_import_torch():
    code = "import sys; from simba_convert.cli.main import main\ntry:\n  main(['--help'])\nexcept SystemExit: pass\nassert 'torch' not in sys.modules, 'torch imported'"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    for sub in ("eval", "info"):
        code2 = code.replace("['--help']", f"['{sub}', '--help']")
        r = subprocess.run([sys.executable, "-c", code2], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert r.returncode == 0, r.stderr


def test_cli_success_and_one_line_errors(src, tmp_path):
    out = tmp_path / "cli"
    r = _cli("--in", str(src), "--budget", "0.6", "--out", str(out), "--samples", "4", "--seq-len", "96",
             "--protect", "8", "--report", "json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["simba"]["budget"] == 0.6
    r = _cli("--in", str(src), "--budget", "0.6", "--out", str(out), "--samples", "4", "--seq-len", "96", "--protect", "8")
    assert r.returncode != 0 and r.stderr.strip().count("\n") == 0 and "--force" in r.stderr
    r = _cli("--in", str(src), "--budget", "2", "--out", str(tmp_path / "x"))
    assert r.returncode != 0 and r.stderr.startswith("error:") and r.stderr.strip().count("\n") == 0
    r = _cli("--in", str(tmp_path / "nope"), "--budget", "0.5")
    *progress, last = r.stderr.splitlines()  # found while loading: after the stage's progress line
    assert r.returncode == 2 and last.startswith("error:") and progress == ["[1/4] load"]


def test_killed_midway_leaves_nothing(src, tmp_path):
    """SIGKILL while the output sits written in staging (paused by atomic.py's test hook): no output
    appears, and the next run for the same output removes the dead process's staging directory."""
    out = tmp_path / "outs" / "killed"
    ready = tmp_path / "ready"
    args = ["--in", str(src), "--budget", "0.6", "--out", str(out), "--samples", "4", "--seq-len", "96",
            "--protect", "8", "--max-evals", "6", "--calib", FAST["calib"]]
    p = subprocess.Popen([sys.executable, "-m", "simba_convert.cli", *args],
                         env={**os.environ, "PYTHONPATH": str(ROOT), "SIMBA_TEST_PAUSE_IN_SAVE": str(ready)},
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert p.poll() is None, f"exited {p.returncode} before pausing in the save: {p.stderr.read()}"
            assert time.monotonic() < deadline, "never reached the save"
            time.sleep(0.05)
        staging = [d for d in out.parent.iterdir() if d.name.startswith(f".killed.tmp-{p.pid}-")]
        assert len(staging) == 1 and staging[0].is_dir()
        assert {"config.json", "simba_report.json"} <= {f.name for f in staging[0].iterdir()}  # mid-save
        assert not out.exists()
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
        p.stderr.close()
    assert p.returncode == -signal.SIGKILL
    assert not out.exists() and staging[0].is_dir()  # killed: nothing in place, the staging dir left behind

    r = _cli(*args)
    assert r.returncode == 0, r.stderr
    assert [d.name for d in out.parent.iterdir()] == ["killed"]  # the stale staging directory was removed
    assert (out / "simba_report.json").is_file()


def test_bundled_model_end_to_end(tmp_path):
    """The README's main job on the bundled mamba-tiny, scaled down to stay under a minute on a CPU."""
    out = tmp_path / "tiny"
    rep = convert("mamba-tiny", str(out), budget=0.6, samples=4, seq_len=128, protect=16, max_evals=6,
                  batch_size=4, progress=False)
    assert 0.6 - max(0.005, 1 / 128) <= rep["simba"]["achieved_flops_ratio"] <= 0.6
    assert rep["calibration"]["best"]["kl"] <= rep["calibration"]["linear"]["kl"]
    import simba_convert

    model = simba_convert.load(str(out))
    ids = torch.randint(1, 8000, (1, 128))
    with torch.no_grad():
        logits, info = model(ids, return_info=True)
    assert info.counts()[:, 0].tolist() == model.spec.keep_counts(128, 16)
    assert (out / "keep_ratios.png").stat().st_size > 1000


def test_state_spaces_checkpoint_from_the_hub_cache(src, tmp_path, monkeypatch):
    """`--in mamba-130m` offline: the checkpoint and the GPT-NeoX tokenizer both come from the HF cache."""
    import shutil

    from huggingface_hub import constants

    from simba_convert.io.checkpoint import save_checkpoint

    torch.manual_seed(0)  # GPT-NeoX's vocabulary (its tokenizer is the fallback only for an embedding of its size)
    neox = MambaLM(MambaConfig(d_model=32, n_layer=3, vocab_size=50277, d_state=8))
    save_checkpoint(neox, tmp_path / "neox")
    shutil.copyfile(src / "tokenizer.json", tmp_path / "neox" / "tokenizer.json")  # stands in for GPT-NeoX's
    sha = "0123456789abcdef0123456789abcdef01234567"
    cache = tmp_path / "hub"
    for repo, files in (("state-spaces/mamba-130m", ("config.json", "model.safetensors")),
                        ("EleutherAI/gpt-neox-20b", ("tokenizer.json",))):
        folder = cache / ("models--" + repo.replace("/", "--"))
        (folder / "refs").mkdir(parents=True)
        (folder / "refs" / "main").write_text(sha)
        snap = folder / "snapshots" / sha
        snap.mkdir(parents=True)
        for f in files:
            shutil.copyfile(tmp_path / "neox" / f, snap / f)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    rep = convert("mamba-130m", str(tmp_path / "out"), budget=0.95, offline=True, **FAST)  # the head dominates
    assert rep["simba"]["achieved_flops_ratio"] <= 0.95
    assert (tmp_path / "out" / "tokenizer.json").is_file()


def test_out_of_memory_is_one_line_and_nonzero(capsys):
    from simba_convert.cli.main import report_errors

    @report_errors
    def boom():
        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 139 GiB total capacity)")

    with pytest.raises(SystemExit) as e:
        boom()
    err = capsys.readouterr().err
    assert e.value.code == 3 and err.startswith("error: out of device memory") and err.count("\n") == 1


def test_report_json_is_strict():
    from simba_convert.pipeline.report import strict_json

    assert strict_json({"a": float("inf"), "b": [1.0, float("nan")], "c": "x"}) == {"a": None, "b": [1.0, None], "c": "x"}
