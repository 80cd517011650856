"""`simba-convert eval`: perplexity of the protected suffix and zero-shot multiple-choice accuracy.

No torch at module level: the model, the loader and the evaluation code are imported when the command runs.
"""

from __future__ import annotations

import json

import click

DEFAULT_PROTECT = 64


@click.command("eval")
@click.option("--in", "src", required=True, metavar="SRC", help="Model: a converted Simba directory, a dense checkpoint, a hub id or a short name.")
@click.option("--text", "text", type=click.Path(dir_okay=False), default=None, help="UTF-8 text file for perplexity.")
@click.option("--seq-len", type=click.IntRange(min=1), default=512, show_default=True, help="Window length L (input tokens); also the prompt limit for --tasks.")
@click.option("--protect", type=click.IntRange(min=1), default=None, help=f"Scored (protected) suffix P of each window [default: the pruned model's own P, else {DEFAULT_PROTECT}].")
@click.option("--windows", type=click.IntRange(min=1), default=None, help="Use the first N windows of the text [default: all].")
@click.option("--tasks", "tasks", type=click.Path(), default=None, help="A BIG-bench task.json, or a directory searched for them.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--device", type=str, default="auto", show_default=True, help="auto | cpu | cuda | cuda:N")
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default="auto", show_default=True)
@click.option("--tokenizer", type=str, default=None, help="Tokenizer file or directory, when the checkpoint has none.")
@click.option("--offline", is_flag=True, help="Never contact the Hugging Face Hub.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table (non-finite numbers as null).")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors and the result.")
@click.option("--verbose", "-v", is_flag=True, help="More progress lines, and log messages, on stderr.")
def eval_command(**opts):
    """Evaluate a dense or Simba model: perplexity of the last P positions of L-token windows of --text,
    and/or zero-shot accuracy (acc, acc_norm) on BIG-bench multiple-choice tasks under --tasks.

    \b
    simba-convert eval --in OUT_DIR --text held_out.txt --seq-len 512 --protect 64 --json
    simba-convert eval --in mamba-130m --tasks bigbench/ --seq-len 1024
    """
    from .main import report_errors, set_verbosity  # here, not at import: main imports this module while registering it

    quiet, verbose = opts.pop("quiet"), opts.pop("verbose")
    set_verbosity(quiet, verbose)
    report_errors(run_eval)(**opts, progress=not quiet)


def run_eval(*, src, text, seq_len, protect, windows, tasks, batch_size, device, dtype, tokenizer, offline, as_json,
             progress=None):
    from pathlib import Path

    from ..errors import ConfigError, DataError
    from ..evaluate import evaluate
    from ..evaluate.bigbench import find_tasks
    from ..io.load import load_with_tokenizer
    from ..pipeline.config import check_device_name

    # Bad options and data fail before the (slow) model load.
    if text is None and tasks is None:
        raise ConfigError("nothing to evaluate: give a text file, a tasks directory, or both", option=("text", "tasks"))
    if protect is not None and protect > seq_len:
        raise ConfigError(f"protect ({protect}) must not exceed seq_len ({seq_len})", option=("protect", "seq_len"))
    check_device_name(device)
    if text is not None and not Path(text).is_file():
        raise DataError(f"text file not found: {text}", option="text")
    task_list = find_tasks(tasks) if tasks is not None else None

    model, tok, _info = load_with_tokenizer(src, device=device, dtype=dtype, tokenizer=tokenizer, offline=offline)
    if protect is None:
        protect = min(seq_len, model_protect(model))
    result = evaluate(model, tok, text=text, seq_len=seq_len, protect=protect, windows=windows, tasks=task_list,
                      batch_size=batch_size, device=None, progress=progress)
    result = {"model": src, "pruned": bool(getattr(model, "is_pruned", False)), **result}
    if windows is not None and text is not None and result["windows"] < windows:
        click.echo(f"note: the text holds only {result['windows']} windows of {seq_len + 1} tokens "
                   f"(asked for {windows})", err=True)
    click.echo(strict_dumps(result) if as_json else format_table(result))


def strict_dumps(obj, **kw) -> str:
    """Standard JSON: non-finite numbers (an infinite perplexity, a NaN) become null instead of Infinity/NaN."""
    from ..pipeline.report import strict_json

    return json.dumps(strict_json(obj), allow_nan=False, **kw)


def model_protect(model) -> int:
    """The protected suffix a pruned model was converted with, else DEFAULT_PROTECT."""
    p = getattr(getattr(model, "spec", None), "protect", None)
    return p if isinstance(p, int) and p >= 1 else DEFAULT_PROTECT


def format_table(r: dict) -> str:
    """A human-readable report of an `evaluate` result."""
    lines = [f"model: {r['model']}{' (pruned)' if r.get('pruned') else ''}"]
    if r.get("perplexity") is not None:
        lines.append(
            f"perplexity {r['perplexity']:.4f}  (mean NLL {r['nll']:.4f} nats over {r['tokens_scored']} tokens: "
            f"{r['windows']} windows of {r['seq_len']}, last {r['protect']} scored)"
        )
    acc = r.get("accuracy") or {}
    if acc:
        w = max(len("task"), *(len(k) for k in acc))
        lines.append(f"{'task':<{w}}  {'n':>6}  {'acc':>7}  {'acc_norm':>8}")
        for name, a in acc.items():
            lines.append(f"{name:<{w}}  {a['n']:>6}  {a['acc']:>7.4f}  {a['acc_norm']:>8.4f}")
        if len(acc) > 1:
            mean = lambda k: sum(a[k] for a in acc.values()) / len(acc)  # noqa: E731 - macro average
            lines.append(f"{'mean':<{w}}  {'':>6}  {mean('acc'):>7.4f}  {mean('acc_norm'):>8.4f}")
    return "\n".join(lines)
