"""A sparsified checkpoint in transformers (issue 16): refused without trust_remote_code, run pruned with it.

Every sparsified output (both layouts; Mamba-1, FalconMamba, Mamba-2) has a config.json marked model_type "simba"
with an auto_map to the two files written beside the weights (simba_convert/io/hf_remote/). transformers is the
oracle: without trust_remote_code it refuses with its own message; with it, AutoModelForCausalLM gives the logits of
`simba_convert.load` exactly (not the dense model's), its loss, and the tokens of PrunedMambaLM.generate. Our own
readers (load, inspect_checkpoint, `info`, the re-conversion refusal) read the marked outputs and the older unmarked
ones (a dense config.json plus the section).
"""

from __future__ import annotations

import builtins
import importlib
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import simba_convert
from simba_convert import format as fmt
from simba_convert.arch.mamba2 import Mamba2Config, Mamba2LM
from simba_convert.cli.info_cmd import info_command
from simba_convert.errors import CheckpointError
from simba_convert.format import Provenance, SimbaSection
from simba_convert.io.checkpoint import write_checkpoint
from simba_convert.io.hf_remote import FILES
from simba_convert.io.layout import inspect_checkpoint
from simba_convert.model.config import MambaConfig
from simba_convert.model.mamba import MambaLM
from simba_convert.pruning.model import PrunedMambaLM
from simba_convert.pruning.spec import PruningSpec

transformers = pytest.importorskip("transformers")
from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402
from ckpt_helpers import randomize_weights

ROOT = Path(__file__).resolve().parents[1]
SPEC = PruningSpec((1.0, 0.5, 0.25), protect=4)
CASES = [("mamba1", "hf"), ("mamba1", "mamba_ssm"), ("falcon_mamba", "hf"), ("mamba2", "hf"), ("mamba2", "mamba_ssm")]
REFUSED = r"(?s)contains custom code which must be executed.*trust_remote_code=True"


def dense_model(arch: str, seed: int = 0):
    """A 3-layer model of `arch` with every parameter random (A < 0, spread step sizes), so token scores differ."""
    torch.manual_seed(seed)
    if arch == "mamba2":
        model = Mamba2LM(Mamba2Config(d_model=16, n_layer=3, vocab_size=61, d_state=8, headdim=8, ngroups=2,
                                      chunk_size=16, tie_embeddings=False))
    else:
        model = MambaLM(MambaConfig(d_model=24, n_layer=3, vocab_size=61, d_state=5, bcdt_rms=arch == "falcon_mamba",
                                    tie_embeddings=arch != "falcon_mamba"))
    return randomize_weights(model, seed + 1, spread_a=True, dt_bias=(0.5, -1.0)).eval()


def section(arch: str) -> SimbaSection:
    return SimbaSection(SPEC, Provenance(seed=SPEC.seed), architecture=arch, budget=0.6, schedule="linear")


def ids_for(vocab: int, b: int = 2, length: int = 40, seed: int = 0) -> torch.Tensor:
    return torch.randint(1, vocab, (b, length), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module", autouse=True)
def _modules_cache(tmp_path_factory):
    """transformers copies remote code into its modules cache: a temporary one, not the user's."""
    import transformers.dynamic_module_utils as dmu

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dmu, "HF_MODULES_CACHE", str(tmp_path_factory.mktemp("hf_modules")))
        yield


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """(arch, layout) -> a sparsified checkpoint directory written by save_checkpoint (names unique: transformers
    names its copy of the remote code after the directory)."""
    root = tmp_path_factory.mktemp("sparsified")
    out = {}
    for arch, layout in CASES:
        d = root / f"{arch}_{layout}"
        simba_convert.save_checkpoint(dense_model(arch), d, layout=layout,
                                      extra_config={"simba": section(arch).to_dict()})
        out[arch, layout] = d
    return out


def trusted(d: Path):
    return AutoModelForCausalLM.from_pretrained(d, trust_remote_code=True)


# --- the marked output and transformers' refusal -------------------------------------------------------------
@pytest.mark.parametrize("arch,layout", CASES)
def test_the_output_is_marked_and_transformers_refuses_it_without_trust(outputs, arch, layout, monkeypatch):
    d = outputs[arch, layout]
    raw = json.loads((d / "config.json").read_text())
    assert raw["model_type"] == "simba" and raw["architectures"] == ["SimbaForCausalLM"]
    assert raw["auto_map"] == {"AutoConfig": "configuration_simba.SimbaConfig",
                               "AutoModelForCausalLM": "modeling_simba.SimbaForCausalLM"}
    base = {"mamba1": "mamba", "falcon_mamba": "falcon_mamba", "mamba2": "mamba2"}[arch]
    assert raw["simba_base_config"] == ({"model_type": base, "architectures": raw["simba_base_config"]["architectures"]}
                                        if layout == "hf" else {})
    for name in FILES:
        assert (d / name).read_text() == (ROOT / "simba_convert" / "io" / "hf_remote" / name).read_text()
    with pytest.raises(ValueError, match=REFUSED):
        AutoModelForCausalLM.from_pretrained(d, trust_remote_code=False)
    with pytest.raises(ValueError, match=REFUSED):
        AutoConfig.from_pretrained(d, trust_remote_code=False)

    def no_terminal(prompt=""):  # transformers asks on a terminal; a script or a test has none
        raise EOFError

    monkeypatch.setattr(builtins, "input", no_terminal)
    with pytest.raises(ValueError, match=REFUSED):
        AutoModelForCausalLM.from_pretrained(d)


# --- trusted: runs pruned, exactly as simba_convert.load ------------------------------------------------------
@pytest.mark.parametrize("arch,layout", CASES)
def test_trusted_it_gives_the_pruned_logits_and_loss(outputs, arch, layout):
    from transformers.loss.loss_utils import ForCausalLMLoss

    d = outputs[arch, layout]
    hf = trusted(d)
    ours = simba_convert.load(d)
    assert type(hf).__name__ == "SimbaForCausalLM" and isinstance(ours, PrunedMambaLM) and ours.spec == SPEC
    assert hf.config.model_type == "simba" and not hf.training
    vocab = ours.config.vocab_size
    ids = ids_for(vocab)
    labels = ids.clone()
    labels[:, :5] = -100
    with torch.no_grad():
        out = hf(ids, labels=labels)
        want, dense = ours(ids), ours.dense(ids)
        assert torch.equal(out.logits, want)
        assert (out.logits - dense).abs().max() > 1e-2  # really pruned: not the dense model's logits
        oracle = ForCausalLMLoss(want, labels, vocab_size=want.shape[-1])
        assert torch.allclose(out.loss, oracle, rtol=1e-6, atol=0)
        mask = torch.ones_like(ids)
        mask[1, :7] = 0  # left padding
        assert torch.equal(hf(ids, attention_mask=mask).logits, ours(ids, mask))
        assert torch.equal(hf(ids, attention_mask=torch.ones_like(ids)).logits, want)
    with pytest.raises(ValueError, match="takes input_ids"):
        hf(inputs_embeds=torch.zeros(1, 3, ours.config.d_model))


@pytest.mark.parametrize("arch,layout", [("mamba1", "hf"), ("mamba2", "mamba_ssm")])
def test_trusted_greedy_generation_is_ours(outputs, arch, layout):
    d = outputs[arch, layout]
    hf, ours = trusted(d), simba_convert.load(d)
    ids = ids_for(ours.config.vocab_size, length=30, seed=3)
    eos = hf.generation_config.eos_token_id  # 0 from the transformers layout's config.json; else None
    assert eos == (0 if layout == "hf" else None)
    got = hf.generate(ids, max_new_tokens=6, do_sample=False)
    assert got.shape == (2, 36) and torch.equal(got, ours.generate(ids, 6, eos_token_id=eos))
    assert torch.equal(hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6), got)
    # an eos (sample 0's first new token): a sample continues with pad_token_id after it, as in transformers
    stop, pad = int(got[0, 30]), int(got[0, 30]) + 1
    mine = ours.generate(ids, 6, eos_token_id=stop)
    theirs = hf.generate(ids, max_new_tokens=6, eos_token_id=stop, pad_token_id=pad)
    assert theirs.shape == mine.shape and torch.equal(theirs[:, :30], ids)
    assert theirs[0, 30:].tolist() == [stop] + [pad] * (mine.shape[1] - 31)
    for row in range(2):
        new = mine[row, 30:].tolist()
        if stop in new:
            k = new.index(stop)
            new = new[:k + 1] + [pad] * (len(new) - k - 1)
        assert theirs[row, 30:].tolist() == new
    with pytest.raises(ValueError, match="does not support num_beams"):
        hf.generate(ids, max_new_tokens=3, num_beams=2)
    with pytest.raises(ValueError, match="padded batches"):
        hf.generate(ids, attention_mask=torch.ones_like(ids).index_fill_(1, torch.tensor([0]), 0), max_new_tokens=2)


def test_without_simba_convert_the_remote_code_says_what_to_install(outputs, tmp_path, monkeypatch):
    pkg = tmp_path / "simba_remote_probe"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name in FILES:
        shutil.copyfile(outputs["mamba1", "hf"] / name, pkg / name)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(sys.modules, "simba_convert", None)  # `import simba_convert` fails as if not installed
    try:
        with pytest.raises(ImportError, match=r"runs only through simba-convert: pip install simba-convert$") as e:
            importlib.import_module("simba_remote_probe.modeling_simba")
        assert "\n" not in str(e.value)
    finally:
        for name in [m for m in sys.modules if m.startswith("simba_remote_probe")]:
            del sys.modules[name]


# --- our readers -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch,layout", CASES)
def test_our_readers_read_the_marked_output(outputs, arch, layout, tmp_path):
    from simba_convert.pipeline.convert import convert

    d = outputs[arch, layout]
    info = inspect_checkpoint(d)
    assert (info.architecture, info.layout, info.sparsified, info.section) == (arch, layout, True, section(arch))
    dense = dense_model(arch)
    cfg = dense.config.to_hf() if layout == "hf" else dense.config.to_mamba_ssm()
    base = {k: v for k, v in fmt.base_config(info.raw_config).items() if k not in ("simba", "dtype", "torch_dtype")}
    assert base == cfg and fmt.mark(fmt.base_config(info.raw_config)) == info.raw_config
    res = CliRunner().invoke(info_command, [str(d), "--json"])
    assert res.exit_code == 0, res.output
    shown = json.loads(res.output)
    assert (shown["architecture"], shown["layout"], shown["sparsified"]) == (arch, layout, True)
    assert shown["simba"] == section(arch).to_dict()
    ids = ids_for(dense.config.vocab_size)
    with torch.no_grad():
        assert torch.equal(simba_convert.load(d)(ids), PrunedMambaLM(dense, SPEC)(ids))
        assert torch.equal(simba_convert.load(d, apply_simba=False)(ids), dense(ids))
    with pytest.raises(CheckpointError, match="already a sparsified checkpoint"):
        convert(str(d), str(tmp_path / "again"), budget=0.6, progress=False)


@pytest.mark.parametrize("layout", ["hf", "mamba_ssm"])
def test_unmarked_outputs_of_earlier_versions_still_load_pruned(tmp_path, layout):
    dense = dense_model("mamba1")
    simba_convert.save_checkpoint(dense, tmp_path / "old", layout=layout)
    cfg = json.loads((tmp_path / "old" / "config.json").read_text())
    assert "simba" not in cfg and cfg.get("model_type") == ("mamba" if layout == "hf" else None)
    assert not any((tmp_path / "old" / name).exists() for name in FILES)  # dense outputs are unchanged
    (tmp_path / "old" / "config.json").write_text(json.dumps({**cfg, "simba": section("mamba1").to_dict()}))
    info = inspect_checkpoint(tmp_path / "old")
    assert (info.layout, info.sparsified, info.section) == (layout, True, section("mamba1"))
    model = simba_convert.load(tmp_path / "old")
    assert isinstance(model, PrunedMambaLM) and model.spec == SPEC
    ids = ids_for(61)
    with torch.no_grad():
        assert torch.equal(model(ids), PrunedMambaLM(dense, SPEC)(ids))
    res = CliRunner().invoke(info_command, [str(tmp_path / "old"), "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["simba"] == section("mamba1").to_dict()


def test_a_marked_config_without_its_section_or_base_is_refused_in_one_line(outputs, tmp_path):
    raw = json.loads((outputs["mamba1", "hf"] / "config.json").read_text())
    for name, bad, needle in [
        ("nosection", {k: v for k, v in raw.items() if k != "simba"}, "without its 'simba' section"),
        ("nobase", {k: v for k, v in raw.items() if k != "simba_base_config"}, "without a valid 'simba_base_config'"),
        ("unknown", {**raw, "simba_base_config": {**raw["simba_base_config"], "x": 1}}, "unknown key 'x'"),
    ]:
        d = tmp_path / name
        shutil.copytree(outputs["mamba1", "hf"], d)
        (d / "config.json").write_text(json.dumps(bad))
        with pytest.raises(CheckpointError, match=needle) as e:
            simba_convert.load(d)
        assert "\n" not in str(e.value) and "config.json" in str(e.value)


@pytest.mark.parametrize("layout", ["hf", "mamba_ssm"])
def test_write_checkpoint_with_a_section_fragment_marks_against_the_layout(tmp_path, layout):
    """The fine-tune path of a conversion: write_checkpoint(extra_config=format.with_section({}, section))."""
    dense = dense_model("mamba1")
    write_checkpoint(dense, tmp_path / "ft", layout=layout, extra_config=fmt.with_section({}, section("mamba1")),
                     create=True)
    raw = json.loads((tmp_path / "ft" / "config.json").read_text())
    assert raw["model_type"] == "simba"
    assert raw["simba_base_config"].get("model_type") == ("mamba" if layout == "hf" else None)
    ids = ids_for(61)
    with torch.no_grad():
        assert torch.equal(trusted(tmp_path / "ft")(ids).logits, PrunedMambaLM(dense, SPEC)(ids))


# --- a conversion's output -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from simba_convert.pipeline.convert import convert

    d = tmp_path_factory.mktemp("convert")
    text = (ROOT / "calibration" / "default.txt").read_text(encoding="utf-8")[:12_000]
    (d / "calib.txt").write_text(text, encoding="utf-8")
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tok.train_from_iterator([text], trainers.BpeTrainer(vocab_size=300, initial_alphabet=alphabet, show_progress=False))
    tok.save(str(d / "tokenizer.json"))
    torch.manual_seed(0)
    simba_convert.save_checkpoint(MambaLM(MambaConfig(d_model=24, n_layer=3, vocab_size=300, d_state=5)), d / "src",
                                  layout="hf", tokenizer_dir=d / "tokenizer.json")
    convert(str(d / "src"), str(d / "out"), budget=0.7, schedule="linear", samples=4, seq_len=64, protect=8,
            max_evals=4, progress=False, calib=str(d / "calib.txt"))
    return d / "out"


def test_a_conversion_output_is_refused_by_transformers_without_trust(converted):
    raw = json.loads((converted / "config.json").read_text())
    assert raw["model_type"] == "simba" and raw["simba_base_config"]["model_type"] == "mamba"
    with pytest.raises(ValueError, match=REFUSED):
        AutoModelForCausalLM.from_pretrained(converted, trust_remote_code=False)
    assert isinstance(simba_convert.load(converted), PrunedMambaLM)


def test_a_conversion_output_runs_pruned_in_transformers(converted):
    assert all((converted / name).is_file() for name in FILES)
    ours = simba_convert.load(converted)
    ids = ids_for(300)
    with torch.no_grad():
        assert torch.equal(trusted(converted)(ids).logits, ours(ids))
