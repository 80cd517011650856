"""The saved format (`config.json["simba"]`, simba_convert/format.py) and ConvertConfig's round trip."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

import simba_convert
from simba_convert import format as fmt
from simba_convert._version import __version__
from simba_convert.calibrate import data as calib_data
from simba_convert.errors import CheckpointError, ConfigError
from simba_convert.format import Calibration, Finetune, Provenance, SimbaSection
from simba_convert.model.config import MambaConfig
from simba_convert.model.mamba import MambaLM
from simba_convert.pipeline.config import CONFIG_VERSION, ConvertConfig
from simba_convert.pruning.model import PrunedMambaLM
from simba_convert.pruning.spec import PruningSpec

ROOT = Path(__file__).resolve().parents[1]
CFG = MambaConfig(d_model=24, n_layer=3, vocab_size=61, d_state=5, d_conv=3)

# exactly what simba-convert 0.1.0's pipeline wrote (format 1): the spec twice, seed and fingerprint in
# "calibration", the tool's version under "versions"
V1 = {
    "format_version": 1,
    "spec": {"keep_ratios": [1.0, 0.5, 0.25], "criterion": "delta", "protect": 8, "signed": True, "floor": 0.05,
             "seed": 3, "version": 1},
    "budget": 0.6, "achieved_flops_ratio": 0.58, "backbone_flops_ratio": 0.55,
    "flops_reference": {"seq_len": 96, "protect": 8},
    "keep_ratios": [1.0, 0.5, 0.25], "criterion": "delta", "protect": 8, "schedule": "calibrated",
    "calibration": {"fingerprint": "0123456789abcdef", "source": "default.txt", "samples": 4, "seq_len": 96,
                    "seed": 3, "kl": 0.125},
    "versions": {"simba_convert": "0.1.0", "torch": "2.5.0"},
    "finetune": {"applied": True, "steps": 10, "lr": 3e-5, "trainable": "all", "kl_before": 0.2, "kl_after": 0.1},
}


def section(**kw) -> SimbaSection:
    spec = PruningSpec((1.0, 0.5, 0.25), criterion="delta", protect=8, signed=True, seed=3)
    base = dict(spec=spec, provenance=Provenance("9.9.9", "a" * 40, "0123456789abcdef", 3, "2.5.0"), budget=0.6,
                schedule="calibrated", achieved_flops_ratio=0.58, backbone_flops_ratio=0.55, flops_seq_len=96,
                calibration=Calibration("default.txt", 4, 96, 0.125),
                finetune=Finetune(True, 10, 3e-5, "all", 0.2, 0.1))
    return SimbaSection(**{**base, **kw})


def one_line(e) -> str:
    msg = str(e.value)
    assert "\n" not in msg and msg
    return msg


def test_round_trip_through_json():
    for s in (section(), section(finetune=None), section(budget=None, calibration=Calibration())):
        d = json.loads(json.dumps(s.to_dict()))
        assert SimbaSection.from_dict(d) == s
        assert fmt.from_json(fmt.to_json(s)) == s
    d = section().to_dict()
    assert d["format_version"] == fmt.FORMAT_VERSION == 2
    assert "finetune" not in section(finetune=None).to_dict()


def test_the_spec_is_stored_once():
    d = section().to_dict()
    flat = json.dumps(d)
    for key in ("keep_ratios", "criterion", "protect", "seed", "fingerprint"):
        assert flat.count(f'"{key}"') + flat.count(f'_{key}"') == 1, key
    assert d["keep_ratios"] == [1.0, 0.5, 0.25] and d["criterion"] == "delta" and d["protect"] == 8
    assert "spec" not in d and "versions" not in d
    with pytest.raises(CheckpointError, match="provenance.seed 4 differs from the pruning spec's seed 3"):
        section(provenance=Provenance(seed=4))


@pytest.mark.parametrize("where", ["top", "provenance", "calibration", "flops_reference", "finetune"])
def test_unknown_keys_are_rejected(where):
    d = section().to_dict()
    (d if where == "top" else d[where])["surprise"] = 1
    with pytest.raises(CheckpointError, match="unknown key 'surprise'") as e:
        SimbaSection.from_dict(d)
    one_line(e)
    v1 = json.loads(json.dumps(V1))
    v1["spec"]["surprise"] = 1
    with pytest.raises(CheckpointError, match="unknown key 'surprise' in spec"):
        SimbaSection.from_dict(v1)
    with pytest.raises(CheckpointError, match="unknown key 'surprise'"):
        SimbaSection.from_dict({"keep_ratios": [1.0, 0.5], "surprise": 1})


def test_newer_versions_and_bad_values_are_rejected():
    d = {**section().to_dict(), "format_version": 3}
    with pytest.raises(CheckpointError, match=r"format_version 3 is newer than this simba-convert .* reads \(2\); "
                                              "upgrade simba-convert") as e:
        SimbaSection.from_dict(d)
    one_line(e)
    for bad, match in (({"format_version": "2"}, "format_version must be"), ({"keep_ratios": [1.0, 1.5]}, "keep ratio"),
                       ({"protect": "8"}, "protect must be"), ({"budget": "0.6"}, "budget has the wrong type"),
                       ({"provenance": {"seed": 3, "git_commit": 7}}, "provenance.git_commit has the wrong type")):
        with pytest.raises(CheckpointError, match=match) as e:
            SimbaSection.from_dict({**section().to_dict(), **bad})
        one_line(e)
    with pytest.raises(CheckpointError, match="not an object"):
        SimbaSection.from_dict([1.0, 0.5])
    with pytest.raises(CheckpointError, match="not JSON"):
        fmt.from_json("{")


def test_format_1_is_read_and_converted():
    s = SimbaSection.from_dict(json.loads(json.dumps(V1)))
    assert s == section(provenance=Provenance("0.1.0", None, "0123456789abcdef", 3, "2.5.0"))
    d = s.to_dict()
    assert d["format_version"] == 2 and d["flops_reference"] == {"seq_len": 96}
    assert d["calibration"] == {"source": "default.txt", "samples": 4, "seq_len": 96, "kl": 0.125}
    assert SimbaSection.from_dict(d) == s
    # the "spec" copy is the one 0.1.0's loader read
    stale = {**V1, "keep_ratios": [1.0, 1.0, 1.0]}
    assert SimbaSection.from_dict(stale).spec.keep_ratios == (1.0, 0.5, 0.25)


def test_unversioned_bare_spec_is_read():
    a = SimbaSection.from_dict({"keep_ratios": [1.0, 0.4], "criterion": "global", "protect": 4, "version": 1})
    b = SimbaSection.from_dict({"spec": {"keep_ratios": [1.0, 0.4], "criterion": "global", "protect": 4}})
    assert a == b and a.spec == PruningSpec((1.0, 0.4), criterion="global", protect=4)
    assert a.provenance == Provenance(seed=0) and a.budget is None
    assert SimbaSection.from_dict(a.to_dict()) == a


def test_provenance_of_a_run_now(monkeypatch):
    p = fmt.provenance(calibration_fingerprint="f" * 16, seed=5, torch_version=torch.__version__)
    assert (p.tool_version, p.calibration_fingerprint, p.seed, p.torch_version) == (__version__, "f" * 16, 5,
                                                                                    torch.__version__)
    assert p.git_commit is None or (len(p.git_commit) == 40 and int(p.git_commit, 16) >= 0)
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5).stdout.strip()
    except OSError:
        head = ""
    if (ROOT / ".git").exists() and len(head) == 40:
        assert p.git_commit == head

    def no_git(*a, **k):
        raise FileNotFoundError("git")

    fmt.git_commit.cache_clear()
    monkeypatch.setattr(subprocess, "run", no_git)
    try:
        assert fmt.git_commit() is None  # best effort: never fails
    finally:
        fmt.git_commit.cache_clear()


def test_fingerprint_follows_the_data():
    ids = list(range(3, 400))
    w = calib_data.make_windows(ids, 4, 32, seed=0)
    f = calib_data.fingerprint(w)
    assert isinstance(f, str) and len(f) == 16
    assert calib_data.fingerprint(calib_data.make_windows(ids, 4, 32, seed=0)) == f  # stable
    assert calib_data.fingerprint(w.clone()) == f
    changed = w.clone()
    changed[0, 0] += 1
    assert calib_data.fingerprint(changed) != f  # one token differs
    assert calib_data.fingerprint(w[:3]) != f
    assert calib_data.fingerprint(calib_data.make_windows([i + 1 for i in ids], 4, 32, seed=0)) != f


def _save(tmp_path, simba) -> Path:
    torch.manual_seed(0)
    simba_convert.save_checkpoint(MambaLM(CFG), tmp_path / "s", extra_config={"simba": simba})
    return tmp_path / "s"


def test_loading_and_info_read_every_layout(tmp_path):
    from click.testing import CliRunner

    from simba_convert.cli.info_cmd import info_command

    for i, simba in enumerate((V1, section().to_dict(), {"keep_ratios": [1.0, 0.5, 0.25]})):
        d = _save(tmp_path / str(i), simba)
        m = simba_convert.load(d)
        assert isinstance(m, PrunedMambaLM) and m.spec.keep_ratios == (1.0, 0.5, 0.25)
        res = CliRunner().invoke(info_command, [str(d), "--json"])
        assert res.exit_code == 0, res.output
        shown = json.loads(res.output)["simba"]
        assert shown == SimbaSection.from_dict(simba).to_dict() and shown["format_version"] == 2


def test_a_newer_section_fails_before_the_weights_are_read(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from simba_convert.cli.info_cmd import info_command
    from simba_convert.io import checkpoint as ckpt

    d = _save(tmp_path, {**section().to_dict(), "format_version": 7})
    monkeypatch.setattr(ckpt, "load_dense", lambda *a, **k: pytest.fail("read the weights first"))
    with pytest.raises(CheckpointError, match=r"config.json: invalid 'simba' section: format_version 7 is newer") as e:
        simba_convert.load(d)
    one_line(e)
    res = CliRunner().invoke(info_command, [str(d)])
    assert res.exit_code == 2 and "format_version 7 is newer" in res.output and res.output.count("\n") == 1


def test_convert_config_round_trip():
    c = ConvertConfig(src="mamba-tiny", budget=0.5, schedule="linear", protect=8, samples=4, seq_len=96, seed=2,
                      calib="x.txt", onnx=True)
    assert ConvertConfig.from_dict(c.to_dict()) == c
    assert ConvertConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert ConvertConfig.from_dict({"src": "m"}) == ConvertConfig(src="m")
    with pytest.raises(ConfigError, match="unknown convert config key 'surprise'"):
        ConvertConfig.from_dict({**c.to_dict(), "surprise": 1})
    with pytest.raises(ConfigError, match=f"version {CONFIG_VERSION + 1} is newer"):
        ConvertConfig.from_dict({**c.to_dict(), "version": CONFIG_VERSION + 1})
    with pytest.raises(ConfigError, match="budget must be in"):
        ConvertConfig.from_dict({**c.to_dict(), "budget": 2.0})
    with pytest.raises(ConfigError, match="no input model"):
        ConvertConfig.from_dict({"budget": 0.5})


def _tokenizer(path: Path, text: str) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([text], trainer)
    tok.save(str(path))


def test_a_conversion_writes_format_2_with_its_provenance(tmp_path):
    from simba_convert.pipeline.convert import convert

    text = (ROOT / "calibration" / "default.txt").read_text(encoding="utf-8")[:12_000]
    (tmp_path / "calib.txt").write_text(text, encoding="utf-8")
    _tokenizer(tmp_path / "tokenizer.json", text)
    torch.manual_seed(0)
    simba_convert.save_checkpoint(MambaLM(MambaConfig(d_model=24, n_layer=3, vocab_size=300, d_state=5)),
                                  tmp_path / "src", tokenizer_dir=tmp_path / "tokenizer.json")
    rep = convert(str(tmp_path / "src"), str(tmp_path / "out"), budget=0.7, schedule="linear", samples=4,
                  seq_len=64, protect=8, max_evals=4, seed=4, progress=False, calib=str(tmp_path / "calib.txt"))
    stored = json.loads((tmp_path / "out" / "config.json").read_text())["simba"]
    assert stored == rep["simba"] and ConvertConfig.from_dict(rep["config"]).seed == 4
    s = SimbaSection.from_dict(stored)
    assert s.format_version == 2 and s.provenance.tool_version == __version__ and s.provenance.seed == 4
    assert s.provenance.git_commit == fmt.git_commit() and s.provenance.torch_version == torch.__version__
    assert len(s.provenance.calibration_fingerprint) == 16 and s.calibration.source == str(tmp_path / "calib.txt")
    assert s.spec.protect == 8 and s.flops_seq_len == 64 and s.budget == 0.7 and s.finetune is None
    assert s.architecture == stored["architecture"] == "mamba1"
    assert simba_convert.load(tmp_path / "out").spec == s.spec


def test_the_architecture_is_recorded_and_checked(tmp_path):
    s = section(architecture="mamba2")
    d = s.to_dict()
    assert d["architecture"] == "mamba2" and SimbaSection.from_dict(d) == s
    assert "architecture" not in section().to_dict()  # not recorded (sections of older tools): None
    with pytest.raises(CheckpointError, match="architecture 'mamba3' is not one of mamba1, mamba2, falcon_mamba"):
        SimbaSection.from_dict({**d, "architecture": "mamba3"})
    # config.json describes a Mamba-1 model: a section made for another architecture is refused before the weights
    ok = _save(tmp_path / "ok", section(architecture="mamba1").to_dict())
    assert simba_convert.load(ok).spec == section().spec
    bad = _save(tmp_path / "bad", s.to_dict())
    with pytest.raises(CheckpointError, match="'simba' section was written for a mamba2 model, but the config "
                                              "describes a mamba1 model") as e:
        simba_convert.load(bad)
    one_line(e)
