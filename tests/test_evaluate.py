"""Evaluation harness: perplexity of the protected suffix and lm-eval-style multiple choice.

Most tests use a bigram "model" whose next-token probabilities are an explicit table, and a character
tokenizer, so every expected number below is computed by hand from that table.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from simba_convert.errors import ConfigError, DataError
from simba_convert.evaluate import evaluate, multiple_choice_accuracy, perplexity
from simba_convert.evaluate.bigbench import find_tasks
from simba_convert.evaluate.multiple_choice import encode_pair, make_request, rolling_requests, score_requests
from tolerance import assert_matches

A, B, SP, EOT = 0, 1, 2, 3  # token ids of "a", "b", " ", end-of-text
# P[prev][next]: each row sums to 1.
TABLE = [
    [0.5, 0.25, 0.125, 0.125],  # after "a"
    [0.25, 0.25, 0.25, 0.25],  # after "b"
    [0.125, 0.5, 0.25, 0.125],  # after " "
    [0.5, 0.25, 0.125, 0.125],  # after end-of-text
]


class CharTokenizer:
    """Characters a, b and space; end-of-text is id 3."""

    eos_token_id = EOT

    def encode(self, text: str) -> list[int]:
        return ["ab ".index(c) for c in text]


class EncodingTokenizer(CharTokenizer):
    """The `tokenizers.Tokenizer` shape: encode(text).ids."""

    def encode(self, text: str):
        return types.SimpleNamespace(ids=super().encode(text))


class Bigram(nn.Module):
    """logits[b, t] = log P[input_ids[b, t]]: the next-token distribution depends on the current token only."""

    def __init__(self):
        super().__init__()
        self.logp = nn.Parameter(torch.tensor(TABLE).log(), requires_grad=False)

    def forward(self, input_ids):
        return self.logp[input_ids]


class PrunedBigram(Bigram):
    """Calls like a pruned model: exact only at each row's last `protect` real positions, NaN elsewhere."""

    is_pruned = True

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, input_ids, attention_mask=None, *, protect=None):
        self.calls.append((protect, tuple(input_ids.shape), attention_mask.clone()))
        logits = super().forward(input_ids).clone()
        for b, n in enumerate(attention_mask.sum(1).tolist()):
            logits[b, : n - protect] = float("nan")
            logits[b, n:] = float("nan")
        return logits


class PrunedBigramLast(PrunedBigram):
    """A pruned model that returns only the last `num_last` real positions, like PrunedMambaLM."""

    def forward(self, input_ids, attention_mask=None, *, protect=None, num_last=None):
        assert num_last == protect
        logits = super().forward(input_ids, attention_mask, protect=protect)
        idx = attention_mask.sum(1)[:, None] - num_last + torch.arange(num_last)
        return logits.gather(1, idx[..., None].expand(-1, -1, logits.shape[-1]))


def lp(*probs):
    return sum(math.log(p) for p in probs)


# --- perplexity --------------------------------------------------------------------------------------

def test_perplexity_hand_computed():
    # "abab bab" = a b a b _ b a b: two windows of L+1 = 4 tokens (L = 3), every position scored (P = 3).
    # Window "abab" reads a b a and predicts b|a .25, a|b .25, b|a .25;
    # window " bab" reads _ b a and predicts b|_ .5, a|b .25, b|a .25.
    r = perplexity(Bigram(), CharTokenizer(), "abab bab", seq_len=3, protect=3)
    probs = [0.25, 0.25, 0.25, 0.5, 0.25, 0.25]
    expected_nll = -lp(*probs) / 6
    assert r["windows"] == 2 and r["tokens_scored"] == 6
    assert r["nll"] == pytest.approx(expected_nll, abs=1e-6)
    assert r["perplexity"] == pytest.approx(math.exp(expected_nll), abs=1e-6)

    r2 = perplexity(Bigram(), CharTokenizer(), "abab bab", seq_len=3, protect=1)
    # last position only: window 1 predicts b|a (.25), window 2 predicts b|a (.25)
    assert r2["perplexity"] == pytest.approx(4.0, abs=1e-6) and r2["tokens_scored"] == 2


def test_windows_and_protect_arithmetic():
    text = "ab ba" * 4 + "a"  # 21 tokens: 4 windows of L+1 = 5, one token left over
    full = perplexity(Bigram(), CharTokenizer(), text, seq_len=4, protect=3)
    assert (full["windows"], full["tokens_scored"], full["windows_available"]) == (4, 12, 4)
    first = perplexity(Bigram(), CharTokenizer(), text, seq_len=4, protect=3, windows=1)
    assert (first["windows"], first["tokens_scored"]) == (1, 3)
    # window 1 "ab ba": positions 1..3 predict " "|b, b|" ", a|b
    assert first["nll"] == pytest.approx(-lp(0.25, 0.5, 0.25) / 3, abs=1e-6)
    capped = perplexity(Bigram(), CharTokenizer(), text, seq_len=4, protect=3, windows=99)
    assert capped["windows"] == 4 and capped["nll"] == full["nll"]


def test_perplexity_batched_equals_unbatched_and_deterministic():
    text = "aab ba bba  ab" * 5
    runs = [perplexity(Bigram(), EncodingTokenizer(), text, seq_len=6, protect=4, batch_size=bs) for bs in (1, 3, 64)]
    assert runs[0] == runs[1] == runs[2]
    assert perplexity(Bigram(), CharTokenizer(), text, seq_len=6, protect=4) == runs[0]


def test_perplexity_errors():
    with pytest.raises(DataError, match="too short"):
        perplexity(Bigram(), CharTokenizer(), "abab", seq_len=4, protect=2)
    with pytest.raises(ConfigError):
        perplexity(Bigram(), CharTokenizer(), "abab bab", seq_len=3, protect=4)
    with pytest.raises(DataError, match="not found"):
        evaluate(Bigram(), CharTokenizer(), text="/nonexistent/file.txt", seq_len=3, protect=1)
    with pytest.raises(ConfigError):
        evaluate(Bigram(), CharTokenizer(), seq_len=3, protect=1)


@pytest.mark.parametrize("cls", [PrunedBigram, PrunedBigramLast])
def test_pruned_model_calling_convention_perplexity(cls):
    model = cls()
    text = "ab ba" * 4 + "a"
    r = perplexity(model, CharTokenizer(), text, seq_len=4, protect=2, batch_size=3)
    dense = perplexity(Bigram(), CharTokenizer(), text, seq_len=4, protect=2)
    assert r["nll"] == dense["nll"]  # the NaN outside the protected suffix was never read
    assert [(p, s) for p, s, _ in model.calls] == [(2, (3, 4)), (2, (1, 4))]
    assert all(bool(m.all()) for _, _, m in model.calls)


# --- multiple choice ---------------------------------------------------------------------------------

def test_encode_pair_delimiter_whitespace_and_empty_context():
    enc = CharTokenizer().encode
    assert encode_pair(enc, "ab", "a", EOT) == ([A, B], [SP, A])  # one space inserted
    assert encode_pair(enc, "ab ", "a", EOT) == ([A, B], [SP, A])  # trailing space moves to the choice
    assert encode_pair(enc, "", "ba", EOT) == ([EOT], [B, A])  # empty context: end-of-text
    # left truncation keeps the continuation and the context's tail: (ctx + cont)[-(max_len+1):][:-1]
    req = make_request([A, B, A, B], [SP, A], max_len=3)
    assert req.input_ids == (A, B, SP) and req.targets == (SP, A)


def _write_task(path, examples, **fmt):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"name": path.parent.name, "examples": examples, **fmt}))


def test_multiple_choice_hand_computed_acc_vs_acc_norm(tmp_path):
    # Prompt "ab" (no prefixes). Choice "a" -> continuation " a": P[b][" "] P[" "][a] = .25 * .125
    # Choice "bab" -> " bab": P[b][" "] P[" "][b] P[b][a] P[a][b] = .25 * .5 * .25 * .25
    # raw: " a" wins (-3.47 > -4.85); per character: "a" -3.47 < "bab" -4.85/3 = -1.62, so acc_norm flips.
    fmt = dict(example_input_prefix="", example_output_prefix="", append_choices_to_input=False)
    _write_task(tmp_path / "flip" / "task.json", [{"input": "ab", "target_scores": {"a": 1, "bab": 0}}], **fmt)
    enc = CharTokenizer().encode
    reqs = [make_request(*encode_pair(enc, "ab", c, EOT), 2048) for c in ("a", "bab")]
    lls = score_requests(Bigram(), reqs)
    assert lls[0] == pytest.approx(lp(0.25, 0.125), abs=1e-6)
    assert lls[1] == pytest.approx(lp(0.25, 0.5, 0.25, 0.25), abs=1e-6)

    acc = multiple_choice_accuracy(Bigram(), CharTokenizer(), tmp_path)
    assert acc == {"flip": {"acc": 1.0, "acc_norm": 0.0, "n": 1}}


def test_multiple_choice_task_format_and_batching(tmp_path):
    examples = [
        {"input": "a", "target_scores": {"b": 0, "a": 1}},
        {"input": "ba", "target_scores": {"ab": 1, "bb": 0, "a a": 0}},
        {"input": "", "target_scores": {"b": 1, "aa": 0}},
    ]
    fmt = dict(task_prefix="b", example_input_prefix=" ", example_output_prefix=" ", append_choices_to_input=False)
    _write_task(tmp_path / "t" / "task.json", examples, **fmt)
    [task] = find_tasks(tmp_path)
    assert [e.context for e in task.examples] == ["b a ", "b ba ", "b  "]
    # example 1: context "b a" + " b" / " a": P[a][" "] then P[" "][b] = .5 vs P[" "][a] = .125 -> "b" wins
    # (target "a"): acc 0. Per character both have 1 char: acc_norm 0 too.
    results = [multiple_choice_accuracy(Bigram(), CharTokenizer(), tmp_path, batch_size=bs) for bs in (1, 2, 7)]
    assert results[0] == results[1] == results[2]
    assert results[0]["t"]["n"] == 3
    enc = CharTokenizer().encode
    ll_b = score_requests(Bigram(), [make_request(*encode_pair(enc, "b a ", "b", EOT), 64)])[0]
    assert ll_b == pytest.approx(lp(0.125, 0.5), abs=1e-6)


def test_bigbench_default_format_matches_real_task_layout(tmp_path):
    # BIG-bench defaults: "\nQ: " input, choices listed as the sorted choices permuted by RandomState(42),
    # "\nA: " output prefix (this is physical_intuition's first example).
    q = "Does the object have nonzero acceleration?"
    _write_task(tmp_path / "task.json", [{"input": q, "target_scores": {"Yes": 0, "No": 1}}])
    [task] = find_tasks(tmp_path / "task.json")
    assert task.examples[0].context == f"\nQ: {q}\n  choice: Yes\n  choice: No\nA: "
    assert task.examples[0].choices == ("Yes", "No") and task.examples[0].gold == {1}


def test_task_discovery_and_errors(tmp_path):
    ex = [{"input": "a", "target_scores": {"a": 1, "b": 0}}]
    _write_task(tmp_path / "parent" / "sub1" / "task.json", ex, append_choices_to_input=False)
    _write_task(tmp_path / "other" / "task.json", ex, append_choices_to_input=False)
    (tmp_path / "parent" / "task.json").write_text(json.dumps({"name": "parent", "subtasks": ["sub1"]}))
    assert [t.name for t in find_tasks(tmp_path)] == ["other", "parent/sub1"]

    with pytest.raises(DataError, match="no task.json"):
        find_tasks(tmp_path / "parent" / "task.json")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no task.json"):
        find_tasks(empty)
    with pytest.raises(DataError, match="not found"):
        find_tasks(tmp_path / "missing")
    _write_task(tmp_path / "bad" / "task.json", [{"input": "a", "target": "a"}])
    with pytest.raises(DataError, match="not multiple choice"):
        find_tasks(tmp_path / "bad")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "task.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        find_tasks(tmp_path / "broken")


@pytest.mark.parametrize("cls", [PrunedBigram, PrunedBigramLast])
def test_pruned_model_calling_convention_multiple_choice(tmp_path, cls):
    examples = [
        {"input": "ab", "target_scores": {"a": 1, "bab": 0, "b": 0}},
        {"input": "b", "target_scores": {"ba": 0, "a": 1}},
    ]
    _write_task(tmp_path / "t" / "task.json", examples, append_choices_to_input=False,
                example_input_prefix="", example_output_prefix="")
    model = cls()
    pruned = multiple_choice_accuracy(model, CharTokenizer(), tmp_path, batch_size=8)
    assert pruned == multiple_choice_accuracy(Bigram(), CharTokenizer(), tmp_path)
    # Requests as (input length T, continuation tokens m): "ab"+" a" (3, 2), "ab"+" bab" (5, 4),
    # "ab"+" b" (3, 2), "b"+" ba" (3, 3), "b"+" a" (2, 2). One batch per m, right-padded, protect = m.
    assert [(p, s) for p, s, _ in model.calls] == [(4, (1, 5)), (3, (1, 3)), (2, (3, 3))]
    assert model.calls[-1][2].tolist() == [[1, 1, 1], [1, 1, 1], [1, 1, 0]]


class MaskRecorder(Bigram):
    def forward(self, input_ids, attention_mask=None):
        self.masks = getattr(self, "masks", []) + [attention_mask.clone()]
        return super().forward(input_ids)


def test_dense_right_padding_and_mask_passed_only_when_accepted(tmp_path):
    examples = [{"input": "ab", "target_scores": {"a": 1, "bab": 0, "b": 0}}]
    _write_task(tmp_path / "t" / "task.json", examples, append_choices_to_input=False,
                example_input_prefix="", example_output_prefix="")
    rec = MaskRecorder()
    assert multiple_choice_accuracy(rec, CharTokenizer(), tmp_path) == multiple_choice_accuracy(
        Bigram(), CharTokenizer(), tmp_path)  # Bigram.forward takes no mask: it must not be passed one
    [mask] = rec.masks  # one right-padded batch: rows of lengths 5, 3, 3
    assert mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 0, 0]]


# "abab bab" after end-of-text: a|eot .5, b|a .25, a|b .25, b|a .25, " "|b .25, b|" " .5, a|b .25, b|a .25
ROLLING_LL = lp(0.5, 0.25, 0.25, 0.25, 0.25, 0.5, 0.25, 0.25)


@pytest.mark.parametrize("max_len", [1, 3, 8, 20])
def test_rolling_requests_score_every_token_once(max_len):
    ids = CharTokenizer().encode("abab bab")
    reqs = rolling_requests(ids, EOT, max_len)
    assert [t for r in reqs for t in r.targets] == ids
    assert all(len(r.targets) <= len(r.input_ids) <= max_len for r in reqs)
    assert sum(score_requests(Bigram(), reqs, batch_size=2)) == pytest.approx(ROLLING_LL, abs=1e-6)


def test_lm_eval_adapter():
    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance

    from simba_convert.evaluate.lm_eval_adapter import SimbaLM

    lm = SimbaLM(model=Bigram(), tokenizer=CharTokenizer(), batch_size=2)
    ask = lambda kind, args: Instance(request_type=kind, doc={}, arguments=args, idx=0)  # noqa: E731
    # lm-eval puts the delimiter in the continuation: ("ab", " a") is a b | _ a, as in the flip example.
    # Greedy means every target is the argmax: " "|b is a four-way tie that argmax resolves to "a", so no;
    # "a"|a (.5) is the unique argmax after "a", so yes.
    [(ll, greedy)] = lm.loglikelihood([ask("loglikelihood", ("ab", " a"))])
    assert ll == pytest.approx(lp(0.25, 0.125), abs=1e-6) and greedy is False
    [(ll, greedy)] = lm.loglikelihood([ask("loglikelihood", ("b a", "a"))])
    assert ll == pytest.approx(lp(0.5), abs=1e-6) and greedy is True
    [roll] = lm.loglikelihood_rolling([ask("loglikelihood_rolling", ("abab bab",))])
    assert roll == pytest.approx(ROLLING_LL, abs=1e-6)


# --- a real (tiny, random) MambaLM -------------------------------------------------------------------

def _tiny_mamba():
    from simba_convert.model.config import MambaConfig
    from simba_convert.model.mamba import MambaLM

    torch.manual_seed(0)
    return MambaLM(MambaConfig(d_model=16, n_layer=2, vocab_size=4, d_state=4)).eval()


def test_real_mamba_perplexity_finite_and_batch_invariant():
    model, text = _tiny_mamba(), "ab ba aab bba " * 6
    r1 = perplexity(model, CharTokenizer(), text, seq_len=12, protect=5, batch_size=1)
    r3 = perplexity(model, CharTokenizer(), text, seq_len=12, protect=5, batch_size=3)
    assert math.isfinite(r1["perplexity"]) and r1["windows"] == 6 and r1["tokens_scored"] == 30
    assert_matches(torch.tensor([r3["nll"]]), torch.tensor([r1["nll"]], dtype=torch.float64), torch.float32)


def test_real_mamba_multiple_choice_right_padding_is_harmless(tmp_path):
    examples = [{"input": "ab b", "target_scores": {"a": 1, "bab b": 0, "ba": 0}},
                {"input": "b", "target_scores": {"aab": 0, "b": 1}}]
    _write_task(tmp_path / "t" / "task.json", examples, example_input_prefix="", example_output_prefix=" ",
                choice_prefix=" ")
    model, enc = _tiny_mamba(), CharTokenizer().encode
    [task] = find_tasks(tmp_path)
    reqs = [make_request(*encode_pair(enc, e.context, c, EOT), 64) for e in task.examples for c in e.choices]
    one = torch.tensor(score_requests(model, reqs, batch_size=1), dtype=torch.float64)
    padded = torch.tensor(score_requests(model, reqs, batch_size=5))
    assert torch.isfinite(one).all()
    assert_matches(padded, one, torch.float32)


def test_real_pruned_model_batch_invariant_and_dense_at_budget_one(tmp_path):
    pruning = pytest.importorskip("simba_convert.pruning.model")
    from simba_convert.pruning.spec import PruningSpec

    examples = [{"input": "ab b a", "target_scores": {"a": 1, "bab b": 0, "ba": 0}},
                {"input": "bb a", "target_scores": {"aab": 0, "b": 1, "a a b": 0}}]
    _write_task(tmp_path / "t" / "task.json", examples, example_input_prefix="", example_output_prefix=" ",
                choice_prefix=" ")
    dense, enc = _tiny_mamba(), CharTokenizer().encode
    [task] = find_tasks(tmp_path)
    reqs = [make_request(*encode_pair(enc, e.context, c, EOT), 64) for e in task.examples for c in e.choices]
    sparse = pruning.PrunedMambaLM(dense, PruningSpec(keep_ratios=(1.0, 0.4), protect=1, floor=0.1))
    one = torch.tensor(score_requests(sparse, reqs, batch_size=1), dtype=torch.float64)
    padded = torch.tensor(score_requests(sparse, reqs, batch_size=6))
    assert_matches(padded, one, torch.float32)
    dense_ll = torch.tensor(score_requests(dense, reqs, batch_size=4), dtype=torch.float64)
    assert not torch.allclose(one, dense_ll, rtol=1e-4, atol=0)  # pruning did act on these inputs
    full = pruning.PrunedMambaLM(dense, PruningSpec(keep_ratios=(1.0, 1.0), protect=1))
    assert_matches(torch.tensor(score_requests(full, reqs, batch_size=4)), dense_ll, torch.float32)
    text = "ab ba aab bba " * 6
    r = perplexity(sparse, CharTokenizer(), text, seq_len=12, protect=3, batch_size=4)
    assert math.isfinite(r["perplexity"]) and r["tokens_scored"] == 18


@pytest.mark.gpu
def test_cuda_matches_cpu(tmp_path, monkeypatch):
    # TF32 convolutions/matmuls would put ~1e-3 errors into an fp32 comparison.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    examples = [{"input": "ab b", "target_scores": {"a": 1, "bab b": 0, "ba": 0}},
                {"input": "b", "target_scores": {"aab": 0, "b": 1}}]
    _write_task(tmp_path / "t" / "task.json", examples, example_input_prefix="", example_output_prefix=" ",
                choice_prefix=" ")
    text = tmp_path / "t.txt"
    text.write_text("ab ba aab bba " * 20)
    cpu = _tiny_mamba()
    gpu = _tiny_mamba().cuda()
    kw = dict(text=text, seq_len=24, protect=8, tasks=tmp_path, batch_size=3)
    r_cpu, r_gpu = evaluate(cpu, CharTokenizer(), **kw), evaluate(gpu, CharTokenizer(), **kw)
    assert r_gpu["tokens_scored"] == r_cpu["tokens_scored"] and r_gpu["accuracy"] == r_cpu["accuracy"]
    assert_matches(torch.tensor([r_gpu["nll"]]), torch.tensor([r_cpu["nll"]], dtype=torch.float64), torch.float32)


# --- CLI ---------------------------------------------------------------------------------------------

def test_eval_cli_json_and_errors(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from simba_convert.cli.eval_cmd import eval_command

    loader = types.ModuleType("simba_convert.io.load")
    loader.load_with_tokenizer = lambda src, device, dtype, tokenizer, **kw: (Bigram(), CharTokenizer(), None)
    monkeypatch.setitem(sys.modules, "simba_convert.io.load", loader)
    text = tmp_path / "t.txt"
    text.write_text("abab bab")
    _write_task(tmp_path / "tasks" / "flip" / "task.json", [{"input": "ab", "target_scores": {"a": 1, "bab": 0}}],
                example_input_prefix="", example_output_prefix="", append_choices_to_input=False)

    run = CliRunner().invoke(eval_command, ["--in", "x", "--text", str(text), "--seq-len", "3", "--protect", "3",
                                            "--tasks", str(tmp_path / "tasks"), "--json"])
    assert run.exit_code == 0, run.output
    out = json.loads(run.stdout)
    assert out["tokens_scored"] == 6 and out["perplexity"] == pytest.approx(math.exp(-lp(*[0.25] * 5, 0.5) / 6))
    assert out["accuracy"] == {"flip": {"acc": 1.0, "acc_norm": 0.0, "n": 1}}

    table = CliRunner().invoke(eval_command, ["--in", "x", "--text", str(text), "--seq-len", "3", "--protect", "1"])
    assert table.exit_code == 0 and "perplexity 4.0000" in table.stdout

    for args, msg in [
        (["--text", str(tmp_path / "nope.txt")], "text file not found"),
        (["--text", str(text), "--seq-len", "20"], "too short"),
        (["--tasks", str(tmp_path / "nope")], "not found"),
        ([], "nothing to evaluate"),
    ]:
        bad = CliRunner().invoke(eval_command, ["--in", "x", "--protect", "1", *args])
        assert bad.exit_code == 2 and msg in bad.output and bad.output.count("\n") == 1, bad.output


def test_eval_cli_json_is_strict_with_an_infinite_perplexity(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from simba_convert.cli.eval_cmd import eval_command

    class Certain(Bigram):  # after "a" always "a": the text's "ab" has probability 0
        def __init__(self):
            super().__init__()
            with torch.no_grad():
                self.logp[A] = torch.tensor([0.0, -math.inf, -math.inf, -math.inf])

    loader = types.ModuleType("simba_convert.io.load")
    loader.load_with_tokenizer = lambda src, device, dtype, tokenizer, **kw: (Certain(), CharTokenizer(), None)
    monkeypatch.setitem(sys.modules, "simba_convert.io.load", loader)
    text = tmp_path / "t.txt"
    text.write_text("abab bab")

    def not_json(name):
        raise AssertionError(f"eval --json printed {name}, which is not JSON")

    run = CliRunner().invoke(eval_command, ["--in", "x", "--text", str(text), "--seq-len", "3", "--protect", "3", "--json"])
    assert run.exit_code == 0, run.output
    out = json.loads(run.stdout, parse_constant=not_json)
    assert out["perplexity"] is None and out["nll"] is None and out["tokens_scored"] == 6


def test_eval_cli_end_to_end_with_the_real_loader(tmp_path):
    pytest.importorskip("simba_convert.io.load")
    from click.testing import CliRunner
    from safetensors.torch import save_file
    from tokenizers import Tokenizer, models

    from simba_convert.cli.eval_cmd import eval_command

    model, ckpt = _tiny_mamba(), tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps(model.config.to_mamba_ssm()))
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}  # tied
    save_file(state, str(ckpt / "model.safetensors"))
    tok = Tokenizer(models.BPE(vocab={"a": A, "b": B, " ": SP, "<|endoftext|>": EOT}, merges=[]))  # characters
    tok.add_special_tokens(["<|endoftext|>"])
    tok.save(str(ckpt / "tokenizer.json"))
    text = tmp_path / "t.txt"
    text.write_text("ab ba aab bba " * 6)
    _write_task(tmp_path / "tasks" / "t" / "task.json",
                [{"input": "ab b", "target_scores": {"a": 1, "bab b": 0}}, {"input": "", "target_scores": {"b": 1, "aa": 0}}],
                example_input_prefix="", example_output_prefix=" ", append_choices_to_input=False)

    run = CliRunner().invoke(eval_command, ["--in", str(ckpt), "--text", str(text), "--tasks", str(tmp_path / "tasks"),
                                            "--seq-len", "12", "--protect", "5", "--device", "cpu", "--json"])
    assert run.exit_code == 0, run.output
    out = json.loads(run.stdout)
    direct = evaluate(model, CharTokenizer(), text=text, seq_len=12, protect=5, tasks=tmp_path / "tasks")
    assert out["pruned"] is False and out["tokens_scored"] == direct["tokens_scored"] == 30
    assert out["nll"] == pytest.approx(direct["nll"], rel=1e-5)
    assert out["accuracy"] == direct["accuracy"]


def test_eval_cli_default_protect_is_the_pruned_models():
    from simba_convert.cli.eval_cmd import DEFAULT_PROTECT, model_protect

    assert model_protect(types.SimpleNamespace(spec=types.SimpleNamespace(protect=16))) == 16
    assert model_protect(Bigram()) == DEFAULT_PROTECT == 64


def test_eval_cli_does_not_import_torch():
    code = "import sys, simba_convert.cli.eval_cmd; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_evaluation_device_option_is_validated_like_loading():
    """An unknown device is a one-line ConfigError naming the choices, not a torch RuntimeError traceback."""
    from simba_convert.errors import ConfigError
    from simba_convert.evaluate._common import resolve_device

    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        resolve_device(None, "tpu")
