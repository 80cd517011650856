"""The ONNX Runtime library's CUDA kernels against our Triton kernels, one Mamba-1 layer (issue 18, item 2).

Calls the library's exported launchers (kernels/cuda_kernels.h, aot_ops.h) through ctypes on torch tensors and
torch's stream, so it needs neither onnxruntime-gpu nor an ONNX file: the hand-written selective scan, fused
`SelectiveScanScore` score (raw dt, softplus inside, protected suffix) and causal conv (+SiLU), and, when the
library was built with `--aot`, the scan compiled ahead of time from our Triton source; each against the op the
PyTorch model runs (`backend="triton"`, JIT-compiled) on the same inputs. Parity as relative RMS against that op,
times as CUDA-event medians. `--aot-lib LABEL=PATH` adds the AOT scan of another build (e.g. another triton).

    PYTHONPATH=.:benchmarks python3 benchmarks/investigations/cuda_lib_kernels.py --lib kernels/build/libsimba_ort_ops.so \\
        --out results.json
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
from pathlib import Path

import torch
from common import command, environment, median_ms, rel_rms

from simba_convert.ops.conv1d import causal_conv1d
from simba_convert.ops.scan import selective_scan
from simba_convert.ops.score import impact_score

SHAPES = {"130m": 1536, "1.4b": 4096}  # d_inner of the model shape; N = 16, conv width 4
PROTECT = 64


def time_ms(fn, reps: int) -> float:
    return median_ms(fn, "cuda", reps=reps, warmup=1)


def load(path: Path):
    lib = ctypes.CDLL(str(path))
    p, i64, c = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.simba_cuda_selective_scan.argtypes = [c] + [p] * 10 + [i64, i64, i64, c, p]
    lib.simba_cuda_impact_score_raw.argtypes = [c, p, p, c, p, p, p, p, p, i64, i64, i64, c, c, c, i64, p]
    lib.simba_cuda_causal_conv1d.argtypes = [c, p, p, p, p, i64, i64, i64, c, c, p]
    lib.simba_cuda_error_string.restype = ctypes.c_char_p
    if hasattr(lib, "simba_aot_selective_scan"):
        lib.simba_aot_selective_scan.argtypes = [c] + [p] * 10 + [i64, i64, i64, c, p, ctypes.c_size_t, p]
        lib.simba_aot_selective_scan_workspace.argtypes = [c, i64, i64, i64, c]
        lib.simba_aot_selective_scan_workspace.restype = ctypes.c_size_t
        lib.simba_aot_last_error.restype = ctypes.c_char_p
        lib.simba_aot_triton_version_string.restype = ctypes.c_char_p
        lib.simba_aot_impact_score_last.argtypes = [c] + [p] * 7 + [i64, i64, i64, c, i64, p, ctypes.c_size_t, p]
        if hasattr(lib, "simba_aot_causal_conv1d"):
            lib.simba_aot_causal_conv1d.argtypes = [c] + [p] * 4 + [i64, i64, i64, c, c, p]
    return lib


def aot_scan(lib, half, tensors, B, L, D, N, stream):
    """A no-argument launch of the library's AOT scan on `tensors` (u, dt, A, B, C, D, z, bias, y, last)."""
    ws = torch.empty(lib.simba_aot_selective_scan_workspace(half, B, L, D, N), dtype=torch.uint8, device="cuda")

    def run():
        code = lib.simba_aot_selective_scan(half, *(t.data_ptr() for t in tensors), B, L, D, N, ws.data_ptr(),
                                            ws.numel(), stream)
        if code != 0:
            raise RuntimeError(f"AOT scan: code {code}: {lib.simba_aot_last_error().decode()}")
    return run


def aot_score(lib, half, tensors, B, L, D, N, stream):
    """A no-argument launch of the library's AOT `last` score (u, raw dt, bias, A, B, C, score), its own workspace."""
    def run():
        code = lib.simba_aot_impact_score_last(half, *(t.data_ptr() for t in tensors), B, L, D, N, PROTECT, None, 0,
                                               stream)
        if code != 0:
            raise RuntimeError(f"AOT score: code {code}: {lib.simba_aot_last_error().decode()}")
    return run


def case(lib, aot_libs: dict, shape: str, B: int, L: int, dtype: torch.dtype, reps: int) -> dict:
    D, N, K = SHAPES[shape], 16, 4
    g = torch.Generator(device="cuda").manual_seed(0)
    r = lambda *s: torch.randn(*s, device="cuda", generator=g)  # noqa: E731
    x, dt, z = r(B, L, D).to(dtype), (r(B, L, D) - 2).to(dtype), r(B, L, D).to(dtype)
    Bm, Cm = r(B, L, N).to(dtype), r(B, L, N).to(dtype)
    A, Dk, bias = -torch.rand(D, N, device="cuda", generator=g) * 4, r(D), r(D) * 0.5
    w, wb = r(D, K) * 0.5, r(D) * 0.1
    half, stream = int(dtype == torch.float16), torch.cuda.current_stream().cuda_stream
    y, last = torch.full_like(x, float("nan")), torch.full((B, D, N), float("nan"), device="cuda")
    score = torch.full((B, L), float("nan"), device="cuda")
    u = torch.full_like(x, float("nan"))

    def ok(code):
        if code != 0:
            raise RuntimeError(lib.simba_cuda_error_string(code).decode())

    def lib_scan():
        ok(lib.simba_cuda_selective_scan(half, *(t.data_ptr() for t in (x, dt, A, Bm, Cm, Dk, z, bias, y, last)),
                                         B, L, D, N, stream))

    def lib_score():
        ok(lib.simba_cuda_impact_score_raw(half, x.data_ptr(), dt.data_ptr(), 1, bias.data_ptr(), A.data_ptr(),
                                           Bm.data_ptr(), Cm.data_ptr(), score.data_ptr(), B, L, D, N, 0, 0,
                                           PROTECT, stream))

    def lib_conv():
        ok(lib.simba_cuda_causal_conv1d(half, x.data_ptr(), w.data_ptr(), wb.data_ptr(), u.data_ptr(), B, L, D, K, 1,
                                        stream))

    ours_scan = lambda: selective_scan(x, dt, A, Bm, Cm, Dk, z, bias, True, return_last_state=True,  # noqa: E731
                                       backend="triton")
    ours_score = lambda: impact_score(x, dt, A, Bm, Cm, criterion="last", delta_bias=bias,  # noqa: E731
                                      delta_softplus=True, backend="triton")
    ours_conv = lambda: causal_conv1d(x, w, wb, activation="silu", backend="triton")  # noqa: E731
    lib_scan(), lib_score(), lib_conv()
    torch.cuda.synchronize()
    y_ref, last_ref = ours_scan()
    s_ref = ours_score()[:, : L - PROTECT]
    row = {"shape": shape, "B": B, "L": L, "D": D, "N": N, "dtype": str(dtype).removeprefix("torch."),
           "scan_rel_rms": rel_rms(y.float(), y_ref.float()), "state_rel_rms": rel_rms(last, last_ref.float()),
           "score_rel_rms": rel_rms(score[:, : L - PROTECT], s_ref),
           "score_protected_inf": bool(torch.isinf(score[:, L - PROTECT:]).all()),
           "conv_rel_rms": rel_rms(u.float(), ours_conv().float())}
    for name, lib_fn, ours in (("scan", lib_scan, ours_scan), ("score", lib_score, ours_score),
                               ("conv", lib_conv, ours_conv)):
        row[f"{name}_lib_ms"] = time_ms(lib_fn, reps)
        row[f"{name}_triton_ms"] = time_ms(ours, reps)
        row[f"{name}_lib_over_triton"] = row[f"{name}_lib_ms"] / row[f"{name}_triton_ms"]
    for label, alib in aot_libs.items():
        y_a, last_a = torch.full_like(x, float("nan")), torch.full((B, D, N), float("nan"), device="cuda")
        run = aot_scan(alib, half, (x, dt, A, Bm, Cm, Dk, z, bias, y_a, last_a), B, L, D, N, stream)
        run()
        torch.cuda.synchronize()
        row[f"scan_aot_{label}_rel_rms"] = max(rel_rms(y_a.float(), y_ref.float()), rel_rms(last_a, last_ref.float()))
        row[f"scan_aot_{label}_ms"] = time_ms(run, reps)
        row[f"scan_aot_{label}_over_triton"] = row[f"scan_aot_{label}_ms"] / row["scan_triton_ms"]
        s_a = torch.full((B, L), float("nan"), device="cuda")
        run = aot_score(alib, half, (x, dt, bias, A, Bm, Cm, s_a), B, L, D, N, stream)
        run()
        torch.cuda.synchronize()
        row[f"score_aot_{label}_rel_rms"] = rel_rms(s_a[:, : L - PROTECT], s_ref)
        row[f"score_aot_{label}_protected_inf"] = bool(torch.isinf(s_a[:, L - PROTECT:]).all())
        row[f"score_aot_{label}_ms"] = time_ms(run, reps)
        row[f"score_aot_{label}_over_triton"] = row[f"score_aot_{label}_ms"] / row["score_triton_ms"]
        if hasattr(alib, "simba_aot_causal_conv1d"):
            u_a = torch.full_like(x, float("nan"))

            def run_conv(lib_=alib, u_a=u_a):
                code = lib_.simba_aot_causal_conv1d(half, x.data_ptr(), w.data_ptr(), wb.data_ptr(), u_a.data_ptr(),
                                                    B, L, D, K, 1, stream)
                if code != 0:
                    raise RuntimeError(f"AOT conv: code {code}: {lib_.simba_aot_last_error().decode()}")
            run_conv()
            torch.cuda.synchronize()
            row[f"conv_aot_{label}_rel_rms"] = rel_rms(u_a.float(), ours_conv().float())
            row[f"conv_aot_{label}_ms"] = time_ms(run_conv, reps)
            row[f"conv_aot_{label}_over_triton"] = row[f"conv_aot_{label}_ms"] / row["conv_triton_ms"]
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lib", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--cases", default="130m:1x2048,130m:4x2048,1.4b:1x2048,1.4b:4x2048")
    ap.add_argument("--dtypes", default="float32,float16")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--aot-lib", action="append", default=[], metavar="LABEL=PATH",
                    help="also time the AOT scan of this build (--lib's own is labelled 'lib' when it has one)")
    args = ap.parse_args()
    lib = load(args.lib)
    aot_libs = {"lib": lib} if hasattr(lib, "simba_aot_selective_scan") else {}
    for spec in args.aot_lib:
        label, path = spec.split("=", 1)
        aot_libs[label] = load(Path(path))
    versions = {k: v.simba_aot_triton_version_string().decode() for k, v in aot_libs.items()}
    rows = []
    for dt in args.dtypes.split(","):
        for c in args.cases.split(","):
            shape, bl = c.split(":")
            B, L = (int(v) for v in bl.split("x"))
            rows.append(case(lib, aot_libs, shape, B, L, getattr(torch, dt), args.reps))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    res = {"meta": {**environment(torch.device("cuda")), "command": command(), "aot_triton": versions},
           "rows": rows}
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    aot_head = "".join(f" scan AOT {k} (triton {v}) ms | score AOT {k} ms |" for k, v in versions.items())
    print("| shape | B×L | dtype | scan lib / triton ms | score lib / triton ms | conv lib / triton ms | max rel RMS |"
          + aot_head)
    print("|---" * (7 + 2 * len(versions)) + "|")
    for r in rows:
        err = max(r["scan_rel_rms"], r["state_rel_rms"], r["score_rel_rms"], r["conv_rel_rms"])
        print(f"| {r['shape']} | {r['B']}×{r['L']} | {r['dtype']} | " + " | ".join(
            f"{r[k + '_lib_ms']:.3f} / {r[k + '_triton_ms']:.3f} ({r[k + '_lib_over_triton']:.1f}×)"
            for k in ("scan", "score", "conv")) + f" | {err:.1e} |" + "".join(
            f" {r[f'{op}_aot_{k}_ms']:.3f} ({r[f'{op}_aot_{k}_over_triton']:.2f}×, {r[f'{op}_aot_{k}_rel_rms']:.0e}) |"
            for k in versions for op in ("scan", "score")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
