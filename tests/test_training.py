"""The data, tokenizer and training recipe (simba_convert/recipes/): split rule, readers, determinism, checkpoints."""

from __future__ import annotations

import hashlib
import json
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from simba_convert.recipes import corpus, corpus_rdata, corpus_sources, family, tokenize_corpus, train
from simba_convert.recipes import tokenizer as bpe

TINY_TEXT = "the cat sat on the mat. the dog sat on the log. " * 200


# --- corpus -------------------------------------------------------------------------------------------
def test_split_takes_the_tail_from_a_line_start():
    lines = [f"line {i:03d} " + "x" * (i % 7) for i in range(500)]
    text = "\n".join(lines)
    train_part, valid = corpus.split_source(text, 0.02)
    assert train_part + valid == text
    cut = len(train_part)
    assert text[cut - 1] == "\n"  # valid starts at a line start...
    assert cut >= len(text) - math.ceil(0.02 * len(text))  # ...at or after 98% of the characters
    assert "\n" not in text[len(text) - math.ceil(0.02 * len(text)) - 1:cut - 1]  # and the first such one
    assert 0 < len(valid) <= 0.02 * len(text) + max(len(x) for x in lines) + 1


def test_split_refuses_a_source_without_a_tail():
    with pytest.raises(ValueError):
        corpus.split_source("one line without a newline", 0.02)


def _xdr_strsxp(items: list[str]) -> bytes:
    """A serialized R character vector (format X, version 2), written by hand from R Internals."""
    out = b"X\n" + struct.pack(">iii", 2, 0x040201, 0x020300)
    out += struct.pack(">ii", corpus_rdata.STRSXP, len(items))
    for s in items:
        raw = s.encode("utf-8")
        out += struct.pack(">ii", corpus_rdata.CHARSXP | (1 << 15), len(raw)) + raw  # UTF8_MASK in levels
    return out


def test_rdata_reader_reads_a_character_vector_and_a_named_list():
    obj = corpus_rdata.unserialize(_xdr_strsxp(["Emma", "", "Café"]))
    assert obj.type == corpus_rdata.STRSXP and obj.value == ["Emma", "", "Café"]
    # list(a = 1:2) with a names attribute: VECSXP with the attribute flag, then a tagged pairlist.
    body = b"X\n" + struct.pack(">iii", 2, 0, 0)
    body += struct.pack(">ii", corpus_rdata.VECSXP | (1 << 9), 1)
    body += struct.pack(">iiii", corpus_rdata.INTSXP, 2, 1, 2)
    body += struct.pack(">i", corpus_rdata.LISTSXP | (1 << 10))  # attribute pairlist cell with a tag
    body += struct.pack(">i", corpus_rdata.SYMSXP) + struct.pack(">ii", corpus_rdata.CHARSXP, 5) + b"names"
    body += struct.pack(">ii", corpus_rdata.STRSXP, 1) + struct.pack(">ii", corpus_rdata.CHARSXP, 1) + b"a"
    body += struct.pack(">i", corpus_rdata.NILVALUE_SXP)
    lst = corpus_rdata.unserialize(body)
    assert lst.value[0].value == [1, 2]
    assert lst.attributes["names"].value == ["a"]


def test_sword_ztext_reader_and_osis_rendering(tmp_path):
    entries = [b"", b'<title>Preface</title> Hello <note n="1">a note</note>world &amp; all', b"<w>In</w> <w>the</w>"]
    block = b"".join(entries)
    comp = zlib.compress(block)
    for t, ents in (("ot", entries), ("nt", [])):
        (tmp_path / f"{t}.bzz").write_bytes(comp if ents else b"")
        (tmp_path / f"{t}.bzs").write_bytes(struct.pack("<III", 0, len(comp), len(block)) if ents else b"")
        idx, pos = b"", 0
        for e in ents:
            idx += struct.pack("<IIH", 0, pos, len(e))
            pos += len(e)
        (tmp_path / f"{t}.bzv").write_bytes(idx)
    got = corpus_sources.sword_ztext_entries(tmp_path)
    assert got == entries
    assert [corpus_sources.osis_to_plain(e) for e in got] == ["", "Preface Hello world & all", "In the"]


# --- tokenizer ----------------------------------------------------------------------------------------
def test_tokenizer_is_deterministic_and_reserves_id_0():
    docs = bpe.documents(TINY_TEXT + bpe.EOT + "a second source, with other words. " * 50)
    assert len(docs) == 2
    a, b = bpe.train_tokenizer(docs, 300), bpe.train_tokenizer(docs, 300)
    assert hashlib.sha256(a.encode()).digest() == hashlib.sha256(b.encode()).digest()
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(a)
    assert tok.token_to_id(bpe.EOT) == 0 and 257 < tok.get_vocab_size() <= 300  # tiny text: merges run out
    ids = tokenize_corpus.encode_documents(a, docs)
    assert ids.dtype == np.uint16 and (ids == 0).sum() == 2 and ids[-1] == 0
    assert tok.decode(tok.encode("the cat sat").ids) == "the cat sat"


# --- training -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    tj = bpe.train_tokenizer([TINY_TEXT], 300)
    (d / "tokenizer.json").write_text(tj, encoding="utf-8")
    tokens = d / "tokens"
    tokens.mkdir()
    np.save(tokens / "train.u16.npy", tokenize_corpus.encode_documents(tj, [TINY_TEXT]))
    np.save(tokens / "valid.u16.npy", tokenize_corpus.encode_documents(tj, [TINY_TEXT[:2000]]))
    return d


def _train(data: Path, out: Path, seed: int = 0, steps: int = 24):
    args = train.parse_args([
        "--smoke", "--quiet", "--out", str(out), "--tokens", str(data / "tokens"),
        "--tokenizer", str(data / "tokenizer.json"), "--d-model", "16", "--n-layer", "2",
        "--seq-len", "16", "--steps", str(steps), "--log-every", "4", "--eval-every", "12",
        "--seed", str(seed), "--dtype-save", "float32",
    ])
    return train.run(args)


def test_smoke_training_learns(tiny_data, tmp_path):
    model, summary = _train(tiny_data, tmp_path / "a")
    log = [json.loads(line) for line in (tmp_path / "a" / "train_log.jsonl").read_text().splitlines()]
    losses = [e["loss"] for e in log if "loss" in e]
    assert losses[-1] < losses[0] - 1.0, losses  # a repeated text is easy: the loss must drop clearly
    assert summary["valid_ppl"] < math.exp(losses[0])
    assert summary["steps"] == 24 and not summary["stopped_early"]
    assert [e["step"] for e in log if "valid_ppl" in e] == [12, 24]
    assert {"config.json", "model.safetensors", "tokenizer.json", "train_log.jsonl", "train_summary.json"} <= {
        p.name for p in (tmp_path / "a").iterdir()}


def test_smoke_training_is_deterministic(tiny_data, tmp_path):
    weights = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        _train(tiny_data, tmp_path / name, seed=seed, steps=5)
        weights.append((tmp_path / name / "model.safetensors").read_bytes())
    assert weights[0] == weights[1]  # same seed -> identical weights
    assert weights[0] != weights[2]


def test_checkpoint_reloads_with_identical_logits(tiny_data, tmp_path):
    import simba_convert

    model, _ = _train(tiny_data, tmp_path / "ck", steps=4)
    cfg = json.loads((tmp_path / "ck" / "config.json").read_text())
    vocab = json.loads((tiny_data / "tokenizer.json").read_text())["model"]["vocab"]
    assert cfg["d_model"] == 16 and cfg["n_layer"] == 2 and cfg["vocab_size"] == len(vocab)  # EOT is in the BPE vocab
    loaded = simba_convert.load(str(tmp_path / "ck"))
    x = torch.randint(0, cfg["vocab_size"], (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))


def test_training_init_follows_mamba_ssm():
    from simba_convert.model.config import MambaConfig
    from simba_convert.model.init import init_mamba_weights
    from simba_convert.model.mamba import MambaLM

    cfg = MambaConfig(d_model=64, n_layer=4, vocab_size=128)
    m = init_mamba_weights(MambaLM(cfg), seed=3)
    mix = m.backbone.layers[0].mixer
    dt = torch.nn.functional.softplus(mix.dt_proj.bias)
    assert dt.min() >= 1e-4 * 0.999 and dt.max() <= 0.1 * 1.001
    assert torch.equal(mix.A_log, torch.log(torch.arange(1, 17.0)).repeat(cfg.d_inner, 1))
    assert torch.equal(mix.D, torch.ones(cfg.d_inner))
    assert mix.out_proj.weight.abs().max() <= 1 / math.sqrt(cfg.d_inner) / math.sqrt(cfg.n_layer)
    assert abs(m.backbone.embedding.weight.std().item() - 0.02) < 0.002
    assert m.lm_head.weight is m.backbone.embedding.weight
    again = init_mamba_weights(MambaLM(cfg), seed=3)
    assert all(torch.equal(p, q) for p, q in zip(m.state_dict().values(), again.state_dict().values()))
    other = init_mamba_weights(MambaLM(cfg), seed=4)
    assert not torch.equal(other.backbone.embedding.weight, m.backbone.embedding.weight)


def test_family_pack_splits_and_reassembles(tmp_path, monkeypatch):
    import io
    import tarfile

    src = tmp_path / "mamba-tiny"
    src.mkdir()
    payload = bytes(range(256)) * 40
    (src / "model.safetensors").write_bytes(payload)
    monkeypatch.setattr(family, "PART_BYTES", 4096)
    parts = family.pack(src, tmp_path / "out")
    assert len(parts) > 2 and all(p.stat().st_size <= 4096 for p in parts)
    with tarfile.open(fileobj=io.BytesIO(b"".join(p.read_bytes() for p in sorted(parts)))) as tar:
        assert tar.extractfile("mamba-tiny/model.safetensors").read() == payload


def test_scaling_family_smoke_resumes_across_calls(tiny_data, tmp_path):
    from simba_convert.recipes import family_scaling

    base = ["--suite", "scaling", "--smoke", "--tokens", str(tiny_data / "tokens"), "--tokenizer",
            str(tiny_data / "tokenizer.json"), "--models", str(tmp_path / "m"), "--out", str(tmp_path / "s.json"),
            "--steps", "6"]
    assert family.main(base + ["--only", "mamba1-s,mamba2-s", "--stop-at", "4"]) == 0  # a call cut short
    first = json.loads((tmp_path / "s.json").read_text())
    assert first["calls"][0]["trained"] == [{"model": "mamba1-s", "from_step": 0, "to_step": 4}]
    assert (tmp_path / "m" / ".mamba1-s.resume.pt").is_file() and first["complete"] == []
    assert family.main(base + ["--only", "mamba1-s,mamba2-s"]) == 0  # the next call continues it
    second = json.loads((tmp_path / "s.json").read_text())
    assert second["calls"][1]["trained"] == [{"model": "mamba1-s", "from_step": 4, "to_step": 6},
                                             {"model": "mamba2-s", "from_step": 0, "to_step": 6}]
    assert second["complete"] == ["mamba1-s", "mamba2-s"] and not list((tmp_path / "m").glob(".*.resume.pt"))
    assert second["models"]["mamba2-s"]["architecture"] == "mamba2"
    assert second["models"]["mamba1-s"]["resumes"][0]["step"] == 4
    assert family.main(base + ["--only", "mamba1-s,mamba2-s"]) == 0  # nothing left: a call trains nothing
    assert json.loads((tmp_path / "s.json").read_text())["calls"][2]["trained"] == []
    args = family_scaling.parse_args(base[2:])
    assert args.names == list(family_scaling.SCALING)  # all six by default, in table order
