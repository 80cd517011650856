"""ONNX Runtime latency of the exported prefill: sparse vs dense, portable vs custom-op library, vs PyTorch.

    PYTHONPATH=. python3 benchmarks/bench_onnx.py --batch 1 4 --threads 0 1 --profile 5 \
        --out benchmarks/results/bench_onnx_cpu.json                                          # CPU, L=512,2048
    PYTHONPATH=. python3 benchmarks/bench_onnx.py --smoke --out /tmp/bench_onnx.json          # seconds, CPU
    PYTHONPATH=. python3 benchmarks/bench_onnx.py --cuda --out $OUT/bench_onnx_cuda.json      # H200

One process exports the dense model (all ratios 1) and, for each length L, the sparse one (the linear schedule
solved for --budget at L, 0.6 by default: what `simba-convert --schedule linear --seq-len L` picks) of the same
weights, then times, per (L, batch, onnxruntime threads) and in interleaved rounds: onnxruntime without the
library (the Scan reference functions), onnxruntime with libsimba_ort_ops, and PyTorch eager (PrunedMambaLM /
MambaLM, logits of the protected positions only, as the files give). Each onnxruntime row also records its
agreement with PyTorch (relative RMS of the protected logits, and whether the kept tokens match).
--prune-every K [K ...] adds one sparse file per K (the schedule stepped over K layers: scores, a selection and
the gathers at every K-th layer only; "sparse-everyK" rows); --cuda-tf32 0 turns off TF32 in the CUDA EP's MatMuls
(onnxruntime's default is on; PyTorch's fp32 matmuls are exact), for parity runs.
--baseline DIR adds the exports and library of another checkout (e.g. the code before a change) to the same
rounds; --profile RUNS records ORT's profiler per op type, per category and per node for every file at B=1.

--cuda: the same with onnxruntime-gpu's CUDAExecutionProvider (needs the library built with
`kernels/build.sh --cuda`, carried as kernels/build) next to PyTorch on the GPU; plus the raw CUDA
kernels called through ctypes against the PyTorch ops (parity and time), which needs no onnxruntime-gpu.
Weights: the bundled mamba-tiny when it is installed, else random weights of its shape (recorded); --model
mamba2-tiny: the bundled Mamba-2 (no fallback).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

# numpy's OpenBLAS pool (loaded with scipy by the exporter) spins between calls: on a 2-core machine that is CPU
# taken from the onnxruntime runs being timed. PyTorch's own threads are unaffected.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import environment, loadavg as _loadavg, wall_ms as timed  # noqa: E402  the shared helper (this folder is on sys.path)

from simba_convert.model.config import MambaConfig  # noqa: E402
from simba_convert.model.mamba import MambaLM  # noqa: E402
from simba_convert.pruning.model import PrunedMambaLM  # noqa: E402
from simba_convert.pruning.spec import PruningSpec  # noqa: E402

SHAPES = {  # d_model, n_layer, vocab
    "mamba-tiny": (256, 8, 8192),
    "mamba-130m": (768, 24, 50280),
    "mamba-1.4b": (2048, 48, 50280),
    "micro": (64, 2, 512),
}


BUNDLED = ("mamba-tiny", "mamba2-tiny")  # loaded by name; mamba2-tiny has no random-weight fallback


def build_model(name: str, device: str, dtype: torch.dtype):
    """(dense LM, weights description): the bundled model if loadable, else random weights of its shape."""
    if name in BUNDLED:
        try:
            from simba_convert.io.load import load

            return load(name, offline=True, device=device, dtype=dtype).eval(), f"bundled {name}"
        except Exception as e:  # noqa: BLE001 - fall back to random weights and record why
            if name not in SHAPES:
                raise
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


def make_session(path, library, providers, threads):
    import onnxruntime as ort

    from simba_convert.export.runtime import session_options

    so = session_options(library, threads=threads)
    # Many sessions share this process and take turns: a session's idle pool threads must not spin through the
    # next session's run (ORT's default for one session per process is to spin).
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
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


class BoundRun:
    """One session's run through IO binding: input_ids copied from the host each run, every output left in the
    GPU's memory (what a serving loop that decodes on the GPU does); `outputs()` copies them back for the checks."""

    def __init__(self, sess, feed):
        self.sess, self.io = sess, sess.io_binding()
        self.io.bind_cpu_input("input_ids", feed["input_ids"])
        for o in sess.get_outputs():
            self.io.bind_output(o.name, "cuda")

    def __call__(self):
        self.sess.run_with_iobinding(self.io)
        self.io.synchronize_outputs()

    def outputs(self):
        return self.io.copy_outputs_to_cpu()


def rel_rms(out, ref) -> float:
    o, r = np.asarray(out, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    return float(np.linalg.norm(o - r) / max(np.linalg.norm(r), 1e-30))


CATEGORIES = {  # ORT op type -> where its time goes (the profile's groups)
    "simba kernels": ("SelectiveScan", "SelectiveScanScore", "ImpactScore",  # Mamba-1
                      "SsdScan", "SsdScanScore"),  # Mamba-2
    "Scan (portable reference bodies)": ("Scan", "Softplus", "Exp", "CumSum", "ReduceSum", "ReduceMax", "Abs", "Pad"),
    "MatMul": ("MatMul", "Gemm", "FusedMatMul"),
    "conv + layout": ("Conv", "Transpose", "QuickGelu", "Sigmoid"),
    "gathers, top-k, scatters": ("Gather", "GatherND", "GatherElements", "TopK", "ScatterElements"),
    "casts": ("Cast", "CastLike"),
    "norms": ("Pow", "ReduceMean", "Sqrt", "Reciprocal", "SimplifiedLayerNormalization",
              "SkipSimplifiedLayerNormalization"),
}


def category(op: str) -> str:
    return next((c for c, ops in CATEGORIES.items() if op in ops), "other (elementwise, shapes)")


def git_commit() -> str | None:
    import subprocess

    if os.environ.get("SIMBA_BENCH_COMMIT"):  # a tree copied to a GPU machine may carry stale git metadata
        return os.environ["SIMBA_BENCH_COMMIT"]
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "simba_convert/export", "kernels",
                                "benchmarks/bench_onnx.py"], cwd=root, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + (" + uncommitted changes to export/, kernels/, bench_onnx.py" if dirty.stdout.strip()
                                  else "")


def budget_ratios(cfg, budget: float, L: int, protect: int, every: int = 1) -> tuple[tuple[float, ...], float]:
    """The paper's linear schedule, stepped over `every` layers, solved for `budget` at length L (what
    `simba-convert --schedule linear --prune-every K` picks), and its exact FLOPs ratio there."""
    from simba_convert.pruning.flops import flops_report
    from simba_convert.pruning.schedules import family, solve_budget

    ratios = solve_budget(family("linear", cfg.n_layer, every=every), cfg, budget, L, protect)
    return tuple(round(r, 6) for r in ratios), flops_report(cfg, ratios, L, protect).ratio


def export_baseline(src: Path, jobs: list[tuple[str, tuple, Path]], args) -> None:
    """Export with the `simba_convert` found under `src` (a checkout of the code before this change), in a
    subprocess: the same weights (build_model), ratios and protect. jobs: (variant, ratios, path)."""
    import subprocess

    code = (
        "import json, sys\n"
        "sys.path.insert(0, %r)\n"
        "import torch\n"
        "from bench_onnx import build_model\n"
        "from simba_convert.pruning.model import PrunedMambaLM\n"
        "from simba_convert.pruning.spec import PruningSpec\n"
        "from simba_convert.export import export_onnx\n"
        "dense, _ = build_model(%r, 'cpu', torch.%s)\n"
        "for variant, ratios, path in json.loads(sys.argv[1]):\n"
        "    m = dense if variant == 'dense' else PrunedMambaLM(dense, PruningSpec(tuple(ratios), protect=%d))\n"
        "    export_onnx(m, path, protect=%d, dtype=%r, check=False)\n"
        % (str(Path(__file__).resolve().parent), args.model, args.dtype, args.protect, args.protect, args.dtype))
    arg = json.dumps([[v, list(r), str(p)] for v, r, p in jobs])
    env = dict(os.environ, PYTHONPATH=str(src))
    subprocess.run([sys.executable, "-c", code, arg], check=True, env=env, capture_output=True, cwd=src)


def tag(variant: str, L: int | None) -> str:
    """An export's folder and report key: "dense", "sparse2048", "sparse-every8-2048"."""
    return variant if L is None else f"{variant}{L}" if variant == "sparse" else f"{variant}-{L}"


def sparse_name(every: int) -> str:
    """The variant name of the sparse file pruned every `every` layers ("sparse" for every layer)."""
    return "sparse" if every == 1 else f"sparse-every{every}"


def kept_overlap(got: np.ndarray, ref: np.ndarray) -> float:
    """The fraction of PyTorch's kept (layer, row, position) entries that the file kept too (1.0: the same sets)."""
    return float((got.astype(bool) & ref).sum() / max(1, ref.sum()))


def agreement(out, ref_logits: np.ndarray, ref_mask: np.ndarray) -> dict:
    """A file's outputs (logits, kept_mask, ...) against PyTorch's: the row's parity columns."""
    return dict(rel_rms_vs_pytorch=rel_rms(out[0], ref_logits), kept_match=bool(np.array_equal(out[1], ref_mask)),
                kept_overlap=kept_overlap(out[1], ref_mask))


def bench_case(models, sessions, L, bsz, threads, args, device) -> list[dict]:
    """Every variant x path at one (L, batch, threads), timed in interleaved rounds; ratios from this run."""
    from simba_convert.export.verify import reference_outputs

    dense = models["dense"]
    ids = torch.randint(0, dense.config.vocab_size, (bsz, L), generator=torch.Generator().manual_seed(L + bsz))
    feed = {"input_ids": ids.numpy()}
    cases = []
    for variant in args.variant_names:
        model = models[variant][L] if variant != "dense" else dense
        ref_logits, ref_mask = reference_outputs(model, ids.to(device), dtype=args.torch_dtype, protect=args.protect)
        if args.torch:
            P = min(args.protect, L)
            cases.append(dict(variant=variant, runtime="pytorch", path=args.torch_backend,
                              fn=lambda m=model, x=ids.to(device): m(x, num_last=P)))
        for path_name, sess in sessions[(variant, L if variant != "dense" else None, threads)].items():
            cases.append(dict(variant=variant, runtime="onnxruntime", path=path_name, fn=lambda s=sess: s.run(None, feed),
                              **agreement(sess.run(None, feed), ref_logits, ref_mask)))
            if args.iobinding:
                bound = BoundRun(sess, feed)
                bound()
                cases.append(dict(variant=variant, runtime="onnxruntime", path=f"{path_name}+iobinding", fn=bound,
                                  **agreement(bound.outputs(), ref_logits, ref_mask)))
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
        c.update(seq_len=L, batch=bsz, threads=threads or "default", median_ms=statistics.median(c["runs_ms"]),
                 min_ms=min(c["runs_ms"]))
        rows.append(c)
        print(f"  L={L} B={bsz} threads={threads or 'default'} {c['variant']:13s} {c['runtime']:11s} {c['path']:17s} "
              f"{c['median_ms']:9.1f} ms", file=sys.stderr, flush=True)
    for c in rows:  # ratios measured in this run
        dense_same = next(r for r in rows if r["variant"] == "dense" and r["runtime"] == c["runtime"] and r["path"] == c["path"])
        c["speedup_vs_dense"] = dense_same["median_ms"] / c["median_ms"]
        torch_same = next((r for r in rows if r["variant"] == c["variant"] and r["runtime"] == "pytorch"), None)
        c["speedup_vs_pytorch"] = torch_same["median_ms"] / c["median_ms"] if torch_same else None
    return rows


def profile(path, library, feed, runs: int, threads) -> dict:
    """ORT's profiler over `runs` runs of one session: ms per run by op type, by category and by node."""
    import collections

    import onnxruntime as ort

    from simba_convert.export.runtime import session_options

    with tempfile.TemporaryDirectory() as tmp:
        so = session_options(library, threads=threads)
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "prof")
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        sess.run(None, feed)  # warm-up, not counted below
        t0 = time.perf_counter()
        for _ in range(runs):
            sess.run(None, feed)
        wall = (time.perf_counter() - t0) * 1e3 / runs
        events = json.loads(Path(sess.end_profiling()).read_text())
    model_runs = [e for e in events if e.get("name") == "model_run"][1:]
    nodes = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    nodes = nodes[len(nodes) // (runs + 1):]  # drop the warm-up run's nodes
    by_op, by_node, by_cat = collections.Counter(), collections.Counter(), collections.Counter()
    executed = collections.Counter()  # nodes run per op type and run, those ORT inserted (e.g. Casts) included
    for e in nodes:
        op, ms = e["args"]["op_name"], e["dur"] / 1e3 / runs
        executed[op] += 1 / runs
        by_op[op] += ms
        by_cat[category(op)] += ms
        by_node[f"{e['name'][:-len('_kernel_time')]} ({op})"] += ms
    r2 = lambda c: {k: round(v, 3) for k, v in c.most_common()}  # noqa: E731
    return {"runs": runs, "wall_ms": round(wall, 2),
            "model_run_ms": round(statistics.mean(e["dur"] for e in model_runs) / 1e3, 2) if model_runs else None,
            "nodes_ms": round(sum(by_op.values()), 2), "node_count": len(nodes) // runs,
            "by_category": r2(by_cat), "by_op": r2(by_op), "nodes_by_op": r2(executed),
            "top_nodes": dict(list(r2(by_node).items())[:20])}


def gpu_profile(files, providers, vocab: int, args) -> dict:
    """{"L=.. B=.. variant path": GPU kernels of one session run by stage}: CUPTI (torch.profiler) records every
    kernel and copy of the process, onnxruntime's included, where ORT's own profiler times the CUDA EP's nodes on
    the host (launch time only). kernel_profile.breakdown groups them as for the PyTorch model."""
    from kernel_profile import breakdown

    out = {}
    for (variant, L), fs in files.items():
        for name, (path, lib) in fs.items():
            sess = make_session(path, lib, providers, None)
            for bsz in args.batch:
                n = L or args.lengths[0]
                feed = {"input_ids": np.random.default_rng(n + bsz).integers(0, vocab, (bsz, n))}
                sess.run(None, feed)
                r = breakdown(lambda: sess.run(None, feed), calls=2)
                key = f"L={n} B={bsz} {variant} {name}"
                out[key] = dict(r, kernels=dict(list(r["kernels"].items())[:20]))
                print(f"  gpu profile {key}: wall {r['wall_ms']:.1f} kernels {r['kernel_ms']:.1f} "
                      f"{ {k: round(v, 2) for k, v in r['stages'].items()} }", file=sys.stderr, flush=True)
            del sess
    return out


def file_op_counts(path) -> dict:
    """{op type: nodes} of an ONNX file's main graph (what the exporter wrote; function bodies not counted)."""
    import collections

    import onnx

    return dict(collections.Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node))

def cuda_kernel_parity(lib_path, args) -> list[dict]:
    """The library's raw CUDA launchers (ctypes, torch tensors and stream) against the PyTorch ops."""
    import ctypes

    import torch.nn.functional as F

    from simba_convert.ops.score import impact_score
    from simba_convert.ops.scan import selective_scan

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


def kept_cell(r: dict) -> str:
    if "kept_match" not in r:
        return ""
    return "True" if r["kept_match"] else f"False ({r['kept_overlap']:.4f} of kept)" if "kept_overlap" in r else "False"


def markdown(res: dict) -> str:
    head = (f"ONNX prefill, {res['device']}, onnxruntime {res['onnxruntime']}, torch {res['torch']}, {res['date']}, "
            f"commit {res['commit']}\n\n`{res['command']}`\n\nmodel: {res['model']} ({res['weights']}), protect "
            f"{res['protect']}, dtype {res['dtype']}, budget {res['budget']}: linear schedule solved at each L"
            + (f" (CUDA EP use_tf32={res['cuda_tf32']})" if res.get("cuda_tf32") is not None else "") + " "
            + "; ".join(f"L={k}: ratios {v['keep_ratios']}, FLOPs ratio {v['flops_ratio']:.3f}"
                        for k, v in res["sparse_specs"].items()) + "\n\n")
    lines = ["| L | B | threads | variant | runtime | path | median ms | min ms | dense / this (same path) | "
             "PyTorch / this | rel RMS vs PyTorch | kept match |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        vs_torch = f"{r['speedup_vs_pytorch']:.2f}" if r.get("speedup_vs_pytorch") else ""
        rr = f"{r['rel_rms_vs_pytorch']:.1e}" if "rel_rms_vs_pytorch" in r else ""
        lines.append(f"| {r['seq_len']} | {r['batch']} | {r['threads']} | {r['variant']} | {r['runtime']} | {r['path']} | "
                     f"{r['median_ms']:.1f} | {r['min_ms']:.1f} | {r['speedup_vs_dense']:.2f} | {vs_torch} | {rr} | "
                     f"{kept_cell(r)} |")
    out = head + "\n".join(lines) + "\n"
    for key, prof in res.get("profile", {}).items():
        out += f"\nProfile {key}: {prof['wall_ms']:.1f} ms/run, nodes {prof['nodes_ms']:.1f} ms ({prof['node_count']} nodes): "
        out += ", ".join(f"{k} {v:.1f}" for k, v in prof["by_category"].items()) + "\n"
    for key, prof in res.get("gpu_profile", {}).items():
        out += (f"\nGPU profile {key}: {prof['wall_ms']:.1f} ms/run, kernels {prof['kernel_ms']:.1f} ms: "
                + ", ".join(f"{k} {v:.2f}" for k, v in prof["stages"].items()) + "\n")
    if res.get("node_providers"):
        out += "\nNodes per execution provider (one profiled run): " + "; ".join(
            f"{k}: " + ", ".join(f"{op} {provs}" for op, provs in v.items()
                                 if op in ("SelectiveScan", "SelectiveScanScore", "ImpactScore", "Scan"))
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
    ap.add_argument("--model", default=None, choices=sorted(set(SHAPES) | set(BUNDLED)),
                    help="default: mamba-tiny (mamba-130m takes ~2 min per export: 24 layers); mamba2-tiny: Mamba-2")
    ap.add_argument("--lengths", type=int, nargs="+", default=None, help="default: 512 2048")
    ap.add_argument("--batch", type=int, nargs="+", default=[1])
    ap.add_argument("--threads", type=int, nargs="+", default=[0],
                    help="onnxruntime intra-op threads, each a separate set of rows (0: its default)")
    ap.add_argument("--protect", type=int, default=64)
    ap.add_argument("--budget", type=float, default=0.6, help="FLOPs budget of the sparse model (linear schedule)")
    ap.add_argument("--prune-every", type=int, nargs="+", default=[1], metavar="K",
                    help="one sparse file per K: the linear schedule stepped over K layers (prune points every K)")
    ap.add_argument("--cuda-tf32", type=int, choices=[0, 1], default=None,
                    help="the CUDA EP's use_tf32 option (default: onnxruntime's own default, TF32 on)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--profile", type=int, default=0, metavar="RUNS",
                    help="also profile each file at B=1 with ORT's profiler over RUNS runs (per op type and node)")
    ap.add_argument("--baseline", type=Path, default=None,
                    help="a checkout of the code before a change (its simba_convert/ and kernels/build/): its exports "
                         "and library run as extra rows in the same rounds")
    ap.add_argument("--no-torch", dest="torch", action="store_false", help="skip the PyTorch rows")
    ap.add_argument("--no-portable", dest="portable", action="store_false",
                    help="skip the stock-onnxruntime rows (their Scan bodies take seconds a run at large shapes)")
    ap.add_argument("--export-dir", type=Path, default=None,
                    help="keep the exported files here and reuse those exported before with the same model, weights, "
                         "dtype, protect and keep ratios (export.json beside each); default: a temporary folder")
    ap.add_argument("--export-only", action="store_true",
                    help="export (into --export-dir) and stop: exports can then run as parallel processes, each with "
                         "--variants, before one timing run reuses them")
    ap.add_argument("--variants", default="dense,sparse", help="with --export-only: which files to export")
    ap.add_argument("--extra-lib", action="append", default=[], metavar="LABEL=PATH",
                    help="also run the files with this build of the library (rows 'library LABEL'), e.g. one built "
                         "with --no-aot against the default build")
    ap.add_argument("--cuda", action="store_true", help="onnxruntime-gpu CUDA EP and PyTorch on the GPU")
    ap.add_argument("--no-kernel-parity", dest="kernel_parity", action="store_false",
                    help="with --cuda: skip the table of the library's hand-written CUDA kernels against PyTorch")
    ap.add_argument("--iobinding", action="store_true",
                    help="with --cuda: also time every session through IO binding, outputs left on the GPU")
    ap.add_argument("--gpu-profile", action="store_true",
                    help="with --cuda: each file's GPU kernels by stage (torch.profiler sees onnxruntime's kernels)")
    ap.add_argument("--smoke", action="store_true", help="a seconds-long CPU run on a micro model")
    args = ap.parse_args(argv)
    device = "cuda" if args.cuda else "cpu"
    args.model = args.model or ("micro" if args.smoke else "mamba-tiny")
    args.lengths = args.lengths or ([48] if args.smoke else [512, 2048])
    if args.smoke:  # two layers: the linear schedule reaches no lower budget at L=48
        args.protect, args.repeats, args.budget = min(args.protect, 8), 2, max(args.budget, 0.9)
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
    cuda_ep = ("CUDAExecutionProvider", {} if args.cuda_tf32 is None else {"use_tf32": str(args.cuda_tf32)})
    providers = [cuda_ep, "CPUExecutionProvider"] if args.cuda else ["CPUExecutionProvider"]
    # Exports trace on the CPU (the same seeded weights as on the GPU): nothing in a file depends on the device.
    dense, weights = build_model(args.model, "cpu" if args.export_only else device, args.torch_dtype)
    everies = list(dict.fromkeys(args.prune_every))
    sparse_names = [sparse_name(k) for k in everies]
    args.variant_names = sparse_names + ["dense"]
    specs = {(sparse_name(k), L): budget_ratios(dense.config, args.budget, L, args.protect, k)
             for k in everies for L in args.lengths}
    models = {"dense": dense}
    for (v, L), (r, _) in specs.items():
        models.setdefault(v, {})[L] = PrunedMambaLM(dense, PruningSpec(r, criterion="last", protect=args.protect))
    res = dict(date=datetime.date.today().isoformat(), commit=git_commit(),
               platform=platform.platform(),
               device=torch.cuda.get_device_name() if args.cuda else
               f"CPU ({platform.processor() or 'x86_64'}, {os.cpu_count()} cores)",
               torch=torch.__version__, onnxruntime=ort.__version__, numpy=np.__version__, python=platform.python_version(),
               model=args.model, weights=weights, batches=args.batch, protect=args.protect, dtype=args.dtype,
               budget=args.budget, prune_every=everies,
               cuda_tf32=args.cuda_tf32 if args.cuda else None,
               sparse_specs={(str(L) if v == "sparse" else f"{L} {v}"): {"keep_ratios": list(r), "flops_ratio": f}
                             for (v, L), (r, f) in specs.items()},
               library=str(lib) if lib else None, baseline=str(args.baseline) if args.baseline else None,
               loadavg_start=_loadavg(),
               rows=[], exports={}, profile={})
    res = {**environment(device), **res}  # the versions and command it records; commit and device refined above
    run_ort = not args.cuda or "CUDAExecutionProvider" in ort.get_available_providers()
    if args.export_only and args.export_dir is None:
        ap.error("--export-only needs --export-dir")
    folder = contextlib.nullcontext(str(args.export_dir)) if args.export_dir else tempfile.TemporaryDirectory()
    with folder as tmp:
        if not run_ort and not args.export_only:  # no onnxruntime-gpu: only the raw kernels below
            args.lengths = []
        files = {}  # (variant, L or None) -> {path name: (file, library)}
        jobs = [("dense", None, dense)] + [(v, L, m) for v in sparse_names
                                           for L, m in models[v].items()] if args.lengths else []
        if args.export_only:  # "sparse" names every sparse variant (each --prune-every)
            jobs = [j for j in jobs if j[0].split("-")[0] in args.variants.split(",")]
        for variant, L, model in jobs:
            path = Path(tmp) / f"{args.model}-{args.dtype}" / tag(variant, L) / "model.onnx"
            key = dict(model=args.model, weights=weights, dtype=args.dtype, protect=args.protect, variant=variant,
                       keep_ratios=list(specs[(variant, L)][0]) if L else None, commit=res["commit"])
            meta = path.parent / "export.json"
            old = json.loads(meta.read_text()) if meta.is_file() and path.is_file() else {}
            if old.get("key") == key:
                res["exports"][tag(variant, L)] = dict(old["report"], reused=str(path))
            else:
                t0 = time.perf_counter()
                rep = export_onnx(model, path, protect=args.protect, dtype=args.dtype, library=False, check=False,
                                  step=False)
                report = dict({k: rep[k] for k in ("size_bytes", "custom_nodes")},
                              export_seconds=round(time.perf_counter() - t0, 1), op_counts=file_op_counts(path))
                res["exports"][tag(variant, L)] = report
                meta.write_text(json.dumps({"key": key, "report": report}, indent=1))
            files[(variant, L)] = {"portable": (path, False)} if args.portable or not lib else {}
            if lib:
                files[(variant, L)]["library"] = (path, lib)
            for spec in args.extra_lib:
                label, extra = spec.split("=", 1)
                files[(variant, L)][f"library {label}"] = (path, Path(extra))
        if args.export_only:
            args.lengths, args.threads = [], []
        if args.baseline and args.lengths:
            base_jobs = [(v, (1.0,) * dense.config.n_layer if v == "dense" else specs[(v, L)][0],
                          Path(tmp) / "baseline" / tag(v, L) / "model.onnx") for v, L, _ in jobs]
            export_baseline(args.baseline, base_jobs, args)
            base_lib = args.baseline / "kernels" / "build" / "libsimba_ort_ops.so"
            for (v, L, _), (_, _, p) in zip(jobs, base_jobs):
                files[(v, L)]["baseline portable"] = (p, False)
                if base_lib.is_file():
                    files[(v, L)]["baseline library"] = (p, base_lib)
        for threads in args.threads:
            sessions = {(v, L, threads): {n: make_session(p, lb, providers, threads or None) for n, (p, lb) in fs.items()}
                        for (v, L), fs in files.items()}
            for L in args.lengths:
                for bsz in args.batch:
                    res["rows"] += bench_case(models, sessions, L, bsz, threads, args, device)
            del sessions
        if args.profile and args.lengths and not args.cuda:
            for L in args.lengths:
                feed = {"input_ids": np.random.default_rng(L).integers(0, dense.config.vocab_size, (1, L))}
                for variant in args.variant_names:
                    for name, (p, lb) in files[(variant, L if variant != "dense" else None)].items():
                        key = f"L={L} {variant} {name}"
                        # portable: one run (its Scan bodies' nodes overflow the profiler's event buffer), and its
                        # node sum counts each Scan body's nodes inside the Scan node as well
                        runs = 1 if "portable" in name else args.profile
                        res["profile"][key] = profile(p, lb, feed, runs, args.threads[0] or None)
                        print(f"  profile {key}: {res['profile'][key]['by_category']}", file=sys.stderr, flush=True)
        if args.cuda and args.lengths:
            feed = {"input_ids": np.zeros((args.batch[0], args.lengths[0]), dtype=np.int64)}
            res["node_providers"] = {
                f"{tag(v, L)}/{name}": node_providers(p, lb, providers, feed, None)
                for (v, L), fs in files.items() for name, (p, lb) in fs.items()}
            print(f"node providers: {json.dumps(res['node_providers'])}", file=sys.stderr, flush=True)
            if args.gpu_profile:
                res["gpu_profile"] = gpu_profile(files, providers, dense.config.vocab_size, args)
    if args.cuda and not args.export_only and args.kernel_parity:
        import ctypes

        if lib and hasattr(ctypes.CDLL(str(lib)), "simba_cuda_selective_scan"):
            res["cuda_kernels"] = cuda_kernel_parity(lib, args)
        else:
            res["cuda_kernels_skipped"] = "no library built with --cuda (kernels/build.sh --cuda, carry kernels/build)"
            print(res["cuda_kernels_skipped"], file=sys.stderr)
    res["loadavg_end"] = _loadavg()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    md = markdown(res)
    out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
