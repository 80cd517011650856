"""Package attributes imported on first use (so `import simba_convert` and the CLI's --help stay torch-free)."""

from __future__ import annotations

import importlib


def lazy_attributes(package: str, table: dict[str, tuple[str, str]], namespace: dict):
    """(__getattr__, __dir__) for a package whose names in `table` ({name: (module, attribute)}) load on access."""

    def __getattr__(name: str):
        if name in table:
            module, attr = table[name]
            value = getattr(importlib.import_module(module), attr)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(set(namespace) | set(table))

    return __getattr__, __dir__
