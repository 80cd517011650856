"""Write an output directory all at once: into a hidden sibling, then renamed into place.

A reader (or a crash) never sees a half-written output: either the old directory, or nothing, or the
complete new one. Existing outputs are replaced only when the caller says `force`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from ..errors import OutputExistsError


def check_writable(out_dir: str | os.PathLike, force: bool) -> Path:
    """Fail early (before any expensive work) if `out_dir` exists and `force` is off."""
    out = Path(out_dir)
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise OutputExistsError(f"output path {out} exists and is not a directory; choose another --out")
        if not force:
            raise OutputExistsError(f"output directory {out} already exists; pass --force to overwrite it")
    return out


@contextlib.contextmanager
def atomic_directory(out_dir: str | os.PathLike, *, force: bool = False) -> Iterator[Path]:
    """Yield an empty temporary directory; on success it becomes `out_dir`, on any error it is removed.

    The temporary directory is a sibling of `out_dir`, so the final rename stays on one filesystem.
    With `force`, an existing `out_dir` is moved aside first and deleted only after the new one is in
    place (restored if that rename fails).
    """
    out = check_writable(out_dir, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    _apply_umask(tmp)
    try:
        yield tmp
        if not out.exists():
            os.replace(tmp, out)
            return
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / "d")
        try:
            os.replace(tmp, out)
        except BaseException:
            os.replace(old / "d", out)  # if this fails too, the old output stays in `old`, not deleted
            shutil.rmtree(old, ignore_errors=True)
            raise
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _apply_umask(path: Path) -> None:
    """mkdtemp makes 0700 directories; give the output the permissions a plain mkdir would."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o777 & ~mask)
