"""lm-evaluation-harness running the `simba` model type end to end, offline, on the bundled mamba-tiny (dense) and
a sparsified mamba-tiny converted here, over three tiny local tasks (YAML + JSON lines, lm-eval's `include_path`):
multiple choice (loglikelihood), perplexity (loglikelihood_rolling) and generation (generate_until).

Decisions checked: lm-eval's log-likelihoods and accuracies are those of our own `simba_convert.evaluate` scoring of
the same items; the pruned model's differ from the dense one's; a text inside one window scores as one plain
forward pass of the dense model (and the pruned model, protected in full there, matches it); generation is the
model's greedy `generate` cut at the first stop string, and stops decoding there; `simba-convert lm-eval` runs
lm-eval's own command line with the type registered and reports the same numbers; bad input is one line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

if os.environ.get("CI"):
    import lm_eval  # CI installs the [test] extra, which has lm-eval: a missing one is an error there, not a skip
else:
    lm_eval = pytest.importorskip("lm_eval")

from click.testing import CliRunner  # noqa: E402

from simba_convert.cli.main import main  # noqa: E402
from simba_convert.evaluate import multiple_choice_accuracy  # noqa: E402
from simba_convert.evaluate.bigbench import Example, Task  # noqa: E402
from simba_convert.evaluate.multiple_choice import encode_pair, make_request, score_requests  # noqa: E402
from tolerance import assert_matches  # noqa: E402

MC = [  # prompts of 25-40 tokens, so that the pruned model drops tokens before the scored continuation
    {"question": "The old lighthouse keeper climbed the narrow stairs every evening to light the great lamp, and the "
                 "ships far out at sea saw its beam. The lighthouse stood on a",
     "choices": ["rocky cliff above the sea", "green meadow", "busy city street"], "answer": 0},
    {"question": "She opened the heavy door and the cold wind of winter blew snow into the warm kitchen where the "
                 "bread was baking, so she quickly",
     "choices": ["closed it again", "ate the table", "sang to the moon"], "answer": 0},
    {"question": "The king called his three sons to the great hall of the castle and told them that whoever brought "
                 "him the finest gift would",
     "choices": ["rule the kingdom after him", "be a fish", "sleep"], "answer": 0},
    {"question": "After walking all day through the dark forest, the tired traveller at last saw a small light "
                 "shining from the window of a",
     "choices": ["little cottage", "shoe", "cloud of iron"], "answer": 0},
]
PPL = ["It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of foolishness.",
       "The wind went round the house all night, and in the morning the garden was white with snow."]
GEN = [{"prompt": "Once upon a time there was a", "target": " king"},
       {"prompt": "The little girl ran down the road and", "target": " cried"}]
UNTIL, MAX_GEN = [".", "\n"], 24
TASKS = ["simba_tiny_mc", "simba_tiny_ppl", "simba_tiny_gen"]


def _task_yaml(name: str, data: Path, cache: Path, body: str) -> str:
    return (f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {json.dumps(str(data))}\n"
            f"  cache_dir: {json.dumps(str(cache))}\ntest_split: test\n{body}")


def _write_tasks(d: Path, cache: Path) -> Path:
    d.mkdir()
    for name, rows in (("mc", MC), ("ppl", [{"text": t} for t in PPL]), ("gen", GEN)):
        (d / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    bodies = {
        "mc": 'output_type: multiple_choice\ndoc_to_text: "{{question}}"\ndoc_to_choice: "{{choices}}"\n'
              "doc_to_target: answer\nmetric_list:\n  - metric: acc\n  - metric: acc_norm\n",
        "ppl": 'output_type: loglikelihood_rolling\ndoc_to_text: ""\ndoc_to_target: "{{text}}"\n'
               "metric_list:\n  - metric: word_perplexity\n  - metric: byte_perplexity\n",
        "gen": f'output_type: generate_until\ndoc_to_text: "{{{{prompt}}}}"\ndoc_to_target: "{{{{target}}}}"\n'
               f"generation_kwargs:\n  until: {json.dumps(UNTIL)}\n  max_gen_toks: {MAX_GEN}\n  do_sample: false\n"
               "metric_list:\n  - metric: exact_match\n",
    }
    for name, body in bodies.items():
        (d / f"{name}.yaml").write_text(_task_yaml(f"simba_tiny_{name}", d / f"{name}.jsonl", cache, body),
                                        encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """The sparsified mamba-tiny (budget 0.5, a quick calibration), the task folder, and a cache for lm-eval runs."""
    from simba_convert.pipeline.convert import convert

    d = tmp_path_factory.mktemp("lm_eval")
    pruned = d / "pruned"
    convert("mamba-tiny", str(pruned), budget=0.5, samples=2, seq_len=64, protect=8, max_evals=2, batch_size=2,
            progress=False)
    return {"pruned": str(pruned), "tasks": _write_tasks(d / "tasks", d / "datasets"), "runs": {}, "dir": d}


def _models(work, src):
    import simba_convert

    return simba_convert.load_with_tokenizer(src, device="cpu", dtype="float32")[:2]


def _lm_eval_run(work, src):
    """simple_evaluate over the three tasks with the `simba` type, once per model (samples logged)."""
    if src not in work["runs"]:
        from lm_eval.tasks import TaskManager

        import simba_convert.evaluate.lm_eval_adapter  # noqa: F401  (registers "simba")

        tm = TaskManager(include_path=str(work["tasks"]), include_defaults=False)
        work["runs"][src] = lm_eval.simple_evaluate(model="simba", model_args={"pretrained": src, "dtype": "float32"},
                                                    device="cpu", batch_size=2, tasks=TASKS, task_manager=tm,
                                                    log_samples=True)
    return work["runs"][src]


def _mc_lls(res) -> list[list[float]]:
    docs = sorted(res["samples"]["simba_tiny_mc"], key=lambda s: s["doc_id"])
    return [[float(r[0][0]) for r in s["resps"]] for s in docs]


@pytest.mark.parametrize("which", ["dense", "pruned"])
def test_multiple_choice_is_our_scoring(work, which):
    src = "mamba-tiny" if which == "dense" else work["pruned"]
    res = _lm_eval_run(work, src)
    model, tok = _models(work, src)
    assert bool(getattr(model, "is_pruned", False)) == (which == "pruned")
    eot = tok.eos_token_id
    # our own scoring of the same items: lm-eval's " " target delimiter is our encode_pair's default
    reqs = [make_request(*encode_pair(tok.encode, ex["question"], c, eot), 2048) for ex in MC for c in ex["choices"]]
    ours = torch.tensor(score_requests(model, reqs, batch_size=1))
    theirs = torch.tensor([ll for lls in _mc_lls(res) for ll in lls], dtype=torch.float64)
    assert_matches(theirs, ours, torch.float32)
    task = Task("simba_tiny_mc", "", tuple(Example(ex["question"], tuple(ex["choices"]),
                                                    tuple(float(i == ex["answer"]) for i in range(len(ex["choices"]))))
                                            for ex in MC))
    acc = multiple_choice_accuracy(model, tok, [task])["simba_tiny_mc"]
    got = res["results"]["simba_tiny_mc"]
    assert (got["acc,none"], got["acc_norm,none"]) == (acc["acc"], acc["acc_norm"])


def test_pruned_scores_differ_from_dense(work):
    dense = torch.tensor(_mc_lls(_lm_eval_run(work, "mamba-tiny")))
    pruned = torch.tensor(_mc_lls(_lm_eval_run(work, work["pruned"])))
    assert dense.shape == pruned.shape == (len(MC), 3)
    assert (dense - pruned).abs().max() > 1e-2  # far above fp32 noise: tokens were dropped


def test_rolling_loglikelihood_is_one_dense_forward(work):
    """Each text fits one window: its log-likelihood is the dense model's plain forward pass after end-of-text,
    and the pruned model, whose window is protected in full, scores it the same."""
    dense, tok = _models(work, "mamba-tiny")
    want = []
    for text in PPL:
        ids = torch.tensor([[tok.eos_token_id] + tok.encode(text)])
        with torch.no_grad():
            logp = torch.log_softmax(dense(ids)[0, :-1].float(), -1)
        want.append(float(logp.gather(-1, ids[0, 1:, None]).double().sum()))
    for src in ("mamba-tiny", work["pruned"]):
        docs = sorted(_lm_eval_run(work, src)["samples"]["simba_tiny_ppl"], key=lambda s: s["doc_id"])
        got = torch.tensor([float(s["resps"][0][0]) for s in docs], dtype=torch.float64)
        assert_matches(got, torch.tensor(want), torch.float32)


@pytest.mark.parametrize("which", ["dense", "pruned"])
def test_generate_until_is_greedy_generate_cut_at_stop(work, which):
    src = "mamba-tiny" if which == "dense" else work["pruned"]
    model, tok = _models(work, src)
    docs = sorted(_lm_eval_run(work, src)["samples"]["simba_tiny_gen"], key=lambda s: s["doc_id"])
    for doc, s in zip(GEN, docs):
        ids = tok.encode(doc["prompt"])
        full = model.generate(torch.tensor([ids]), MAX_GEN, eos_token_id=tok.eos_token_id)[0, len(ids):].tolist()
        if tok.eos_token_id in full:
            full = full[: full.index(tok.eos_token_id)]
        text = tok.decode(full)
        want = text[: min((text.find(u) for u in UNTIL if u in text), default=len(text))]
        assert s["resps"][0][0] == want


def test_generation_stops_decoding_at_the_stop_string(work, monkeypatch):
    """`until` ends decoding (not only the returned text): fewer decoding steps than max_gen_toks."""
    from lm_eval.api.instance import Instance

    from simba_convert.evaluate.lm_eval_adapter import SimbaLM

    model, tok = _models(work, "mamba-tiny")
    lm = SimbaLM(model=model, tokenizer=tok)
    prompt = GEN[0]["prompt"]
    ids = tok.encode(prompt)
    first = tok.decode(model.generate(torch.tensor([ids]), 1)[0, len(ids):].tolist())  # the first new token's text
    steps = []
    step = model.step
    monkeypatch.setattr(model, "step", lambda *a, **k: steps.append(1) or step(*a, **k))
    req = Instance(request_type="generate_until", doc={}, idx=0,
                   arguments=(prompt, {"until": [first.strip() or first], "max_gen_toks": 50}))
    assert lm.generate_until([req]) == [first[: first.find(first.strip() or first)]]
    assert len(steps) == 0  # the stop string was the first token: no decoding step after the prefill


def test_generate_stop_callback_truncates():
    from simba_convert.model.config import MambaConfig
    from simba_convert.model.mamba import MambaLM

    model = MambaLM(MambaConfig(d_model=16, n_layer=2, vocab_size=32, d_state=4)).eval()
    ids = torch.randint(0, 32, (2, 5))
    full = model.generate(ids, 8)
    seen = []
    out = model.generate(ids, 8, stop=lambda new: seen.append(new.shape[1]) or torch.tensor([new.shape[1] >= 2,
                                                                                           new.shape[1] >= 3]))
    assert seen == [1, 2, 3] and torch.equal(out, full[:, :8])  # both rows done after 3 tokens
    stopped = model.generate(ids, 8, eos_token_id=0, stop=lambda new: torch.tensor([True, new.shape[1] >= 4]))
    assert torch.equal(stopped[1, :9], full[1, :9])
    assert (stopped[0, 6:] == 0).all() and stopped.shape == (2, 9)  # a finished row continues as eos


def _cli_env(work) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env.update(PYTHONPATH=str(ROOT), HF_HOME=str(work["dir"] / "hf"), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return env


def test_simba_convert_lm_eval_command(work):
    """The README's command: lm-eval's own command line, `simba` registered, the same numbers as simple_evaluate."""
    out = work["dir"] / "cli_out"
    cmd = [sys.executable, "-m", "simba_convert.cli", "lm-eval", "--model", "simba",
           "--model_args", f"pretrained={work['pruned']},dtype=float32", "--device", "cpu", "--batch_size", "2",
           "--include_path", str(work["tasks"]), "--tasks", ",".join(TASKS), "--output_path", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=_cli_env(work), timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "simba_tiny_mc" in r.stdout  # lm-eval's table
    (results,) = out.rglob("results_*.json")
    got = json.loads(results.read_text())["results"]
    want = _lm_eval_run(work, work["pruned"])["results"]
    for task, metric in (("simba_tiny_mc", "acc,none"), ("simba_tiny_mc", "acc_norm,none"),
                         ("simba_tiny_gen", "exact_match,none")):
        assert got[task][metric] == want[task][metric], (task, metric)  # decisions: equal, not close
    # the perplexity is fp32 sums in two processes (thread counts may differ): the project's fp32 contract
    ppl = "simba_tiny_ppl", "word_perplexity,none"
    assert_matches(torch.tensor([got[ppl[0]][ppl[1]]], dtype=torch.float64),
                   torch.tensor([want[ppl[0]][ppl[1]]], dtype=torch.float64), torch.float32)


def test_lm_eval_command_error_is_one_line(work, monkeypatch):
    """A SimbaError raised while lm-eval builds the model leaves `simba-convert lm-eval` as one line, exit 2."""
    import lm_eval.tasks

    class LocalTasksOnly(lm_eval.tasks.TaskManager):  # skips indexing lm-eval's own tasks (seconds), not needed here
        def __init__(self, *args, **kw):
            super().__init__(*args, **kw, include_defaults=False)

    monkeypatch.setattr(lm_eval.tasks, "TaskManager", LocalTasksOnly)
    missing = work["dir"] / "nope"
    r = CliRunner().invoke(main, ["lm-eval", "--model", "simba", "--model_args", f"pretrained={missing}", "--device",
                                  "cpu", "--include_path", str(work["tasks"]), "--tasks", "simba_tiny_mc"])
    assert r.exit_code == 2, (r.output, r.exception)
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and str(missing) in lines[0], r.stderr[-2000:]
    assert not lines[0].endswith("(--in)")  # simba-convert's own flags do not apply to lm-eval's model_args


@pytest.mark.parametrize("kw, error, message", [
    (dict(pretrained="mamba-tiny", temperature=2), "ConfigError", "unknown model_args for simba: temperature"),
    (dict(dtype="float32"), "ConfigError", "give pretrained=SRC"),
    (dict(pretrained="mamba-tiny", batch_size="many"), "ConfigError", "batch_size must be"),
    (dict(pretrained="mamba-tiny", device="cuda:7"), "BackendError", r"cuda:7 .*; the device is lm-eval's --device"),
])
def test_bad_model_args_are_simba_errors(kw, error, message):
    import simba_convert.errors as errors
    from simba_convert.evaluate.lm_eval_adapter import SimbaLM

    if "device" in kw and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    with pytest.raises(getattr(errors, error), match=message) as e:
        SimbaLM(**kw)
    assert "\n" not in str(e.value)


def test_generation_settings_it_cannot_honour_are_refused(work):
    from lm_eval.api.instance import Instance

    from simba_convert.errors import ConfigError
    from simba_convert.evaluate.lm_eval_adapter import SimbaLM

    model, tok = _models(work, "mamba-tiny")
    lm = SimbaLM(model=model, tokenizer=tok)
    ask = lambda kw: [Instance(request_type="generate_until", doc={}, idx=0, arguments=("Once", kw))]  # noqa: E731
    with pytest.raises(ConfigError, match="not supported by the simba model: num_beams"):
        lm.generate_until(ask({"until": ["."], "num_beams": 4}))
    assert len(lm.generate_until(ask({"until": ["."], "num_beams": 1, "max_gen_toks": 2}))) == 1  # neutral: fine


def test_lm_eval_command_without_lm_eval_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval now raises ImportError
    r = CliRunner().invoke(main, ["lm-eval", "--model", "simba"])
    assert r.exit_code == 2 and "pip install 'simba-convert[lm-eval]'" in r.stderr
