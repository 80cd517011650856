"""Progress on stderr: a tqdm bar on a terminal; off a terminal (CI logs, files) plain lines at a modest
rate: one per stage, and one each time a long stage passes another tenth of its work (every hundredth
when verbose)."""

from __future__ import annotations

import sys
import time

_VERBOSE = False


def set_verbose(on: bool) -> None:
    """More frequent progress lines off a terminal (the CLI's --verbose)."""
    global _VERBOSE
    _VERBOSE = bool(on)


def _tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def bar(iterable=None, desc: str = "", enabled: bool = True, total: int | None = None):
    """A progress bar over `iterable` (or updated by hand up to `total`): tqdm on a terminal, lines elsewhere,
    nothing when not `enabled`. Supports iteration, `with`, update(n), set_postfix_str(s) and close()."""
    from tqdm.auto import tqdm

    if enabled and not _tty():
        return LineProgress(iterable, desc, total, step=0.01 if _VERBOSE else 0.1)
    return tqdm(iterable, desc=desc, total=total, disable=not enabled, leave=False, dynamic_ncols=True)


def stage(name: str, index: int, count: int, enabled: bool = True) -> None:
    """The one line that announces a stage, e.g. `[3/5] calibrate`."""
    if enabled:
        print(f"[{index}/{count}] {name}", file=sys.stderr, flush=True)


class LineProgress:
    """tqdm's small interface as plain lines: `desc n/total (p%) elapsed [postfix]` at every `step` of the work."""

    def __init__(self, iterable=None, desc: str = "", total: int | None = None, step: float = 0.1):
        self.iterable = iterable
        self.desc = desc
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total = total
        self.step = step
        self.n = 0
        self.postfix = ""
        self._next = step
        self._t0 = time.perf_counter()
        self._closed = False

    def __iter__(self):
        for x in self.iterable:
            yield x
            self.update(1)
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s

    def update(self, n: int = 1) -> None:
        self.n += n
        if not self.total:
            return
        frac = self.n / self.total
        if frac + 1e-9 < self._next:
            return
        while self._next <= frac + 1e-9:
            self._next += self.step
        self._emit()

    def _emit(self) -> None:
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        of = f"/{self.total}" if self.total else ""
        tail = f" {self.postfix}" if self.postfix else ""
        print(f"  {self.desc} {self.n}{of}{pct} {time.perf_counter() - self._t0:.1f} s{tail}", file=sys.stderr,
              flush=True)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self.total and self.n:  # no total to measure tenths against: one line at the end
            self._emit()
