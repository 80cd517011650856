"""Errors the tool reports to users as one line (the CLI prints `error: <message>` and exits non-zero)."""


class SimbaError(Exception):
    """Base class: a problem the user can act on. The message is one line.

    Library code names parameters, never command-line flags; `options` lists the parameters (keyword
    names of the API, e.g. "budget", "seq_len") the problem is about, so that a front end can name its
    own flags for them (the CLI appends e.g. "(--budget)").
    """

    exit_code = 2

    def __init__(self, message: str = "", *, option: str | tuple[str, ...] | None = None):
        super().__init__(message)
        self.options: tuple[str, ...] = (option,) if isinstance(option, str) else tuple(option or ())


class CheckpointError(SimbaError):
    """A checkpoint is missing, corrupt, of the wrong architecture or has mis-shaped tensors."""


class ConfigError(SimbaError):
    """An option or configuration value is out of range or inconsistent."""


class ShapeError(SimbaError, ValueError):
    """A tensor op or model call got arguments of the wrong shape, dtype, device or value (also a ValueError)."""


class DataError(SimbaError):
    """Calibration or evaluation data is missing, empty or too short."""


class BackendError(SimbaError):
    """A compute backend was asked for where it cannot run."""


class OutputError(SimbaError):
    """The output location cannot be written (read-only, not a directory, no space, same as the input, ...)."""


class OutputExistsError(OutputError):
    """The output path exists and overwriting it (force) was not asked for."""


class MissingExtraError(SimbaError):
    """An optional dependency is needed; the message names the extra to install."""


def require(module: str, extra: str):
    """Import an optional module or raise a MissingExtraError naming the pip extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtraError(
            f"this feature needs the '{module}' package: pip install 'simba-convert[{extra}]'"
        ) from e
