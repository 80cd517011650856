"""Checkpoint I/O: resolving sources, layout detection, strict loading, errors, atomic saving, round trips,
tokenizers and `simba-convert info`. All on tiny random models; no network."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import simba_convert
from ckpt_helpers import listing
from simba_convert.errors import CheckpointError, ConfigError, OutputExistsError
from simba_convert.io import checkpoint as ckpt
from simba_convert.io import resolve as resolve_mod
from simba_convert.io.layout import expected_shapes, inspect_checkpoint, parameter_count
from simba_convert.io.tokenizer import load_tokenizer
from simba_convert.model.config import MambaConfig
from simba_convert.model.mamba import MambaLM

CFG = MambaConfig(d_model=24, n_layer=2, vocab_size=61, d_state=5, d_conv=3)  # 61 -> 64 padded rows


def random_model(cfg: MambaConfig = CFG, seed: int = 0) -> MambaLM:
    torch.manual_seed(seed)
    model = MambaLM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return model.eval()


def save_bin(model: MambaLM, d: Path, state: dict | None = None, config: dict | None = None) -> Path:
    """The mamba_ssm layout as state-spaces ships it: config.json + pytorch_model.bin (lm_head included)."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(config or model.config.to_mamba_ssm()))
    torch.save(model.state_dict() if state is None else state, d / "pytorch_model.bin")
    return d


def same_bytes(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(
        a.contiguous().flatten().view(torch.uint8), b.contiguous().flatten().view(torch.uint8)
    )


def ids(b=2, length=11, vocab=61):
    return torch.randint(0, vocab, (b, length), generator=torch.Generator().manual_seed(1))


# --- layout knowledge agrees with the model --------------------------------------------------------
@pytest.mark.parametrize("cfg", [
    CFG,
    MambaConfig(d_model=40, n_layer=3, vocab_size=257, d_state=16, d_conv=4, tie_embeddings=False),
    MambaConfig(d_model=24, n_layer=1, vocab_size=50, rms_norm=False, bias=True, conv_bias=False, dt_rank=5),
])
def test_expected_shapes_and_parameter_count_match_the_model(cfg):
    model = MambaLM(cfg)
    assert expected_shapes(cfg) == {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert parameter_count(cfg) == sum(p.numel() for p in model.parameters())  # tied head counted once


# --- loading: layouts --------------------------------------------------------------------------------
def test_mamba_ssm_bin_loads_exactly(tmp_path):
    model = random_model()
    save_bin(model, tmp_path / "m")
    info = inspect_checkpoint(tmp_path / "m")
    assert (info.layout, info.weight_format, info.sparsified) == ("mamba_ssm", "bin", False)
    loaded = simba_convert.load(tmp_path / "m")
    assert loaded.lm_head.weight is loaded.backbone.embedding.weight
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert same_bytes(a, b), k
    with torch.no_grad():
        assert torch.equal(loaded(ids()), model(ids()))


def test_legacy_pickle_format_bin_loads(tmp_path):
    model = random_model()
    save_bin(model, tmp_path / "m", state={})  # config only; the weights in torch's pre-zip format
    torch.save(model.state_dict(), tmp_path / "m" / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    with torch.no_grad():
        assert torch.equal(simba_convert.load(tmp_path / "m")(ids()), model(ids()))


def test_dtype_argument(tmp_path):
    save_bin(random_model().to(torch.bfloat16), tmp_path / "m")
    assert simba_convert.load(tmp_path / "m").dtype == torch.float32  # default: fp32 whatever is stored
    assert simba_convert.load(tmp_path / "m", dtype="auto").dtype == torch.bfloat16
    assert simba_convert.load(tmp_path / "m", dtype=torch.float16).dtype == torch.float16
    with pytest.raises(ConfigError, match="unknown dtype"):
        simba_convert.load(tmp_path / "m", dtype="float8")


# --- loading: every bad input gives a one-line CheckpointError and writes nothing ----------------------
def _truncate(path: Path, keep: float = 0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


class Evil:
    """A pickled object whose unpickling would create a file; weights_only loading must refuse it."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def _bad_missing_dir(d):
    return d / "nope", "does not exist"


def _bad_no_config(d):
    save_bin(random_model(), d / "m")
    (d / "m" / "config.json").unlink()
    return d / "m", "no config.json"


def _bad_no_weights(d):
    save_bin(random_model(), d / "m")
    (d / "m" / "pytorch_model.bin").unlink()
    return d / "m", "no weights in .* model.safetensors"


def _bad_truncated_safetensors(d):
    simba_convert.save_checkpoint(random_model(), d / "m")
    _truncate(d / "m" / "model.safetensors", 0.7)
    return d / "m", "model.safetensors is truncated"


def _bad_safetensors_garbage(d):
    simba_convert.save_checkpoint(random_model(), d / "m")
    (d / "m" / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    return d / "m", "corrupt"


def _bad_truncated_bin(d):
    save_bin(random_model(), d / "m")
    _truncate(d / "m" / "pytorch_model.bin")
    return d / "m", "pytorch_model.bin is truncated or corrupt"


def _bad_pickle(d):
    m = save_bin(random_model(), d / "m", state={"x": Evil(str(d / "pwned"))})
    return m, "cannot be loaded safely.*only weights_only"


def _bad_llama(d):
    save_bin(random_model(), d / "m", config={"model_type": "llama", "hidden_size": 24, "num_hidden_layers": 2})
    return d / "m", "found model_type 'llama', not a Mamba model; supported: Mamba-1"


def _bad_not_a_config(d):
    save_bin(random_model(), d / "m", config={"name": "something", "layers": 2})
    return d / "m", "not a Mamba config.*supported"


def _bad_json_list(d):
    save_bin(random_model(), d / "m", config=[1, 2])
    return d / "m", "holds a JSON list, not a model config"


# Mamba-2 configs over Mamba-1 tensors: read as Mamba-2 (6 heads of 8), whose A is one number per head
_MAMBA1_A_LOG = r"'backbone.layers.0.mixer.A_log' has shape \(48, 5\) but the config implies \(6,\)"


def _bad_mamba2_ssm(d):
    cfg = CFG.to_mamba_ssm()
    cfg["ssm_cfg"] = {"layer": "Mamba2", "d_state": 5, "d_conv": 3, "headdim": 8}
    save_bin(random_model(), d / "m", config=cfg)
    return d / "m", _MAMBA1_A_LOG


def _bad_mamba2_hf(d):
    save_bin(random_model(), d / "m", config={"model_type": "mamba2", "hidden_size": 24, "num_hidden_layers": 2,
                                              "vocab_size": 64, "head_dim": 8, "n_groups": 1, "state_size": 5})
    return d / "m", _MAMBA1_A_LOG


def _bad_corrupt_json(d):
    save_bin(random_model(), d / "m")
    _truncate(d / "m" / "config.json")
    return d / "m", "config.json is not valid JSON"


def _bad_shape(d):
    state = random_model().state_dict()
    state["backbone.layers.1.mixer.x_proj.weight"] = torch.zeros(7, 48)
    save_bin(random_model(), d / "m", state=state)
    return d / "m", r"'backbone.layers.1.mixer.x_proj.weight' has shape \(7, 48\) but the config implies \(12, 48\)"


def _bad_missing_tensor(d):
    state = random_model().state_dict()
    del state["backbone.layers.1.mixer.D"]
    save_bin(random_model(), d / "m", state=state)
    return d / "m", r"missing tensor 'backbone.layers.1.mixer.D' of shape \(48,\)"


def _bad_unexpected_tensor(d):
    state = random_model().state_dict()
    state["backbone.layers.0.mixer.extra"] = torch.zeros(3)
    save_bin(random_model(), d / "m", state=state)
    return d / "m", r"unexpected tensor 'backbone.layers.0.mixer.extra' of shape \(3,\)"


def _bad_untied_head_in_tied_config(d):
    state = {k: v.clone() for k, v in random_model().state_dict().items()}
    state["lm_head.weight"] += 1
    save_bin(random_model(), d / "m", state=state)
    return d / "m", "lm_head.weight differs"


def _bad_int_tensor(d):
    state = random_model().state_dict()
    state["backbone.layers.0.mixer.D"] = torch.zeros(48, dtype=torch.int32)
    save_bin(random_model(), d / "m", state=state)
    return d / "m", "non-float dtype"


def _bad_missing_shard(d):
    simba_convert.save_checkpoint(random_model(), d / "m", max_shard_bytes=4096)
    shard = sorted((d / "m").glob("model-*.safetensors"))[1]
    shard.unlink()
    return d / "m", f"lists shard {shard.name} which is missing"


def _bad_empty_source(d):
    return "", "no model given"


def _bad_short_name(d):
    return "mamba-7b", r"unknown model 'mamba-7b'.*mamba-tiny, mamba-\{130m,.*\}\[-hf\].*state-spaces/mamba-1.4b"


BAD = [v for k, v in sorted(globals().items()) if k.startswith("_bad_")]


@pytest.mark.parametrize("make", BAD, ids=[f.__name__[5:] for f in BAD])
def test_bad_input_one_line_error_and_nothing_written(tmp_path, make):
    src, pattern = make(tmp_path)
    before = listing(tmp_path)
    with pytest.raises(CheckpointError, match=pattern) as e:
        simba_convert.load(src)
    assert "\n" not in str(e.value)
    assert listing(tmp_path) == before


# --- the Hub cache ---------------------------------------------------------------------------------
SHA = "0123456789abcdef0123456789abcdef01234567"


def fake_hub_cache(cache: Path, repo_id: str, src_dir: Path | None) -> Path:
    """huggingface_hub's cache layout: models--org--name/{refs/main, snapshots/<sha>/files}."""
    folder = cache / ("models--" + repo_id.replace("/", "--"))
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(SHA)
    snap = folder / "snapshots" / SHA
    snap.mkdir(parents=True)
    for f in src_dir.iterdir() if src_dir else ():
        shutil.copyfile(f, snap / f.name)
    return snap


def test_hub_id_cached_loads_offline(tmp_path, monkeypatch):
    from huggingface_hub import constants

    model = random_model()
    simba_convert.save_checkpoint(model, tmp_path / "src", layout="hf")
    snap = fake_hub_cache(tmp_path / "cache", "someorg/tiny-mamba", tmp_path / "src")
    loaded = simba_convert.load("someorg/tiny-mamba", offline=True, cache_dir=tmp_path / "cache")
    with torch.no_grad():
        assert torch.equal(loaded(ids()), model(ids()))
    # the cache location and offline mode from huggingface_hub's constants (HF_HUB_CACHE, HF_HUB_OFFLINE)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    r = resolve_mod.resolve("someorg/tiny-mamba")
    assert (r.kind, r.repo_id, r.path.resolve()) == ("hub", "someorg/tiny-mamba", snap.resolve())


def test_short_name_resolves_to_state_spaces_in_cache(tmp_path):
    save_bin(random_model(), tmp_path / "src")
    fake_hub_cache(tmp_path / "cache", "state-spaces/mamba-130m", tmp_path / "src")
    r = resolve_mod.resolve("mamba-130m", offline=True, cache_dir=tmp_path / "cache")
    assert r.repo_id == "state-spaces/mamba-130m" and (r.path / "pytorch_model.bin").is_file()
    assert resolve_mod.SHORT_NAMES["mamba-2.8b-hf"] == "state-spaces/mamba-2.8b-hf"


def test_mamba2_and_falcon_short_names_resolve_to_their_hub_ids(tmp_path):
    """The Mamba-2 sizes are state-spaces' own names (780m, 1.3b, 2.7b: not the Mamba-1 sizes)."""
    assert resolve_mod.SHORT_NAMES["mamba2-2.7b"] == "state-spaces/mamba2-2.7b"
    assert resolve_mod.SHORT_NAMES["mamba2-780m"] == "state-spaces/mamba2-780m"
    assert "mamba2-790m" not in resolve_mod.SHORT_NAMES
    assert resolve_mod.SHORT_NAMES["falcon-mamba-7b"] == "tiiuae/falcon-mamba-7b"
    assert resolve_mod.SHORT_NAMES["mamba-codestral-7b"] == "mistralai/Mamba-Codestral-7B-v0.1"
    save_bin(random_model(), tmp_path / "src")
    fake_hub_cache(tmp_path / "cache", "state-spaces/mamba2-130m", tmp_path / "src")
    r = resolve_mod.resolve("mamba2-130m", offline=True, cache_dir=tmp_path / "cache")
    assert r.repo_id == "state-spaces/mamba2-130m" and r.kind == "hub"


def test_hub_id_not_cached_offline_names_id_cache_and_env(tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "cache"
    with pytest.raises(CheckpointError) as e:
        simba_convert.load("state-spaces/mamba-1.4b", offline=True, cache_dir=cache)
    msg = str(e.value)
    assert "state-spaces/mamba-1.4b" in msg and str(cache) in msg and "HF_HUB_OFFLINE" in msg
    assert "hf download state-spaces/mamba-1.4b" in msg and "\n" not in msg
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # the environment's offline switch, no flag
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    with pytest.raises(CheckpointError, match=f"mamba-370m.*{cache}.*offline mode is on"):
        simba_convert.load("mamba-370m")


def test_incomplete_cached_snapshot_is_reported(tmp_path):
    save_bin(random_model(), tmp_path / "src")
    (tmp_path / "src" / "pytorch_model.bin").unlink()
    fake_hub_cache(tmp_path / "cache", "someorg/partial", tmp_path / "src")
    with pytest.raises(CheckpointError, match="no weights in .*someorg/partial.*download is incomplete"):
        simba_convert.load("someorg/partial", offline=True, cache_dir=tmp_path / "cache")


def test_bundled_model(tmp_path, monkeypatch):
    monkeypatch.setattr(resolve_mod, "bundled_root", lambda: tmp_path / "models")
    with pytest.raises(CheckpointError, match="bundled model 'mamba-tiny' is missing"):
        simba_convert.load("mamba-tiny")
    simba_convert.save_checkpoint(random_model(), tmp_path / "models" / "mamba-tiny")
    r = resolve_mod.resolve("mamba-tiny")
    assert r.kind == "bundled" and r.path == tmp_path / "models" / "mamba-tiny"


def test_local_directory_wins_over_names(tmp_path, monkeypatch):
    save_bin(random_model(), tmp_path / "mamba-130m")
    monkeypatch.chdir(tmp_path)
    assert resolve_mod.resolve("mamba-130m").kind == "local"
    (tmp_path / "afile").write_text("x")
    with pytest.raises(CheckpointError, match="is a file"):
        resolve_mod.resolve("afile")


# --- saving ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["mamba_ssm", "hf"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shard", [False, True])
def test_round_trip_is_byte_for_byte(tmp_path, layout, dtype, shard):
    model = random_model(MambaConfig(d_model=24, n_layer=2, vocab_size=61, d_state=5, d_conv=3,
                                     tie_embeddings=not shard)).to(dtype)
    kw = {"max_shard_bytes": 3000} if shard else {}
    simba_convert.save_checkpoint(model, tmp_path / "a", layout=layout, **kw)
    assert ((tmp_path / "a" / "model.safetensors.index.json").is_file()) == shard
    info = inspect_checkpoint(tmp_path / "a")
    assert info.layout == layout and info.weight_format == "safetensors"
    stored = dict(ckpt.iter_checkpoint_tensors(info))
    want = model.state_dict()
    assert set(stored) == set(want) - ({"lm_head.weight"} if model.config.tie_embeddings else set())
    for k, t in stored.items():
        assert same_bytes(t, want[k]), k
    loaded = simba_convert.load(tmp_path / "a", dtype="auto")
    for k, t in loaded.state_dict().items():
        assert same_bytes(t, want[k]), k
    simba_convert.save_checkpoint(loaded, tmp_path / "b", layout=layout, **kw)
    for f in (tmp_path / "a").iterdir():
        assert f.read_bytes() == (tmp_path / "b" / f.name).read_bytes(), f.name


def test_save_refuses_to_overwrite_without_force(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    with pytest.raises(OutputExistsError, match="needs force") as e:
        simba_convert.save_checkpoint(random_model(), out)
    assert e.value.options == ("force",)  # the parameter; the CLI names its flag
    assert listing(out) == {"keep.txt"}
    simba_convert.save_checkpoint(random_model(), out, force=True)
    assert listing(out) == {"config.json", "model.safetensors"}
    assert listing(tmp_path) == {"out", "out/config.json", "out/model.safetensors"}


@pytest.mark.parametrize("exc", [OSError("No space left on device"), KeyboardInterrupt()])
@pytest.mark.parametrize("existing", [False, True])
def test_failed_save_leaves_nothing(tmp_path, monkeypatch, exc, existing):
    out = tmp_path / "out"
    if existing:
        out.mkdir()
        (out / "keep.txt").write_text("old")
    before = listing(tmp_path)
    real = ckpt._write_safetensors
    calls = []

    def failing_write(path, tensors):  # the first shard is written for real, the second fails mid-way
        calls.append(path)
        if len(calls) == 2:
            path.write_bytes(b"partial")
            raise exc
        real(path, tensors)

    monkeypatch.setattr(ckpt, "_write_safetensors", failing_write)
    with pytest.raises(type(exc)):
        simba_convert.save_checkpoint(random_model(), out, max_shard_bytes=3000, force=existing)
    assert len(calls) == 2
    assert listing(tmp_path) == before


def test_extra_config_tokenizer_and_sparsified_section(tmp_path):
    tok_file = _word_tokenizer(tmp_path / "tok.json")
    simba = {"version": 1, "keep_ratios": [1.0, 0.5], "criterion": "last", "protect": 4}
    simba_convert.save_checkpoint(random_model(), tmp_path / "s", layout="hf", extra_config={"simba": simba},
                                  tokenizer_dir=tok_file)
    cfg = json.loads((tmp_path / "s" / "config.json").read_text())
    assert cfg["simba"] == simba and cfg["dtype"] == "float32"
    # marked for transformers (issue 16: it used to keep "mamba" and run dense there); tests/test_hf_remote.py
    assert cfg["model_type"] == "simba" and cfg["simba_base_config"]["model_type"] == "mamba"
    info = inspect_checkpoint(tmp_path / "s")
    assert info.sparsified and info.simba == simba and info.has_tokenizer
    dense = simba_convert.load(tmp_path / "s", apply_simba=False)
    assert isinstance(dense, MambaLM)
    with pytest.raises(ConfigError, match="may not override the architecture field 'hidden_size'"):
        simba_convert.save_checkpoint(random_model(), tmp_path / "t", layout="hf", extra_config={"hidden_size": 3})
    assert not (tmp_path / "t").exists()
    with pytest.raises(ConfigError, match="unknown checkpoint layout"):
        simba_convert.save_checkpoint(random_model(), tmp_path / "t", layout="gguf")


# --- tokenizers ------------------------------------------------------------------------------------
def _word_tokenizer(path: Path, words=("<|endoftext|>", "hello", "world", "[UNK]")) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return path


def test_tokenizer_sources_and_order(tmp_path):
    save_bin(random_model(), tmp_path / "m")
    _word_tokenizer(tmp_path / "m" / "tokenizer.json")
    tok = load_tokenizer(tmp_path / "m")
    assert tok.encode("hello world") == [1, 2] and tok.decode([2, 1]) == "world hello"
    assert (tok.eos_token_id, tok.vocab_size) == (0, 4)
    other = _word_tokenizer(tmp_path / "other" / "tokenizer.json", words=("a", "hello", "</s>"))
    (tmp_path / "other" / "tokenizer_config.json").write_text(json.dumps({"eos_token": "a"}))
    assert load_tokenizer(tmp_path / "m", tokenizer=other).eos_token_id == 0  # the explicit file wins
    assert load_tokenizer(tmp_path / "m", tokenizer=tmp_path / "other").encode("hello") == [1]
    assert load_tokenizer(None, tokenizer=other).vocab_size == 3
    model, tok2, info = simba_convert.load_with_tokenizer(tmp_path / "m")
    assert tok2.encode("world") == [2] and info.layout == "mamba_ssm" and info.kind == "local"


def test_default_tokenizer_from_cache_or_clear_error(tmp_path):
    save_bin(random_model(), tmp_path / "m")  # like state-spaces checkpoints: no tokenizer files
    with pytest.raises(CheckpointError) as e:
        load_tokenizer(tmp_path / "m", offline=True, cache_dir=tmp_path / "cache")
    msg = str(e.value)
    assert "EleutherAI/gpt-neox-20b" in msg and "HF_HUB_OFFLINE" in msg and "\n" not in msg
    assert e.value.options == ("tokenizer",) and "--" not in msg  # the CLI names its flag
    _word_tokenizer(tmp_path / "neox" / "tokenizer.json")
    fake_hub_cache(tmp_path / "cache", "EleutherAI/gpt-neox-20b", tmp_path / "neox")
    tok = load_tokenizer(tmp_path / "m", offline=True, cache_dir=tmp_path / "cache")
    assert tok.source == "EleutherAI/gpt-neox-20b" and tok.encode("world hello") == [2, 1]


def test_simba_section_for_another_model_is_a_checkpoint_error(tmp_path):
    """pruning.model raises ValueError for keep ratios of another layer count; the loader names the file."""
    simba_convert.save_checkpoint(random_model(), tmp_path / "s",
                                  extra_config={"simba": {"spec": {"keep_ratios": [1.0, 0.5, 0.4]}}})
    with pytest.raises(CheckpointError, match=r"config.json: invalid 'simba' section \(spec has 3 ratios"):
        simba_convert.load(tmp_path / "s")


def test_tokenizer_must_fit_the_embedding(tmp_path, monkeypatch):
    import huggingface_hub

    save_bin(random_model(), tmp_path / "m")  # 61 tokens, 64 embedding rows
    tok = _word_tokenizer(tmp_path / "t" / "tokenizer.json", words=[f"w{i}" for i in range(70)])
    with pytest.raises(CheckpointError, match="token ids up to 69 but the model's embedding has 64 rows") as e:
        load_tokenizer(tmp_path / "m", tokenizer=tok, vocab_size=64)
    assert e.value.options == ("tokenizer",)
    assert load_tokenizer(tmp_path / "m", tokenizer=tok, vocab_size=70).vocab_size == 70

    def no_hub(*a, **k):
        raise AssertionError("asked the Hub for GPT-NeoX's tokenizer for a 64-token model")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_hub)
    with pytest.raises(CheckpointError, match="no tokenizer.json, and its vocabulary .64 rows. is not GPT-NeoX's"):
        load_tokenizer(tmp_path / "m", vocab_size=64)
    with pytest.raises(CheckpointError, match="not GPT-NeoX's"):
        simba_convert.load_with_tokenizer(tmp_path / "m")


def test_never_waits_for_an_unreachable_hub(tmp_path, monkeypatch):
    """Online, with nothing answering: one quick probe, not huggingface_hub's five retries (about 25 s)."""
    import time

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # the discard port: connection refused
    save_bin(random_model(), tmp_path / "m")
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match=r"the Hub \(http://127.0.0.1:9\) cannot be reached"):
        load_tokenizer(tmp_path / "m", cache_dir=tmp_path / "cache")
    with pytest.raises(CheckpointError, match=r"not in the Hugging Face cache .* the Hub \(http://127.0.0.1:9\)"):
        resolve_mod.resolve("state-spaces/mamba-130m", cache_dir=tmp_path / "cache")
    assert time.perf_counter() - t0 < 5


# --- `simba-convert info` and import weight -------------------------------------------------------
def test_info_command(tmp_path):
    from click.testing import CliRunner

    from simba_convert.cli.info_cmd import info_command

    model = random_model()
    save_bin(model, tmp_path / "dense")
    res = CliRunner().invoke(info_command, [str(tmp_path / "dense")])
    assert res.exit_code == 0, res.output
    assert "mamba_ssm (pytorch_model.bin)" in res.output and "float32" in res.output
    assert f"({parameter_count(CFG):,})" in res.output and "no (dense)" in res.output
    simba_convert.save_checkpoint(model.to(torch.bfloat16), tmp_path / "sp", layout="hf",
                                  extra_config={"simba": {"keep_ratios": [1.0, 0.4]}})
    res = CliRunner().invoke(info_command, [str(tmp_path / "sp"), "--json"])
    s = json.loads(res.output)
    assert (s["layout"], s["sparsified"], s["simba"]["keep_ratios"]) == ("hf", True, [1.0, 0.4])
    assert s["simba"]["format_version"] == 2  # an unversioned section is shown converted (format.py)
    assert s["dtypes"] == {"bfloat16": len(model.state_dict()) - 1} and s["parameters"] == parameter_count(CFG)
    res = CliRunner().invoke(info_command, [str(tmp_path / "missing")])
    assert res.exit_code == 2 and res.output.startswith("error: checkpoint directory") and res.output.count("\n") == 1


def test_import_is_light():
    code = (
        "import sys, simba_convert; simba_convert.load; simba_convert.load_with_tokenizer;"
        "import simba_convert.cli.info_cmd, simba_convert.io.resolve, simba_convert.io.layout;"
        "assert 'torch' not in sys.modules, 'torch imported'; print(simba_convert.__version__)"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(simba_convert.__file__).parent.parent))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
