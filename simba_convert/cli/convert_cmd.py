"""Options of the main job (`simba-convert --in SRC --budget B ...`) and the call into the pipeline."""

from __future__ import annotations

import click

from ..names import CRITERIA, SCHEDULES


def convert_options(fn):
    opts = [
        click.option("--in", "src", metavar="SRC", help="Checkpoint: a directory, a hub id, or a short name (mamba-tiny, mamba-1.4b, ...)."),
        click.option("--budget", type=float, default=0.6, show_default=True, help="Sparse/dense FLOPs ratio, 0 < b <= 1."),
        click.option("--out", "out", type=click.Path(), default=None, help="Output directory [default: <name>-simba-<budget>]."),
        click.option("--schedule", type=click.Choice(SCHEDULES), default="calibrated", show_default=True),
        click.option("--criterion", type=click.Choice(CRITERIA), default="last", show_default=True),
        click.option("--protect", type=int, default=64, show_default=True, help="Protected suffix P (always kept), P >= 1."),
        click.option("--samples", type=int, default=None, help="Calibration sequences [default: 32 on GPU, 8 on CPU]."),
        click.option("--seq-len", type=int, default=512, show_default=True, help="Calibration sequence length L."),
        click.option("--calib", type=str, default=None, help="Calibration text: .txt, .jsonl, a directory or a dataset name [default: bundled]."),
        click.option("--prune-every", type=int, default=1, show_default=True,
                     help="Let the kept-token count change only every K layers: fewer layers score and select, "
                          "which is faster at small batch (1 = per layer, the paper's)."),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--device", type=str, default="auto", show_default=True, help="auto | cpu | cuda | cuda:N"),
        click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default="auto", show_default=True,
                     help="Compute dtype; also the dtype of fine-tuned weights [auto: bfloat16 on GPU, else float32; "
                          "fine-tuned weights as stored in the input]."),
        click.option("--tokenizer", type=str, default=None, help="Tokenizer file or directory, when the checkpoint has none."),
        click.option("--finetune-steps", type=int, default=0, show_default=True, help="Distillation steps with pruning active."),
        click.option("--onnx", "onnx_export", is_flag=True, help="Also export an ONNX prefill graph."),
        click.option("--report", type=click.Choice(["text", "json"]), default="text", show_default=True),
        click.option("--force", is_flag=True, help="Overwrite an existing output directory."),
        click.option("--offline", is_flag=True, help="Never contact the Hugging Face Hub."),
        click.option("--max-evals", type=int, default=None, help="Calibration candidates [default: 40 on GPU, 16 on CPU]."),
        *verbosity_options(),
    ]
    for o in reversed(opts):
        fn = o(fn)
    return fn


def verbosity_options():
    return [
        click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors (and the report when --report json)."),
        click.option("--verbose", "-v", is_flag=True, help="More progress lines, and log messages, on stderr."),
    ]


def run_convert(**opts):
    from .main import set_verbosity  # here, not at import: main imports this module

    quiet, verbose = opts.pop("quiet"), opts.pop("verbose")
    set_verbosity(quiet, verbose)
    convert_from_cli(quiet=quiet, progress=not quiet, **opts)


def convert_from_cli(*, quiet: bool = False, **opts) -> None:
    """The CLI's options -> a ConvertConfig -> the pipeline's run; the report printed as text or JSON."""
    import json

    from ..errors import ConfigError
    from ..pipeline import report as rep
    from ..pipeline.config import ConvertConfig
    from ..pipeline.convert import run

    fmt = opts.pop("report")
    opts["onnx"] = opts.pop("onnx_export")
    if opts.get("src") is None:
        raise ConfigError("no input model given", option="src")
    report = run(ConvertConfig(**opts))
    if fmt == "json":
        click.echo(json.dumps(rep.strict_json(report), indent=2))
    elif not quiet:
        click.echo(rep.summary_text(report), nl=False)
