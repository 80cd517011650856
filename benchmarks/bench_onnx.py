"""ONNX Runtime latency of the exported prefill: sparse vs dense, portable vs custom-op library, vs PyTorch.

    PYTHONPATH=. python3 benchmarks/bench_onnx.py --out benchmarks/results/bench_onnx_cpu.json      # CPU, L=512,2048
    PYTHONPATH=. python3 benchmarks/bench_onnx.py --smoke --out /tmp/bench_onnx.json              # seconds, CPU
    PYTHONPATH=. python3 benchmarks/bench_onnx.py --cuda --out $OUT/bench_onnx_cuda.json          # H200

One process exports the sparse model (the paper's linear schedule, 10% kept at the last layer) and the
dense one (all ratios 1) of the same weights, then times, per sequence length and in interleaved rounds:
onnxruntime without the library (the Scan reference functions), onnxruntime with libsimba_ort_ops, and
PyTorch eager (PrunedMambaLM / MambaLM). Each onnxruntime row also records its agreement with PyTorch
(relative RMS of the protected logits, and whether the kept tokens match).

--cuda: the same with onnxruntime-gpu's CUDAExecutionProvider (needs the library built with
`kernels/build.sh --cuda`, carried as kernels/build) next to PyTorch on the GPU; plus the raw CUDA
kernels called through ctypes against the PyTorch ops (parity and time), which needs no onnxruntime-gpu.
Weights: the bundled mamba-tiny when it is installed, else random weights of its shape (recorded).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from simba_convert.model.config import MambaConfig
from simba_convert.model.mamba import MambaLM
from simba_convert.pruning.model import PrunedMambaLM
from simba_convert.pruning.schedules import paper_linear
from simba_convert.pruning.spec import PruningSpec

SHAPES = {  # d_model, n_layer, vocab
    "mamba-tiny": (256, 8, 8192),
    "mamba-130m": (768, 24, 50280),
    "micro": (64, 2, 512),
}


def build_model(name: str, device: str, dtype: torch.dtype):
    """(dense MambaLM, weights description): the bundled model if loadable, else random weights of its shape."""
    if name == "mamba-tiny":
        try:
            from simba_convert.io.load import load

            return load("mamba-tiny", offline=True, device=device, dtype=dtype).eval(), "bundled mamba-tiny"
        except Exception as e:  # noqa: BLE001 - fall back to random weights and record why
            why = str(e).splitlines()[0]
    else:
        why = "shape only"
    d, n, v = SHAPES[name]
    torch.manual_seed(0)
    model = MambaLM(MambaConfig(d_model=d, n_layer=n, vocab_size=v))
    with torch.no_grad():  # dt and A spread like a trained model's, so that scores differ between tokens
        for layer in model.backbone.layers:
            layer.mixer.dt_proj.bias.uniform_(-4.6, -2.3)
    return model.to(device=device, dtype=dtype).eval(), f"random weights of {name}'s shape ({why})"


def timed(fn, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) * 1e3


def make_session(path, library, providers, threads):
    import onnxruntime as ort

    from simba_convert.export.runtime import session_options

    so = session_options(library, threads=threads)
    return ort.InferenceSession(str(path), so, providers=providers)


def node_providers(path, library, providers, feed, threads) -> dict:
    """{op type: {execution provider: nodes run}} from one profiled run: shows which provider ran each custom op
    (the CUDA EP only takes a node whose kernel the library registered for it; anything else falls back)."""
    import onnxruntime as ort

    from simba_convert.export.runtime import session_options

    with tempfile.TemporaryDirectory() as tmp:
        so = session_options(library, threads=threads)
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "prof")
        sess = ort.InferenceSession(str(path), so, providers=providers)
        sess.run(None, feed)
        events = json.loads(Path(sess.end_profiling()).read_text())
    seen: dict[str, dict[str, set]] = {}
    for e in events:
        a = e.get("args", {})
        if e.get("cat") == "Node" and "op_name" in a and "provider" in a:
            seen.setdefault(a["op_name"], {}).setdefault(a["provider"], set()).add(e["name"].rsplit("_kernel_time", 1)[0])
    return {op: {prov: len(names) for prov, names in provs.items()} for op, provs in sorted(seen.items())}


def rel_rms(out, ref) -> float:
    o, r = np.asarray(out, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    return float(np.linalg.norm(o - r) / max(np.linalg.norm(r), 1e-30))


def bench_length(models, sessions, L, args, device) -> list[dict]:
    from simba_convert.export.verify import reference_outputs

    ids = torch.randint(0, models["dense"].config.vocab_size, (args.batch, L), generator=torch.Generator().manual_seed(L))
    feed = {"input_ids": ids.numpy()}
    cases = []
    for variant in ("sparse", "dense"):
        model = models[variant]
        ref_logits, ref_mask = reference_outputs(model, ids.to(device), dtype=args.torch_dtype, protect=args.protect)
        with torch.inference_mode():
            cases.append(dict(variant=variant, runtime="pytorch", path=args.torch_backend,
                              fn=lambda m=model, x=ids.to(device): m(x)))
        for path_name, sess in sessions[variant].items():
            out = sess.run(None, feed)
            row = dict(variant=variant, runtime="onnxruntime", path=path_name, fn=lambda s=sess: s.run(None, feed))
            row["rel_rms_vs_pytorch"] = rel_rms(out[0], ref_logits)
            row["kept_match"] = bool(np.array_equal(out[1], ref_mask))
            cases.append(row)
    for c in cases:
        c["runs_ms"] = []
        for _ in range(args.warmup):
            with torch.inference_mode():
                c["fn"]()
    for _ in range(args.repeats):  # interleaved, so that load changes hit every case alike
        for c in cases:
            with torch.inference_mode():
                c["runs_ms"].append(timed(c["fn"], device if c["runtime"] == "pytorch" else "cpu"))
    rows = []
    for c in cases:
        c.pop("fn")
        c.update(seq_len=L, batch=args.batch, median_ms=statistics.median(c["runs_ms"]), min_ms=min(c["runs_ms"]))
        rows.append(c)
        print(f"  L={L} {c['variant']:6s} {c['runtime']:11s} {c['path']:9s} {c['median_ms']:9.1f} ms", file=sys.stderr, flush=True)
    for c in rows:  # ratios measured in this run
        dense_same = next(r for r in rows if r["variant"] == "dense" and r["runtime"] == c["runtime"] and r["path"] == c["path"])
        c["speedup_vs_dense"] = dense_same["median_ms"] / c["median_ms"]
        torch_same = next(r for r in rows if r["variant"] == c["variant"] and r["runtime"] == "pytorch")
        c["speedup_vs_pytorch"] = torch_same["median_ms"] / c["median_ms"]
    return rows


def cuda_kernel_parity(lib_path, args) -> list[dict]:
    """The library's raw CUDA launchers (ctypes, torch tensors and stream) against the PyTorch ops."""
    import ctypes

    import torch.nn.functional as F

    from simba_convert.ops.impact_score import impact_score
    from simba_convert.ops.selective_scan import selective_scan

    lib = ctypes.CDLL(str(lib_path))
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    lib.simba_cuda_selective_scan.argtypes = [ctypes.c_int] + [p] * 10 + [i64, i64, i64, ctypes.c_int, p]
    lib.simba_cuda_impact_score.argtypes = [ctypes.c_int] + [p] * 6 + [i64, i64, i64] + [ctypes.c_int] * 3 + [p]
    lib.simba_cuda_error_string.restype = ctypes.c_char_p
    rows = []
    for dtype in (torch.float32, torch.float16):
        for B, L, D, N in [(1, 2048, 1536, 16), (4, 2048, 4096, 16), (2, 37, 100, 5)]:
            g = torch.Generator(device="cuda").manual_seed(0)
            r = lambda *s: torch.randn(*s, device="cuda", generator=g)  # noqa: E731
            u, dt, z = r(B, L, D).to(dtype), (r(B, L, D) - 2).to(dtype), r(B, L, D).to(dtype)
            Bm, Cm = r(B, L, N).to(dtype), r(B, L, N).to(dtype)
            A, Dk, bias = -torch.rand(D, N, device="cuda", generator=g) * 4, r(D), r(D) * 0.5
            y, last = torch.empty_like(u), torch.empty(B, D, N, device="cuda")
            stream = torch.cuda.current_stream().cuda_stream
            half = int(dtype == torch.float16)

            def run_scan():
                code = lib.simba_cuda_selective_scan(half, *(t.data_ptr() for t in (u, dt, A, Bm, Cm, Dk, z, bias, y, last)),
                                                     B, L, D, N, stream)
                assert code == 0, lib.simba_cuda_error_string(code)

            def torch_scan():
                return selective_scan(u, dt, A, Bm, Cm, Dk, z, bias, True, return_last_state=True)

            run_scan()
            y_ref, last_ref = torch_scan()
            delta = F.softplus(dt.float() + bias)
            score = torch.empty(B, L, device="cuda")

            def run_score(crit):
                code = lib.simba_cuda_impact_score(half, u.data_ptr(), delta.data_ptr(), A.data_ptr(), Bm.data_ptr(),
                                                   Cm.data_ptr(), score.data_ptr(), B, L, D, N, crit, 0, stream)
                assert code == 0, lib.simba_cuda_error_string(code)
                return score

            row = dict(dtype=str(dtype).removeprefix("torch."), B=B, L=L, D=D, N=N,
                       scan_rel_rms=rel_rms(y.float().cpu(), y_ref.float().cpu()),
                       state_rel_rms=rel_rms(last.cpu(), last_ref.float().cpu()))
            for ci, crit in enumerate(("last", "global")):
                s_ref = impact_score(u, delta, A, Bm, Cm, criterion=crit)
                row[f"score_{crit}_rel_rms"] = rel_rms(run_score(ci).cpu(), s_ref.cpu())
                row[f"score_{crit}_ms"] = statistics.median(timed(lambda c=ci: run_score(c), "cuda") for _ in range(5))
                row[f"score_{crit}_torch_ms"] = statistics.median(
                    timed(lambda c=crit: impact_score(u, delta, A, Bm, Cm, criterion=c), "cuda") for _ in range(5))
            row["scan_ms"] = statistics.median(timed(run_scan, "cuda") for _ in range(5))
            row["scan_torch_ms"] = statistics.median(timed(torch_scan, "cuda") for _ in range(5))
            rows.append(row)
            print(f"  cuda kernels {row}", file=sys.stderr, flush=True)
    return rows


def markdown(res: dict) -> str:
    head = (f"ONNX prefill, {res['device']}, onnxruntime {res['onnxruntime']}, torch {res['torch']}, {res['date']}\n\n"
            f"`{res['command']}`\n\nmodel: {res['model']} ({res['weights']}), batch {res['batch']}, protect {res['protect']}, "
            f"dtype {res['dtype']}, sparse keep ratios {res['keep_ratios']}\n\n")
    lines = ["| L | variant | runtime | path | median ms | min ms | × dense (same path) | × PyTorch (same variant) | rel RMS vs PyTorch | kept match |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['seq_len']} | {r['variant']} | {r['runtime']} | {r['path']} | {r['median_ms']:.1f} | {r['min_ms']:.1f} | "
                     f"{r['speedup_vs_dense']:.2f} | {r['speedup_vs_pytorch']:.2f} | {r.get('rel_rms_vs_pytorch', 0):.1e} | "
                     f"{r.get('kept_match', '')} |")
    out = head + "\n".join(lines) + "\n"
    if res.get("node_providers"):
        out += "\nNodes per execution provider (one profiled run): " + "; ".join(
            f"{k}: " + ", ".join(f"{op} {provs}" for op, provs in v.items() if op in ("SelectiveScan", "ImpactScore", "Scan"))
            for k, v in res["node_providers"].items()) + "\n"
    if res.get("cuda_kernels"):
        out += "\n| dtype | B×L×D×N | scan rel RMS | scan ms (torch ms) | last rel RMS | last ms (torch ms) | global rel RMS | global ms (torch ms) |\n"
        out += "|---|---|---|---|---|---|---|---|\n"
        for r in res["cuda_kernels"]:
            out += (f"| {r['dtype']} | {r['B']}×{r['L']}×{r['D']}×{r['N']} | {r['scan_rel_rms']:.1e} | {r['scan_ms']:.2f} ({r['scan_torch_ms']:.2f}) | "
                    f"{r['score_last_rel_rms']:.1e} | {r['score_last_ms']:.2f} ({r['score_last_torch_ms']:.2f}) | "
                    f"{r['score_global_rel_rms']:.1e} | {r['score_global_ms']:.2f} ({r['score_global_torch_ms']:.2f}) |\n")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="JSON results (a .md table is written beside it)")
    ap.add_argument("--model", default=None, choices=sorted(SHAPES),
                    help="default: mamba-tiny (mamba-130m takes ~2 min per export: 24 layers)")
    ap.add_argument("--lengths", type=int, nargs="+", default=None, help="default: 512 2048")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--protect", type=int, default=64)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: its own)")
    ap.add_argument("--cuda", action="store_true", help="onnxruntime-gpu CUDA EP and PyTorch on the GPU")
    ap.add_argument("--smoke", action="store_true", help="a seconds-long CPU run on a micro model")
    args = ap.parse_args(argv)
    device = "cuda" if args.cuda else "cpu"
    args.model = args.model or ("micro" if args.smoke else "mamba-tiny")
    args.lengths = args.lengths or ([48] if args.smoke else [512, 2048])
    if args.smoke:
        args.protect, args.repeats = min(args.protect, 8), 2
    args.torch_dtype = getattr(torch, args.dtype)
    args.torch_backend = "auto" if args.cuda else "reference"

    import onnxruntime as ort

    from simba_convert.export import export_onnx
    from simba_convert.export.runtime import find_library

    lib = find_library()
    if args.cuda:
        if hasattr(ort, "preload_dlls"):
            ort.preload_dlls()
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            print("onnxruntime has no CUDAExecutionProvider: only the raw CUDA kernels are measured", file=sys.stderr)
    providers = (["CUDAExecutionProvider", "CPUExecutionProvider"] if args.cuda else ["CPUExecutionProvider"])
    dense, weights = build_model(args.model, device, args.torch_dtype)
    ratios = paper_linear(dense.config.n_layer)
    models = {"sparse": PrunedMambaLM(dense, PruningSpec(ratios, criterion="last", protect=args.protect)), "dense": dense}
    res = dict(date=datetime.date.today().isoformat(), command=" ".join(sys.argv), platform=platform.platform(),
               device=torch.cuda.get_device_name() if args.cuda else f"CPU ({platform.processor() or 'x86_64'}, {torch.get_num_threads()} torch threads)",
               torch=torch.__version__, onnxruntime=ort.__version__, model=args.model, weights=weights, batch=args.batch,
               protect=args.protect, dtype=args.dtype, keep_ratios=[round(r, 4) for r in ratios],
               library=str(lib) if lib else None, rows=[], exports={})
    run_ort = not args.cuda or "CUDAExecutionProvider" in ort.get_available_providers()
    with tempfile.TemporaryDirectory() as tmp:
        if not run_ort:  # no onnxruntime-gpu: only the raw kernels below
            args.lengths = []
        sessions = {}
        for variant, model in models.items() if args.lengths else ():
            path = Path(tmp) / variant / "model.onnx"
            rep = export_onnx(model, path, protect=args.protect, dtype=args.dtype, library=False, check=False)
            res["exports"][variant] = {k: rep[k] for k in ("size_bytes", "export_seconds", "custom_nodes")}
            paths = {"portable": False}
            if lib:
                paths["library"] = lib
            sessions[variant] = {n: make_session(path, l, providers, args.threads) for n, l in paths.items()}
        for L in args.lengths:
            res["rows"] += bench_length(models, sessions, L, args, device)
        if args.cuda and args.lengths:
            feed = {"input_ids": np.zeros((args.batch, args.lengths[0]), dtype=np.int64)}
            res["node_providers"] = {
                f"{variant}/{name}": node_providers(Path(tmp) / variant / "model.onnx", lib if name == "library" else False,
                                                    providers, feed, args.threads)
                for variant in sessions for name in sessions[variant]}
            print(f"node providers: {json.dumps(res['node_providers'])}", file=sys.stderr, flush=True)
    if args.cuda:
        import ctypes

        if lib and hasattr(ctypes.CDLL(str(lib)), "simba_cuda_selective_scan"):
            res["cuda_kernels"] = cuda_kernel_parity(lib, args)
        else:
            res["cuda_kernels_skipped"] = "no library built with --cuda (kernels/build.sh --cuda, carry kernels/build)"
            print(res["cuda_kernels_skipped"], file=sys.stderr)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    md = markdown(res)
    out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
