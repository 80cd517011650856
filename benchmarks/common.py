"""What every benchmark shares: how a call is timed, and what a results file records about the run.

The scripts in this folder (and in investigations/, which put this folder on sys.path) import it as `common`.

Timing, in milliseconds:
    elapsed_ms(fn, device)          one call: CUDA events around it on the GPU (the GPU's time), wall time on the CPU
    wall_ms(fn, device)             one call's wall time, the device synchronised before and after
    median_ms(fn, device, reps=, warmup=, wall=)   median of `reps` such calls after `warmup` untimed ones
    timeit(fn, device, warmup=, reps=)   (median GPU ms, median host ms to enqueue a call): when the two are close,
                                    launches, not kernels, set the pace; on the CPU both are the wall time
    bench_ms(fn, graph=False, ...)  triton.testing's do_bench, or do_bench_cudagraph (one CUDA-graph replay, as a
                                    graphed forward runs it; plain do_bench at small shapes times the host's launch
                                    path); median unless return_mode says otherwise
    copy_bandwidth(device, nbytes)  bytes per second of a device-to-device copy, bytes read and written counted:
                                    the floors' bandwidth, measured in the same run

The run, for the results file (every script merges `environment(device)` into what it writes):
    environment(device) -> {date, commit, command, device, python, torch, and the versions of the optional
                            packages that matter to a measurement (None when not installed)}
    commit()      SIMBA_BENCH_COMMIT when set (a tree copied to a GPU machine may carry stale git metadata), else
                  `git describe --always --dirty`
    loadavg()     the machine's 1/5/15-minute load (CPU timings move with the other jobs on a shared machine)
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# The packages whose version decides a kernel's or a baseline's speed; `versions()` reports these by default.
KERNEL_PACKAGES = ("triton", "mamba_ssm", "causal_conv1d", "transformers")
OTHER_PACKAGES = ("numpy", "onnxruntime", "tokenizers")


# --- the run ------------------------------------------------------------------------------------------------------
def commit() -> str | None:
    """SIMBA_BENCH_COMMIT if set (a copied tree's git metadata can be stale), else `git describe --always --dirty`."""
    if os.environ.get("SIMBA_BENCH_COMMIT"):
        return os.environ["SIMBA_BENCH_COMMIT"]
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True, check=True,
                              cwd=HERE).stdout.strip()
    except Exception:
        return None


def versions(*packages: str) -> dict:
    """{package: installed version or None}, from the installed distributions (nothing is imported);
    default: KERNEL_PACKAGES."""
    import importlib.metadata as md

    v = {}
    for pkg in packages or KERNEL_PACKAGES:
        try:
            v[pkg] = md.version(pkg.replace("_", "-"))
        except md.PackageNotFoundError:
            v[pkg] = None
    return v


def device_name(device) -> str:
    """The GPU's name, or the CPU's (processor, core count)."""
    import torch

    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def error_line(e: BaseException) -> str:
    """"TypeName: first line of the message", for a results row of a case that failed."""
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def command(argv: list[str] | None = None) -> str:
    """The command line that ran, the script named from the repository root (`benchmarks/x.py --flag ...`)."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]).resolve() if argv else None
    if script is not None and script.is_relative_to(ROOT):
        argv[0] = str(script.relative_to(ROOT))
    return " ".join(argv)


def loadavg() -> list[float] | None:
    """The machine's 1/5/15-minute load (other processes share the CPU: timings move with it)."""
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def environment(device, argv: list[str] | None = None) -> dict:
    """What a results file records about its run: date, commit, command, device and versions (flat keys)."""
    import torch

    return dict(date=time.strftime("%Y-%m-%d"), commit=commit(), command=command(argv), device=device_name(device),
                python=platform.python_version(), torch=torch.__version__,
                **versions(*KERNEL_PACKAGES, *OTHER_PACKAGES))


# --- timing -------------------------------------------------------------------------------------------------------
def sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def elapsed_ms(fn, device) -> float:
    """Milliseconds of one call: CUDA events around it on the GPU, wall time on the CPU."""
    import torch

    if torch.device(device).type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1e3


def wall_ms(fn, device) -> float:
    """Wall milliseconds of one call, the device synchronised before and after (host and GPU time together)."""
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return (time.perf_counter() - t) * 1e3


def median_ms(fn, device, reps: int = 5, warmup: int = 1, wall: bool = False) -> float:
    """Median of `reps` timed calls (`elapsed_ms`, or `wall_ms` with wall=True) after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    sync(device)
    one = wall_ms if wall else elapsed_ms
    return statistics.median(one(fn, device) for _ in range(reps))


def timeit(fn, device, warmup: int = 2, reps: int = 5) -> tuple[float, float]:
    """(median ms per call, median host ms to enqueue a call); on the CPU both are the wall time."""
    import torch

    for _ in range(warmup):
        fn()
    times, host = [], []
    for _ in range(reps):
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            t0 = time.perf_counter()
            fn()
            host.append((time.perf_counter() - t0) * 1e3)
            b.record()
            torch.cuda.synchronize()
            times.append(a.elapsed_time(b))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
            host.append(times[-1])
    return statistics.median(times), statistics.median(host)


def bench_ms(fn, graph: bool = False, return_mode: str = "median", **kw) -> float:
    """triton.testing.do_bench (graph=False) or do_bench_cudagraph (graph=True) of fn, in ms; `kw` go to it."""
    from triton.testing import do_bench, do_bench_cudagraph

    return float((do_bench_cudagraph if graph else do_bench)(fn, return_mode=return_mode, **kw))


def copy_bandwidth(device, nbytes: int = 2**31, ms=None, dtype=None) -> float:
    """Bytes per second of a device-to-device copy of `nbytes` (read + write counted); `ms(fn)` times the copy
    (default: `bench_ms`, the median of triton's do_bench)."""
    import torch

    dtype = dtype or torch.bfloat16
    src = torch.empty(nbytes // torch.empty((), dtype=dtype).element_size(), dtype=dtype, device=device)
    dst = torch.empty_like(src)
    return 2 * nbytes / ((ms or bench_ms)(lambda: dst.copy_(src)) * 1e-3)


# --- comparing outputs --------------------------------------------------------------------------------------------
def rel_rms(out, ref) -> float:
    """‖out − ref‖ / ‖ref‖ over all elements, in fp64."""
    import torch

    out, ref = out.double(), ref.double()
    return float(torch.linalg.vector_norm(out - ref) / torch.linalg.vector_norm(ref).clamp_min(1e-30))
