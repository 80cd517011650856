"""Errors the tool reports to users as one line (the CLI prints `error: <message>` and exits non-zero)."""


class SimbaError(Exception):
    """Base class: a problem the user can act on. The message is one line."""

    exit_code = 2


class CheckpointError(SimbaError):
    """A checkpoint is missing, corrupt, of the wrong architecture or has mis-shaped tensors."""


class ConfigError(SimbaError):
    """An option or configuration value is out of range or inconsistent."""


class DataError(SimbaError):
    """Calibration or evaluation data is missing, empty or too short."""


class BackendError(SimbaError):
    """A compute backend was asked for where it cannot run."""


class OutputExistsError(SimbaError):
    """The output path exists and --force was not given."""


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
