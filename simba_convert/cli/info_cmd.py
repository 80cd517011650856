"""`simba-convert info SRC`: what a checkpoint is, without loading its weights.

No torch at module level; torch is imported only to read the dtype of a .bin checkpoint.
"""

from __future__ import annotations

import json

import click


@click.command("info")
@click.argument("src", metavar="SRC")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@click.option("--offline", is_flag=True, help="Never contact the Hugging Face Hub.")
def info_command(src, as_json, offline):
    """Show the layout, architecture, parameter count, dtype, tokenizer and Simba section of SRC
    (a directory, a short name such as mamba-tiny, or a Hub id)."""
    from .main import report_errors  # here, not at import: main imports this module while registering it

    report_errors(run_info)(src, as_json, offline)


def checkpoint_summary(src, offline: bool = False) -> dict:
    """The facts `info` prints, as a JSON-ready dict."""
    return _summary(src, offline)[0]


def _summary(src, offline: bool) -> tuple[dict, str]:
    """(checkpoint_summary's dict, the one-line description of the architecture)."""
    from ..arch import family
    from ..io.layout import TOKENIZER_FILES, inspect_checkpoint, parameter_count
    from ..io.resolve import resolve

    r = resolve(src, offline=offline)
    info = inspect_checkpoint(r.path)
    dtypes = info.stored_dtypes()
    if dtypes is None:
        from ..io.checkpoint import stored_dtypes

        dtypes = stored_dtypes(info)
    cfg = info.config
    fam = family(cfg)
    return {
        "source": str(src),
        "path": str(r.path),
        "kind": r.kind,
        "repo_id": r.repo_id,
        "layout": info.layout,
        "weights": {"format": info.weight_format, "files": [f.name for f in info.weight_files]},
        "architecture": info.architecture,
        "config": fam.summary(cfg),
        "parameters": parameter_count(cfg),
        "dtypes": dtypes,
        "tokenizer": [f for f in TOKENIZER_FILES if (info.path / f).is_file()],
        "sparsified": info.sparsified,
        "simba": None if info.section is None else info.section.to_dict(),  # older layouts shown converted
    }, fam.describe(cfg)


def _text(s: dict, arch: str) -> str:
    c = s["config"]
    where = f"{s['path']}" + (f" (Hub {s['repo_id']})" if s["repo_id"] else f" ({s['kind']})")
    files = s["weights"]["files"]
    weights = files[0] if len(files) == 1 else f"{len(files)} {s['weights']['format']} shards"
    dtypes = ", ".join(f"{k} ({v} tensors)" for k, v in sorted(s["dtypes"].items(), key=lambda kv: -kv[1]))
    tok = ", ".join(s["tokenizer"]) if s["tokenizer"] else _no_tokenizer(c["padded_vocab_size"])
    lines = [
        f"checkpoint:   {where}",
        f"layout:       {s['layout']} ({weights})",
        f"architecture: {arch}",
        f"parameters:   {s['parameters'] / 1e6:.2f} M ({s['parameters']:,})",
        f"dtype:        {dtypes}",
        f"tokenizer:    {tok}",
        f"sparsified:   {'yes (Simba)' if s['sparsified'] else 'no (dense)'}",
    ]
    if s["sparsified"]:
        lines.append("simba:        " + json.dumps(s["simba"], sort_keys=True))
    return "\n".join(lines)


def _no_tokenizer(vocab_rows: int) -> str:
    from ..io.tokenizer import DEFAULT_TOKENIZER, neox_sized

    if neox_sized(vocab_rows):
        return f"none in the checkpoint ({DEFAULT_TOKENIZER} will be used)"
    return "none in the checkpoint (give one with --tokenizer)"


def run_info(src, as_json: bool, offline: bool) -> None:
    s, description = _summary(src, offline)
    from .eval_cmd import strict_dumps

    click.echo(strict_dumps(s, indent=2) if as_json else _text(s, description))
