"""Write an output directory all at once: into a hidden sibling, then renamed into place.

A reader (or a crash) never sees a half-written output: either the old directory, or nothing, or the
complete new one. Existing outputs are replaced only when the caller says `force`.

The staging sibling is named `.<out>.tmp-<pid>-<host>-<random>` (and an output being replaced is parked
in `.<out>.old-<pid>-<host>-<random>`), so that a later run for the same output can tell the leftovers
of a killed process (pid gone, same host) from those of one still running, and remove them.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Iterator

from ..errors import OutputError, OutputExistsError


def check_writable(out_dir: str | os.PathLike, force: bool) -> Path:
    """Fail early (before any expensive work) unless `out_dir` can be written: it must not exist (or,
    with `force`, be a directory), and a directory must be creatable where it goes. Leftover staging
    directories of killed runs for the same output are removed first."""
    out = Path(out_dir)
    remove_stale(out)
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise OutputExistsError(f"output path {out} exists and is not a directory; choose another output",
                                    option="out")
        if not force:
            raise OutputExistsError(f"output directory {out} already exists; overwriting it needs force",
                                    option="force")
    _probe(out)
    return out


def check_distinct(out_dir: str | os.PathLike, src_dir: str | os.PathLike) -> None:
    """Refuse an output that is the input, inside it, or holds it: writing it would delete or mix the input."""
    out, src = Path(out_dir).resolve(), Path(src_dir).resolve()
    if out == src or src in out.parents or out in src.parents:
        how = "is" if out == src else ("is inside" if src in out.parents else "contains")
        raise OutputError(f"the output {out_dir} {how} the input checkpoint {src}; choose another output",
                          option="out")


def _probe(out: Path) -> None:
    """Create and remove a directory where the staging directory will go (the nearest existing ancestor)."""
    parent = out.parent
    while not parent.exists() and not parent.is_symlink() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"cannot create the output {out}: {parent} is not a directory", option="out")
    try:
        probe = Path(tempfile.mkdtemp(prefix=f".{out.name}.probe-", dir=parent))
    except OSError as e:
        raise OutputError(f"cannot write the output {out}: creating a directory in {parent} fails ({_reason(e)})",
                          option="out") from None
    try:
        (probe / "probe").write_bytes(b"simba")
    except OSError as e:
        raise OutputError(f"cannot write the output {out}: writing in {parent} fails ({_reason(e)})",
                          option="out") from None
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def _reason(e: OSError) -> str:
    return e.strerror or errno.errorcode.get(e.errno or 0, "") or type(e).__name__


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _staging_prefix(out: Path, kind: str) -> str:
    return f".{out.name}.{kind}-{os.getpid()}-{_host_tag()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except OSError:
        return True
    return True


def remove_stale(out: Path) -> list[Path]:
    """Remove `out`'s staging (and parked old) directories whose process, on this host, has ended.

    A parked old output whose replacement never arrived (killed between the two renames) is put back
    as `out` instead of being deleted. Returns the paths removed or restored.
    """
    parent = out.parent
    if not parent.is_dir():
        return []
    pattern = re.compile(rf"\.{re.escape(out.name)}\.(tmp|old)-(\d+)-([0-9a-f]{{8}})-[^/]+")
    tag, done = _host_tag(), []
    try:
        entries = list(parent.iterdir())
    except OSError:
        return []
    for p in sorted(entries, key=lambda p: p.name):
        m = pattern.fullmatch(p.name)
        if not m or m.group(3) != tag or int(m.group(2)) == os.getpid() or _alive(int(m.group(2))):
            continue
        if m.group(1) == "old" and (p / "d").is_dir() and not (out.exists() or out.is_symlink()):
            with contextlib.suppress(OSError):
                os.replace(p / "d", out)
        shutil.rmtree(p, ignore_errors=True)
        done.append(p)
    return done


@contextlib.contextmanager
def atomic_directory(out_dir: str | os.PathLike, *, force: bool = False) -> Iterator[Path]:
    """Yield an empty temporary directory; on success it becomes `out_dir`, on any error it is removed.

    The temporary directory is a sibling of `out_dir`, so the final rename stays on one filesystem.
    With `force`, an existing `out_dir` is moved aside first and deleted only after the new one is in
    place (restored if that rename fails).
    """
    out = check_writable(out_dir, force)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=_staging_prefix(out, "tmp"), dir=out.parent))
    except OSError as e:
        raise OutputError(f"cannot create the output {out}: {_reason(e)}", option="out") from None
    _apply_umask(tmp)
    try:
        yield tmp
        _test_pause(tmp)
        if not out.exists():
            os.replace(tmp, out)
            return
        old = Path(tempfile.mkdtemp(prefix=_staging_prefix(out, "old"), dir=out.parent))
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


def _test_pause(tmp: Path) -> None:
    """Test hook: with SIMBA_TEST_PAUSE_IN_SAVE=<file>, once staging holds files, touch <file> and sleep
    (at most 60 s) before the rename, so that a test can kill the process mid-save."""
    ready = os.environ.get("SIMBA_TEST_PAUSE_IN_SAVE")
    if not ready or not any(tmp.iterdir()):
        return
    import time

    Path(ready).touch()
    time.sleep(60)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The permissions a plain open() gives a new file under the current umask (0644 under umask 022)."""
    return 0o666 & ~_umask()


def _apply_umask(path: Path) -> None:
    """mkdtemp makes 0700 directories; give the output the permissions a plain mkdir would."""
    os.chmod(path, 0o777 & ~_umask())
