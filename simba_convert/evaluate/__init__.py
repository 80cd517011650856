"""Evaluation: perplexity of the protected suffix and zero-shot multiple-choice accuracy.

`evaluate` runs both for the CLI (`simba-convert eval`); the pieces are usable alone:
`perplexity(model, tokenizer, text, seq_len=L, protect=P)` and
`multiple_choice_accuracy(model, tokenizer, tasks_dir)`. Dense and pruned models are both accepted
(see `_common.last_logits` for the two calling conventions).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from ._common import read_text
from .bigbench import find_tasks
from .multiple_choice import multiple_choice_accuracy
from .perplexity import perplexity

__all__ = ["evaluate", "multiple_choice_accuracy", "perplexity"]


def evaluate(
    model,
    tokenizer,
    *,
    text=None,
    seq_len: int,
    protect: int,
    windows: int | None = None,
    tasks=None,
    batch_size: int = 8,
    device=None,
    progress: bool | None = None,
) -> dict:
    """Perplexity on the text file `text` and/or accuracy on the BIG-bench tasks under `tasks`.

    Perplexity windows have seq_len input tokens with the last `protect` predictions scored; multiple-choice
    prompts are left-truncated to seq_len tokens. Returns {"perplexity", "nll", "tokens_scored",
    "windows", "seq_len", "protect", "accuracy": {task: {"acc", "acc_norm", "n"}}}; the perplexity
    fields are None without `text`, and "accuracy" is {} without `tasks`.
    """
    if text is None and tasks is None:
        raise ConfigError("nothing to evaluate: give a text file, a tasks directory, or both")
    out = {"perplexity": None, "nll": None, "tokens_scored": 0, "windows": 0, "seq_len": seq_len,
           "protect": protect, "accuracy": {}}
    # Read and validate every input before the first forward pass, so bad data fails in a second.
    content = read_text(text) if text is not None else None
    task_list = find_tasks(tasks) if isinstance(tasks, (str, Path)) else tasks
    if content is not None:
        ppl = perplexity(model, tokenizer, content, seq_len=seq_len, protect=protect, windows=windows,
                         batch_size=batch_size, device=device, progress=progress)
        out.update(ppl)
    if task_list is not None:
        out["accuracy"] = multiple_choice_accuracy(model, tokenizer, task_list, max_len=seq_len,
                                                   batch_size=batch_size, device=device, progress=progress)
    return out
