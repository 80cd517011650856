"""The `simba-convert` command: a thin click shell over simba_convert's API.

Nothing here imports torch at module level, so `--help` stays fast; each command imports what it needs.
"""

from __future__ import annotations

import functools
import sys

import click

from .._version import __version__
from .convert_cmd import convert_options, run_convert


def report_errors(fn):
    """Turn SimbaError (and out-of-memory) into a one-line error and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from ..errors import SimbaError

        try:
            return fn(*args, **kwargs)
        except SimbaError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(e.exit_code)
        except MemoryError:
            click.echo("error: out of memory (try a smaller --samples/--seq-len, --dtype bfloat16 or another --device)", err=True)
            sys.exit(3)
        except RuntimeError as e:
            if "out of memory" in str(e).lower():
                click.echo("error: out of device memory (try a smaller --samples/--seq-len or --dtype bfloat16)", err=True)
                sys.exit(3)
            raise
        except KeyboardInterrupt:
            click.echo("error: interrupted; nothing was written", err=True)
            sys.exit(130)

    return wrapper


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@convert_options
@click.version_option(__version__, prog_name="simba-convert")
@click.pass_context
@report_errors
def main(ctx: click.Context, **opts):
    """Sparsify a dense Mamba checkpoint by token pruning (Simba), calibrated under a FLOPs budget.

    \b
    simba-convert --in mamba-tiny --budget 0.6          # bundled model and calibration data
    simba-convert --in state-spaces/mamba-1.4b --budget 0.6 --device cuda
    simba-convert eval --in OUT_DIR --text FILE --seq-len 512 --protect 64 --json
    simba-convert info OUT_DIR
    """
    if ctx.invoked_subcommand is not None:
        return
    if opts.get("src") is None:
        click.echo(ctx.get_help())
        ctx.exit(0 if len(sys.argv) <= 1 else 2)
    run_convert(**opts)


def _register():
    from .eval_cmd import eval_command
    from .info_cmd import info_command

    main.add_command(eval_command, "eval")
    main.add_command(info_command, "info")


_register()
