"""The conversion command as a user meets it: exports without the custom-op library, one-line errors that name
the command's flags, bad weights and tokenizers refused, output locations checked before the work, staging
directories of killed runs cleaned, progress lines off a terminal, and a stable report and config.json.

Everything runs in-process through click's CliRunner (no interpreter start-up per call) on a 3-layer random
model with a small calibration budget.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from importlib.util import find_spec
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from click.testing import CliRunner, Result

from ckpt_helpers import listing
from simba_convert.cli.main import main
from simba_convert.errors import ConfigError, SimbaError
from simba_convert.model.config import MambaConfig
from simba_convert.model.mamba import MambaLM
from simba_convert.pipeline import stages
from simba_convert.pipeline.config import ConvertConfig

ROOT = Path(__file__).resolve().parents[1]
TEXT = (ROOT / "calibration" / "default.txt").read_text(encoding="utf-8")[:20_000]
FAST = ["--budget", "0.6", "--samples", "4", "--seq-len", "48", "--protect", "4", "--max-evals", "2"]


def _tokenizer(path: Path, vocab: int = 280) -> int:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator([TEXT], trainers.BpeTrainer(vocab_size=vocab, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(path))
    return tok.get_vocab_size()


def _checkpoint(d: Path, vocab: int, tokenizer: Path | None, poison: float | None = None) -> Path:
    from simba_convert.io.checkpoint import save_checkpoint

    torch.manual_seed(0)
    m = MambaLM(MambaConfig(d_model=16, n_layer=3, vocab_size=vocab, d_state=4))
    if poison is not None:
        with torch.no_grad():
            m.backbone.layers[1].mixer.out_proj.weight[3, 5] = poison
    save_checkpoint(m, d, tokenizer_dir=tokenizer)
    return d


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A small checkpoint with its tokenizer (src), a calibration text file, the tokenizer file and its size."""
    d = tmp_path_factory.mktemp("cli")
    vocab = _tokenizer(d / "tok.json")
    (d / "calib.txt").write_text(TEXT, encoding="utf-8")
    return SimpleNamespace(src=_checkpoint(d / "src", vocab, d / "tok.json"), calib=d / "calib.txt",
                           tok=d / "tok.json", vocab=vocab)


def cli(*args) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def convert(work, out, *args, src=None):
    return cli("--in", src or work.src, "--out", out, *FAST, "--calib", work.calib, *args)


def one_line_error(r, code: int = 2) -> str:
    """The error line of a run that must have failed with one `error:` line (after its progress lines, if any)."""
    assert r.exit_code == code, (r.output, r.exception)
    assert isinstance(r.exception, SystemExit), r.exception
    *progress, last = r.stderr.splitlines()
    assert last.startswith("error: ") and all(line.startswith(("[", "  ")) for line in progress), r.stderr
    return last


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if a conversion gets past loading: the error had to come before the work."""
    def refuse(*a, **k):
        raise AssertionError("the conversion started its work")

    monkeypatch.setattr(stages, "score_stage", refuse)


# --- 1. --onnx on a fresh install ----------------------------------------------------------------
def test_onnx_export_without_the_custom_op_library(work, tmp_path, monkeypatch):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    from simba_convert.export import runtime

    monkeypatch.delenv(runtime.ENV_VAR, raising=False)
    monkeypatch.setattr(runtime, "find_library", lambda: None)  # kernels/build.sh never ran
    out = tmp_path / "o"
    r = convert(work, out, "--onnx")
    assert r.exit_code == 0, (r.output, r.exception)
    assert "passed" in r.stdout and "library skipped" in r.stdout
    v = json.loads((out / "simba_report.json").read_text())["onnx"]["verify"]
    assert v["passed"] and v["portable"]["kept_match"] and "skipped" in v["library"]
    assert (out / "model.onnx").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    import onnx

    from simba_convert.format import from_json

    meta = {p.key: p.value for p in onnx.load(str(out / "model.onnx"), load_external_data=False).metadata_props}
    stored = json.loads((out / "config.json").read_text())["simba"]
    assert from_json(meta["simba"]).to_dict() == stored  # the file carries the checkpoint's spec and provenance


# --- 2 and 6. one-line errors, phrased by parameter, flags added by the CLI ------------------------
@pytest.mark.parametrize("args, message", [
    (["--budget", "2"], "error: budget must be in (0, 1], got 2.0 (--budget)"),
    (["--device", "tpu"], "error: unknown device 'tpu'; expected auto, cpu, cuda or cuda:N (--device)"),
    (["--protect", "0"], "error: protect must be an integer >= 1, got 0 (--protect)"),
    (["--prune-every", "0"], "error: prune_every must be an integer >= 1, got 0 (--prune-every)"),
    (["--protect", "48"], "error: protect (48) must be smaller than seq_len (48) (--protect, --seq-len)"),
    pytest.param(["--criterion", "random", "--onnx"], "error: criterion 'random' cannot be exported to ONNX; use one "
                 "of last, global, delta, output (--criterion, --onnx)",
                 marks=pytest.mark.skipif(not all(find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime")),
                                          reason="needs the onnx extra")),
])
def test_bad_options_are_one_line_errors_naming_the_flag(work, tmp_path, no_work, args, message):
    r = convert(work, tmp_path / "o", *args)
    assert one_line_error(r) == message
    assert not (tmp_path / "o").exists()


def test_eval_bad_device_is_one_line(work, tmp_path):
    r = cli("eval", "--in", work.src, "--text", work.calib, "--device", "tpu")
    assert "unknown device 'tpu'" in one_line_error(r)


@pytest.mark.parametrize("kw", [dict(budget=2.0), dict(schedule="cubic"), dict(protect=60, seq_len=48),
                                dict(device="tpu"), dict(protect=0), dict(src="")])
def test_library_errors_name_parameters_not_flags(kw):
    with pytest.raises(ConfigError) as e:
        ConvertConfig(**{"src": "x", **kw})
    assert "--" not in str(e.value) and "\n" not in str(e.value)
    assert set(e.value.options) <= set(kw) | {"seq_len"} and e.value.options


# --- 3. NaN / inf weights ----------------------------------------------------------------------------
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(work, tmp_path, no_work, value):
    import simba_convert
    from simba_convert.errors import CheckpointError

    bad = _checkpoint(tmp_path / "bad", work.vocab, work.tok, poison=value)
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        simba_convert.load(bad)
    r = convert(work, tmp_path / "o", src=bad)
    assert "backbone.layers.1.mixer.out_proj.weight" in one_line_error(r) and not (tmp_path / "o").exists()


# --- 4. the output location, checked before the work ----------------------------------------------
def test_unwritable_output_locations_fail_before_the_work(work, tmp_path, no_work):
    (tmp_path / "file").write_text("x")
    places = [(tmp_path / "file" / "out", "is not a directory"), (tmp_path / "file" / "a" / "b", "is not a directory")]
    if Path("/proc/self").is_dir():
        places.append((Path("/proc/simba-out"), "creating a directory in /proc fails"))
    if os.name == "posix" and os.geteuid() != 0:  # root writes into read-only directories
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        places.append((ro / "out", "creating a directory in"))
    for out, why in places:
        err = one_line_error(convert(work, out))
        assert why in err and "(--out)" in err, err


def test_output_overlapping_the_input_is_refused(work, tmp_path, no_work):
    parent = tmp_path / "p"
    src = parent / "m"
    shutil.copytree(work.src, src)
    before = {f: (src / f).read_bytes() for f in listing(src)}
    for out, how in ((src, "is the input"), (src / "sub", "is inside the input"), (parent, "contains the input")):
        err = one_line_error(convert(work, out, "--force", src=src))
        assert how in err, err
    assert {f: (src / f).read_bytes() for f in listing(src)} == before


# --- 5. tokenizers -------------------------------------------------------------------------------------
def test_tokenizer_larger_than_the_embedding_is_refused(work, tmp_path, no_work):
    small = _checkpoint(tmp_path / "small", 100, work.tok)  # 104 embedding rows
    err = one_line_error(convert(work, tmp_path / "o", src=small))
    assert f"token ids up to {work.vocab - 1}" in err and "104 rows" in err and "(--tokenizer)" in err


def test_missing_tokenizer_fails_fast_without_the_hub(work, tmp_path, monkeypatch, no_work):
    import huggingface_hub

    def no_hub(*a, **k):
        raise AssertionError("the Hub was asked for a tokenizer that cannot fit this model")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_hub)
    bare = _checkpoint(tmp_path / "bare", work.vocab, None)
    t0 = time.perf_counter()
    err = one_line_error(convert(work, tmp_path / "o", src=bare))
    assert "no tokenizer.json" in err and "(--tokenizer)" in err and time.perf_counter() - t0 < 10


# --- 7. staging directories --------------------------------------------------------------------------
def _staging(parent: Path, name: str) -> list[Path]:
    return sorted(p for p in parent.iterdir() if p.name.startswith(f".{name}.tmp-"))


def test_staging_of_a_killed_run_is_removed_by_the_next(work, tmp_path):
    from simba_convert.io.atomic import check_writable

    out = tmp_path / "o"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    stage = (f"import os, signal, sys\nfrom simba_convert.io.atomic import atomic_directory\n"
             f"with atomic_directory({str(out)!r}) as tmp:\n"
             "    (tmp / 'model.onnx').write_bytes(bytes(1000))\n"
             "    print(tmp, flush=True)\n"
             "    sys.stdin.read() if len(sys.argv) > 1 else os.kill(os.getpid(), signal.SIGKILL)\n")
    subprocess.run([sys.executable, "-c", stage], env=env, capture_output=True, timeout=60)
    (killed,) = _staging(tmp_path, "o")
    running = subprocess.Popen([sys.executable, "-c", stage, "wait"], env=env, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    try:
        alive = Path(running.stdout.readline().strip())
        check_writable(out, force=False)
        assert _staging(tmp_path, "o") == [alive], "only the dead process's staging directory goes"
    finally:
        running.send_signal(signal.SIGKILL)
        running.wait()
    r = convert(work, out)
    assert r.exit_code == 0, (r.output, r.exception)
    assert _staging(tmp_path, "o") == [] and (out / "config.json").is_file()


def test_sigterm_removes_the_staging_directory(tmp_path):
    """A CI timeout sends SIGTERM: the command unwinds like an error (exit 143) and leaves nothing behind."""
    code = ("import sys, time\nfrom simba_convert.cli.main import report_errors\n"
            "from simba_convert.io.atomic import atomic_directory\n"
            "@report_errors\ndef work():\n"
            f"    with atomic_directory({str(tmp_path / 'o')!r}) as tmp:\n"
            "        print(tmp, flush=True)\n        time.sleep(60)\nwork()\n")
    p = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    staging = Path(p.stdout.readline().strip())
    assert staging.is_dir()
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 143 and err == "error: terminated; nothing was written\n"
    assert list(tmp_path.iterdir()) == []


def test_output_parked_by_a_killed_replacement_is_put_back(tmp_path):
    """Killed between moving the old output aside and renaming the new one in: the next run restores the old."""
    from simba_convert.errors import OutputExistsError
    from simba_convert.io.atomic import check_writable

    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    code = (f"import os, signal\nfrom simba_convert.io.atomic import atomic_directory\nreal = os.replace\n"
            "def replace(a, b):\n    real(a, b)\n    os.kill(os.getpid(), signal.SIGKILL)\n"
            f"os.replace = replace\nwith atomic_directory({str(out)!r}, force=True) as tmp:\n"
            "    (tmp / 'new.txt').write_text('new')\n")
    subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert not out.exists() and len(list(tmp_path.iterdir())) == 2  # parked old output, staged new one
    with pytest.raises(OutputExistsError):
        check_writable(out, force=False)
    assert listing(tmp_path) == {"o", "o/keep.txt"} and (out / "keep.txt").read_text() == "old"


def test_too_little_space_fails_before_the_work(work, tmp_path, monkeypatch, no_work):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(total=10 << 30, used=10 << 30, free=1000))
    err = one_line_error(convert(work, tmp_path / "o"))
    assert "MiB and only 0 MiB are free" in err and "(--out)" in err


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left on device", "model.safetensors"),
                                     SimbaError("export failed")])
def test_failures_while_saving_leave_nothing(work, tmp_path, monkeypatch, failure):
    def save(cfg, loaded, model, section, dest, finetuned):
        (dest / "model.safetensors").write_bytes(bytes(100))
        raise failure

    monkeypatch.setattr(stages, "save_stage", save)
    err = one_line_error(convert(work, tmp_path / "o"))
    assert str(failure.strerror if isinstance(failure, OSError) else failure) in err
    assert list(tmp_path.iterdir()) == []


# --- 8. progress, quiet, the report and config.json ------------------------------------------------
def test_progress_lines_off_a_terminal_and_quiet(work, tmp_path):
    r = convert(work, tmp_path / "a", "--report", "json")
    assert r.exit_code == 0, (r.output, r.exception)
    err = r.stderr.splitlines()
    assert [line for line in err if line.startswith("[")] == ["[1/4] load", "[2/4] score", "[3/4] calibrate",
                                                                "[4/4] save"]
    assert any(line.strip().startswith("calibrate 2/2 (100%)") for line in err) and len(err) < 20
    rep = json.loads(r.stdout)
    assert rep["schema_version"] == 1
    assert json.loads((tmp_path / "a" / "simba_report.json").read_text())["schema_version"] == 1
    q = convert(work, tmp_path / "b", "--quiet")
    assert q.exit_code == 0 and q.stdout == "" and q.stderr == ""
    assert (tmp_path / "b" / "report.txt").is_file()


def test_config_json_does_not_depend_on_optional_packages(work, tmp_path, monkeypatch):
    from importlib import metadata

    assert convert(work, tmp_path / "with").exit_code == 0
    hidden = ("onnx", "onnxscript", "onnxruntime", "matplotlib")
    for name in hidden:
        monkeypatch.setitem(sys.modules, name, None)  # `import name` fails, as when it is not installed
    real = metadata.version

    def version(name):
        if name in hidden:
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(metadata, "version", version)
    assert convert(work, tmp_path / "without").exit_code == 0
    assert (tmp_path / "with" / "config.json").read_text() == (tmp_path / "without" / "config.json").read_text()
    rep = json.loads((tmp_path / "without" / "simba_report.json").read_text())
    assert rep["versions"]["onnx"] is None and "torch" in rep["versions"]


def test_prune_every_reaches_the_output(work, tmp_path):
    """--prune-every K: stepped keep ratios in the checkpoint, K in the written config, the prune points reported."""
    out = tmp_path / "o"
    r = convert(work, out, "--prune-every", "2", "--seq-len", "96", "--protect", "4")
    assert r.exit_code == 0, (r.output, r.exception)
    ratios = json.loads((out / "config.json").read_text())["simba"]["keep_ratios"]
    assert len(ratios) == 3 and ratios[1] == ratios[2] < 1.0  # one group of two layers above the first
    assert json.loads((out / "simba_report.json").read_text())["config"]["prune_every"] == 2
    assert "prune points            1 of 2 layers score and select (prune every 2" in (out / "report.txt").read_text()
