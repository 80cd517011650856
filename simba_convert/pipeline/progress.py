"""Progress bars for long stages (tqdm on stderr; silent when disabled or when stderr is not a terminal)."""

from __future__ import annotations

import sys


def bar(iterable=None, desc: str = "", enabled: bool = True, total: int | None = None):
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, disable=not enabled or not sys.stderr.isatty(),
                leave=False, dynamic_ncols=True)
