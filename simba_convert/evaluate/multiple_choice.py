"""Zero-shot multiple choice scored the way lm-eval scores it: log-likelihood of each choice given the prompt.

For a prompt (context) and a choice:
- the continuation is the choice, preceded by one space when the context does not already end in
  whitespace (lm-eval's target delimiter); trailing whitespace of the context is moved to the front of
  the continuation (lm-eval's `_encode_pair`), so " Paris" is one BPE token rather than " " + "Paris";
- ids: `ctx = encode(context)`, `cont = encode(context + continuation)[len(ctx):]`, so the model input
  always starts with exactly the context's own tokens; an empty context becomes the end-of-text token;
- the model reads `(ctx + cont)[:-1]`, left-truncated to `max_len` tokens; the logits at its last m
  positions predict the m continuation tokens, and ll = Σ log p(cont_j | ...) (fp32 log-softmax).
Accuracy picks argmax ll; acc_norm picks argmax ll / len(choice in characters) (lm-eval's acc_norm).
A pick is correct when its target score is the example's highest.

Batching: requests are sorted by input length (longest first) and right-padded. A causal dense
model's logits at real tokens never depend on right padding. A pruned model is exact only at its
protected suffix (SIMBA.md §4; protection counts each row's real tokens, padding is never kept), so
its batches hold requests of one continuation length m and are called with protect = m. The input
omits the last continuation token, so the m scored predictions sit at the last m real positions,
exactly the protected suffix, and the last position — always kept — is one of them (feeding the
whole context + continuation would need protect = m + 1, its last position predicting nothing
scored). A row's protect never depends on its batch mates, so results do not depend on batch_size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import DataError
from ._common import (
    check_positive,
    encoder,
    end_of_text_id,
    eval_mode,
    is_pruned,
    last_logits,
    progress_bar,
    resolve_device,
)
from .bigbench import Task, find_tasks


@dataclass(frozen=True)
class Request:
    """One (context, choice) pair as model input ids [T] and the m last positions to score."""

    input_ids: tuple[int, ...]
    targets: tuple[int, ...]  # the m continuation tokens predicted by the last m input positions


def encode_pair(encode, context: str, choice: str, eot: int | None, delimiter: str = " ") -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) for one choice, per the module docstring.

    `delimiter` goes between a context not ending in whitespace and the choice; lm-eval's own requests
    carry it inside the continuation already, so its adapter passes "".
    """
    continuation = choice if (not context or context[-1].isspace()) else delimiter + choice
    n_space = len(context) - len(context.rstrip())
    if n_space:
        context, continuation = context[:-n_space], context[-n_space:] + continuation
    if not context:
        if eot is None:
            raise DataError("an example has an empty prompt and the tokenizer has no end-of-text token")
        return [eot], encode(continuation)
    ctx = encode(context)
    cont = encode(context + continuation)[len(ctx):]
    if not cont:
        cont = encode(continuation)
    return ctx, cont


def make_request(ctx: list[int], cont: list[int], max_len: int) -> Request:
    """The request reading (ctx + cont)[:-1], left-truncated to max_len tokens, scoring cont's tokens."""
    if not cont:
        raise DataError("a choice encodes to no tokens")
    seq = (ctx + cont)[-(max_len + 1):]  # left-truncate; one extra token since the last is only a target
    m = min(len(cont), len(seq) - 1)
    return Request(tuple(seq[:-1]), tuple(seq[-m:]))


def rolling_requests(ids: list[int], eot: int, max_len: int) -> list[Request]:
    """Requests scoring every token of `ids` once, each given up to max_len - 1 tokens before it.

    The text is conditioned on the end-of-text token and cut into disjoint target spans of max_len
    tokens; each span's input is the max_len tokens ending just before its last target (the last span
    reaches back into earlier text for context), so every input is at most max_len long.
    """
    seq = [eot] + list(ids)
    out = []
    for start in range(0, len(ids), max_len):
        end = min(start + max_len, len(ids))
        out.append(Request(tuple(seq[max(0, end - max_len) : end]), tuple(ids[start:end])))
    return out


def _batches(requests: list[Request], batch_size: int, pruned: bool) -> list[list[int]]:
    """Index batches of similar input length, longest first; for a pruned model, one m per batch."""

    def key(i: int):
        r = requests[i]
        return ((-len(r.targets),) if pruned else ()) + (-len(r.input_ids), i)

    out: list[list[int]] = []
    for i in sorted(range(len(requests)), key=key):
        fits = out and len(out[-1]) < batch_size
        if fits and (not pruned or len(requests[out[-1][0]].targets) == len(requests[i].targets)):
            out[-1].append(i)
        else:
            out.append([i])
    return out


@torch.no_grad()
def score_requests(model, requests: list[Request], *, batch_size: int = 8, device=None, progress: bool | None = None,
                   desc: str = "choices", with_greedy: bool = False) -> list:
    """Sum of continuation log-probabilities for every request, in request order (fp64 sums).

    With `with_greedy`, each entry is (ll, greedy): greedy says every target is the argmax prediction.
    """
    check_positive("batch_size", batch_size)
    dev = resolve_device(model, device)
    pruned = is_pruned(model)
    lls: list = [0.0] * len(requests)
    with eval_mode(model), progress_bar(len(requests), desc, progress) as bar:
        for idx in _batches(requests, batch_size, pruned):
            rows = [requests[i] for i in idx]
            T = max(len(r.input_ids) for r in rows)
            ids = torch.zeros(len(rows), T, dtype=torch.long)  # right padding with token 0, masked out
            mask = torch.zeros(len(rows), T, dtype=torch.long)
            for b, r in enumerate(rows):
                ids[b, : len(r.input_ids)] = torch.tensor(r.input_ids)
                mask[b, : len(r.input_ids)] = 1
            n = max(len(r.targets) for r in rows)  # = every row's m for a pruned model
            logits = last_logits(model, ids.to(dev), mask.to(dev), n, n)  # [b, n, V]
            for b, (i, r) in enumerate(zip(idx, rows)):
                m = len(r.targets)
                logp = torch.log_softmax(logits[b, n - m :].float(), dim=-1)  # [m, V]
                tgt = torch.tensor(r.targets, device=logp.device).unsqueeze(-1)
                ll = float(logp.gather(-1, tgt).double().sum())
                lls[i] = (ll, bool((logp.argmax(-1) == tgt.squeeze(-1)).all())) if with_greedy else ll
            bar.update(len(rows))
    return lls


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=lambda i: (values[i], -i))  # ties: the first


def task_accuracy(model, tokenizer, task: Task, *, max_len: int = 2048, batch_size: int = 8, device=None,
                  progress: bool | None = None) -> dict:
    """{"acc", "acc_norm", "n"} of one task; see the module docstring for the scoring."""
    check_positive("max_len", max_len)
    encode, eot = encoder(tokenizer), end_of_text_id(tokenizer)
    requests, spans = [], []
    for ex in task.examples:
        start = len(requests)
        for choice in ex.choices:
            requests.append(make_request(*encode_pair(encode, ex.context, choice, eot), max_len))
        spans.append((start, len(requests)))
    lls = score_requests(model, requests, batch_size=batch_size, device=device, progress=progress, desc=task.name)

    correct = correct_norm = 0
    for ex, (a, b) in zip(task.examples, spans):
        ll = lls[a:b]
        correct += _argmax(ll) in ex.gold
        correct_norm += _argmax([v / len(c) for v, c in zip(ll, ex.choices)]) in ex.gold
    n = len(task.examples)
    return {"acc": correct / n, "acc_norm": correct_norm / n, "n": n}


def multiple_choice_accuracy(model, tokenizer, tasks: str | Path | list[Task], *, max_len: int = 2048,
                             batch_size: int = 8, device=None, progress: bool | None = None) -> dict[str, dict]:
    """Accuracy on every task: `tasks` is a task.json, a directory searched recursively, or Task objects.

    Returns {task name: {"acc", "acc_norm", "n"}}, names sorted.
    """
    if isinstance(tasks, (str, Path)):
        tasks = find_tasks(tasks)
    return {
        t.name: task_accuracy(model, tokenizer, t, max_len=max_len, batch_size=batch_size, device=device,
                              progress=progress)
        for t in tasks
    }
