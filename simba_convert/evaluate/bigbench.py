"""BIG-bench JSON multiple-choice tasks: finding `task.json` files and turning examples into prompts.

A task file holds `examples[i] = {"input": str, "target_scores": {choice: score}}` and optional format
fields. The zero-shot prompt follows BIG-bench's JSON-task format (as ported to lm-eval):

    context = task_prefix + example_input_prefix + input
              [+ choice_prefix + choice_prefix.join(choices)   if append_choices_to_input]
              + example_output_prefix

with BIG-bench's defaults `example_input_prefix="\\nQ: "`, `example_output_prefix="\\nA: "`,
`choice_prefix="\\n  choice: "`, `append_choices_to_input=True`, `task_prefix=""`. The listed choices
are the sorted choices permuted by `numpy.random.RandomState(42)` (fresh for every example), as
BIG-bench and lm-eval do, so no answer position is favoured. The continuation scored for each choice
is the choice text itself. A `task.json` without `examples` is a parent of subtasks and is skipped.
Pure Python: nothing here imports torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError, MissingExtraError

DEFAULTS = {
    "task_prefix": "",
    "example_input_prefix": "\nQ: ",
    "example_output_prefix": "\nA: ",
    "choice_prefix": "\n  choice: ",
    "append_choices_to_input": True,
}


@dataclass(frozen=True)
class Example:
    """One question: the prompt, its choices (file order) and each choice's target score."""

    context: str
    choices: tuple[str, ...]
    scores: tuple[float, ...]

    @property
    def gold(self) -> frozenset[int]:
        """Indices of the choices with the highest target score (a pick among them is correct)."""
        best = max(self.scores)
        return frozenset(i for i, s in enumerate(self.scores) if s == best)


@dataclass(frozen=True)
class Task:
    name: str
    path: str
    examples: tuple[Example, ...]


def _permuted(choices: list[str]) -> list[str]:
    try:
        import numpy as np
    except ImportError as e:  # numpy ships with every torch install in practice, but is not declared
        raise MissingExtraError("BIG-bench prompts with appended choices need numpy: pip install numpy") from e
    return [str(c) for c in np.random.RandomState(42).permutation(sorted(choices))]


def format_example(task: dict, example: dict, where: str) -> Example:
    """The zero-shot prompt and choices of one BIG-bench example (see the module docstring)."""
    fmt = {k: task.get(k, v) for k, v in DEFAULTS.items()}
    if not isinstance(example, dict) or not isinstance(example.get("input", ""), str):
        raise DataError(f"malformed task {where}: needs an object with a string 'input'")
    ts = example.get("target_scores")
    if not isinstance(ts, dict) or len(ts) < 2:
        raise DataError(f"malformed task {where}: not multiple choice (needs 'target_scores' with >= 2 choices)")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in ts.values()):
        raise DataError(f"malformed task {where}: target_scores values must be numbers")
    if not all(isinstance(c, str) and c for c in ts):
        raise DataError(f"malformed task {where}: choices must be non-empty strings")
    for k in ("task_prefix", "example_input_prefix", "example_output_prefix", "choice_prefix"):
        if not isinstance(fmt[k], str):
            raise DataError(f"malformed task {where}: {k} must be a string")

    context = fmt["task_prefix"] + fmt["example_input_prefix"] + example.get("input", "")
    if fmt["append_choices_to_input"]:
        cp = fmt["choice_prefix"]
        context += cp + cp.join(_permuted(list(ts)))
    context += fmt["example_output_prefix"]
    return Example(context, tuple(ts), tuple(float(v) for v in ts.values()))


def load_task(path: str | Path, name: str) -> Task | None:
    """A Task from one task.json, or None for a parent file without examples."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise DataError(f"task file not found: {path}") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"malformed task {path}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise DataError(f"malformed task {path}: the top level must be an object")
    if "examples" not in data:
        return None
    examples = data["examples"]
    if not isinstance(examples, list) or not examples:
        raise DataError(f"malformed task {path}: 'examples' must be a non-empty list")
    return Task(
        name=name,
        path=str(path),
        examples=tuple(format_example(data, ex, f"{path} (example {i})") for i, ex in enumerate(examples)),
    )


def find_tasks(root: str | Path) -> list[Task]:
    """Every task with examples in `root` (a task.json, or a directory searched recursively), by name.

    A task is named by its directory relative to `root` ("cause_and_effect/one_sentence"); a task.json
    directly in `root` (or `root` itself being a file) takes the name of its directory.
    """
    root = Path(root)
    if root.is_file():
        files = [root]
        base = root.parent.parent
    elif root.is_dir():
        files = sorted(root.rglob("task.json"))
        base = root
    else:
        raise DataError(f"tasks path not found: {root}")
    tasks = []
    for f in files:
        rel = f.parent.relative_to(base).as_posix()
        name = f.parent.name if rel == "." else rel
        task = load_task(f, name or f.parent.resolve().name)
        if task is not None:
            tasks.append(task)
    if not tasks:
        raise DataError(f"no task.json with examples under {root}")
    return sorted(tasks, key=lambda t: t.name)
