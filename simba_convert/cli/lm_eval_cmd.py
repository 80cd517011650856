"""`simba-convert lm-eval ARGS`: lm-evaluation-harness's own command line, with the `simba` model type registered.

lm-eval 0.4.13's `lm_eval` command finds models only in its own table (README.md, "lm-evaluation-harness"), so this
command imports the adapter, which registers `simba`, and hands every argument to lm-eval unchanged. Nothing is
imported at module level: `simba-convert --help` stays fast and works without lm-eval.
"""

from __future__ import annotations

import click


@click.command("lm-eval", add_help_option=False,
               context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def lm_eval_command(args):
    """Run lm-evaluation-harness with the `simba` model type (needs the [lm-eval] extra); every argument goes to
    lm-eval, e.g. --model simba --model_args pretrained=OUT_DIR --device cuda --tasks hellaswag.
    """
    from .main import report_errors  # here, not at import: main imports this module while registering it

    report_errors(run_lm_eval)(list(args))


def run_lm_eval(argv: list[str]) -> None:
    """lm-eval's `cli_evaluate` on argv (it reads sys.argv, which is restored afterwards)."""
    import sys

    from ..errors import SimbaError, require

    require("lm_eval", "lm-eval")
    from lm_eval.__main__ import cli_evaluate

    from ..evaluate import lm_eval_adapter  # noqa: F401  (registers "simba")

    saved = sys.argv
    sys.argv = ["lm-eval", *argv]
    try:
        cli_evaluate()
    except SimbaError as e:
        e.options = ()  # it names the adapter's model_args, which no flag of simba-convert's sets
        raise
    finally:
        sys.argv = saved
