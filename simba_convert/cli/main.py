"""The `simba-convert` command: a thin click shell over simba_convert's API.

Nothing here imports torch at module level, so `--help` stays fast; each command imports what it needs.
"""

from __future__ import annotations

import functools
import sys

import click

from .._version import __version__
from .convert_cmd import convert_options, run_convert


# Exit codes (README.md, "Exit codes"): 0 success, 1 an unexpected error (a bug: traceback), 2 a problem with the
# input, options or output (one line), 3 out of memory, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
EXIT_OOM, EXIT_INTERRUPTED, EXIT_TERMINATED = 3, 130, 143
# API parameter names whose flag is not --<name with dashes>
_FLAG_ALIASES = {"onnx": "onnx_export"}


def flag_names(options) -> list[str]:
    """The current command's flags for API parameter names (those it has), e.g. ("budget",) -> ["--budget"]."""
    ctx = click.get_current_context(silent=True)
    params = {}
    while ctx is not None:
        for p in ctx.command.params:
            if isinstance(p, click.Option):
                params.setdefault(p.name, max(p.opts, key=len))
        ctx = ctx.parent
    return [params[n] for n in (_FLAG_ALIASES.get(o, o) for o in options) if n in params]


def error_line(e) -> str:
    """`error: <message> (<flags>)`: the one line a SimbaError becomes, naming this command's flags for it."""
    msg = " ".join(str(e).split()) or type(e).__name__
    flags = flag_names(getattr(e, "options", ()))
    return f"error: {msg}" + (f" ({', '.join(flags)})" if flags else "")


def _terminated(signum, frame):
    raise SystemExit(EXIT_TERMINATED)  # unwinds like an error: staging directories are removed


def report_errors(fn):
    """Turn SimbaError (and out-of-memory, interrupts, SIGTERM) into a one-line error and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import signal

        from ..errors import SimbaError

        previous = None
        try:
            previous = signal.signal(signal.SIGTERM, _terminated)
        except ValueError:  # not the main thread
            pass
        try:
            return fn(*args, **kwargs)
        except SimbaError as e:
            click.echo(error_line(e), err=True)
            sys.exit(e.exit_code)
        except MemoryError:
            click.echo("error: out of memory (try fewer samples, a shorter sequence length, dtype bfloat16 or "
                       "another device)", err=True)
            sys.exit(EXIT_OOM)
        except RuntimeError as e:
            if "out of memory" in str(e).lower():
                click.echo("error: out of device memory (try fewer samples, a shorter sequence length or dtype "
                           "bfloat16)", err=True)
                sys.exit(EXIT_OOM)
            raise
        except KeyboardInterrupt:
            click.echo("error: interrupted; nothing was written", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except SystemExit as e:
            if e.code == EXIT_TERMINATED:
                click.echo("error: terminated; nothing was written", err=True)
            raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    return wrapper


def set_verbosity(quiet: bool, verbose: bool) -> None:
    """--verbose: progress lines every 1 % and the library's log messages on stderr; --quiet: neither."""
    import logging

    from ..pipeline.progress import set_verbose

    if quiet and verbose:
        raise click.UsageError("--quiet and --verbose exclude each other")
    set_verbose(verbose)
    if verbose:
        log = logging.getLogger("simba_convert")
        if not log.handlers:
            h = logging.StreamHandler(sys.stderr)
            h.setFormatter(logging.Formatter("%(name)s: %(message)s"))
            log.addHandler(h)
        log.setLevel(logging.INFO)


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
    simba-convert lm-eval --model simba --model_args pretrained=OUT_DIR --device cuda --tasks hellaswag
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
    from .lm_eval_cmd import lm_eval_command

    main.add_command(eval_command, "eval")
    main.add_command(info_command, "info")
    main.add_command(lm_eval_command, "lm-eval")


_register()
