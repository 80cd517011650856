"""Where the GPU time of one forward goes: kernels by stage, from torch.profiler (issue 15).

`breakdown(fn)` profiles a few calls of `fn` (a CUDA-graph replay or an eager forward; kernels launched from a
graph are recorded one by one) and returns the GPU time per call of every kernel, grouped into the stages of a
Mamba layer by kernel name. The sum of the kernel times against the call's wall time tells how much of a
forward is GPU idle time (launch gaps, host-bound stretches).

    PYTHONPATH=. python3 benchmarks/kernel_profile.py --out $OUT/kernel_profile.json   # H200, 1.4B shape
    PYTHONPATH=. python3 benchmarks/kernel_profile.py --smoke                          # CPU: runs the script
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import torch
from common import commit, versions  # the shared helper (this folder is on sys.path)

# (stage, substrings of the kernel name), first match wins; kernel names of ours, mamba_ssm's, cuBLAS and torch's.
STAGES = (
    ("memcpy", ("memcpy", "memset")),  # host <-> device copies (onnxruntime's between CPU and CUDA nodes)
    ("score", ("_last_kernel", "_global_kernel", "_delta_chunk_sums", "impact")),
    ("selection", ("_select_kept", "topk", "sort", "radix", "bitonic", "gatherTopK")),
    ("scan", ("scan", "_ssm_", "selective", "_chunk_outer", "_state_pass", "_chunk_cumsum", "_chunk_state",
              "_bmm_chunk")),  # Mamba-2's SSD kernels, ours and mamba_ssm's
    ("conv", ("conv1d", "_conv_", "causal_conv")),
    ("norm", ("rms_norm", "_norm_", "layer_norm", "_layer_norm")),
    ("matmul", ("gemm", "sm90_xmma", "cutlass", "nvjet", "gemv", "_mm_", "matmul")),
    ("gather/index", ("index", "gather", "scatter")),
    ("reduce", ("reduce_kernel", "amax")),
    ("copy/elementwise", ("elementwise", "copy", "vectorized", "fill", "cat", "unrolled")),
)


def stage_of(name: str) -> str:
    low = name.lower()
    for stage, keys in STAGES:
        if any(k.lower() in low for k in keys):
            return stage
    return "other"


def breakdown(fn, calls: int = 3) -> dict:
    """{'kernels': {name: (ms per call, launches per call)}, 'stages': {stage: ms per call}, 'kernel_ms': total,
    'wall_ms': wall time per call while profiled}; fn is warmed up by the caller."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
        wall = (time.perf_counter() - t0) * 1e3 / calls
    per = defaultdict(lambda: [0.0, 0])
    for ev in prof.events():
        if ev.device_type == torch.autograd.DeviceType.CUDA and ev.device_time_total > 0:
            per[ev.name][0] += ev.device_time_total / 1e3 / calls
            per[ev.name][1] += 1
    kernels = {k: (v[0], v[1] / calls) for k, v in sorted(per.items(), key=lambda kv: -kv[1][0])}
    stages = defaultdict(float)
    for name, (ms, _) in kernels.items():
        stages[stage_of(name)] += ms
    return dict(kernels=kernels, stages=dict(sorted(stages.items(), key=lambda kv: -kv[1])),
                kernel_ms=sum(v[0] for v in kernels.values()), wall_ms=wall)


def table(rows: list[dict]) -> str:
    stages = sorted({s for r in rows for s in r["stages"]}, key=lambda s: [x[0] for x in STAGES].index(s)
                    if s in [x[0] for x in STAGES] else 99)
    out = ["| case | model | mode | wall ms | kernels ms | " + " | ".join(stages) + " |",
           "|---" * (5 + len(stages)) + "|"]
    for r in rows:
        out.append(f"| {r['B']}×{r['L']} | {r['model']} | {r['mode']} | {r['wall_ms']:.2f} | {r['kernel_ms']:.2f} | "
                   + " | ".join(f"{r['stages'].get(s, 0.0):.2f}" for s in stages) + " |")
    return "\n".join(out)


@torch.no_grad()
def main():
    import bench_vs_mamba as bvm

    from simba_convert.model.config import MambaConfig
    from simba_convert.pruning import schedules
    from simba_convert.pruning.model import PrunedMambaLM
    from simba_convert.pruning.spec import PruningSpec

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="1x2048,4x2048")
    ap.add_argument("--budgets", default="0.6")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--prune-every", default="1", help="K values: linear stepped over K layers (1: the paper's)")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.smoke or not torch.cuda.is_available():
        print("kernel_profile: needs CUDA (kernel times come from the GPU); nothing to do on the CPU")
        return
    dev = torch.device("cuda")
    cfg = MambaConfig(d_model=2048, n_layer=48, vocab_size=50277)
    ours, impls = bvm.build_models(cfg, dev, torch.bfloat16)
    ours.set_backend(args.backend)
    rows = []
    for case in args.cases.split(","):
        bsz, L = (int(v) for v in case.split("x"))
        ids = torch.randint(0, cfg.vocab_size, (bsz, L), device=dev)
        models = [("ours-dense", lambda x: ours(x, num_last=bvm.P))]
        if callable(impls.get("mamba_ssm")):
            models.insert(0, ("mamba_ssm", impls["mamba_ssm"]))
        for b in (float(v) for v in args.budgets.split(",")):
            for k in (int(v) for v in args.prune_every.split(",")):
                sched = schedules.schedule_for_budget("linear", cfg, b, L, bvm.P, every=k)
                pm = PrunedMambaLM(ours, PruningSpec(sched, protect=bvm.P))
                models.append((f"pruned-{b}" + (f"-every{k}" if k > 1 else ""), lambda x, pm=pm: pm(x, num_last=bvm.P)))
        for name, fn in models:
            g = bvm.Captured(fn, ids)
            for mode, call in (("graph", g), ("eager", lambda fn=fn: fn(ids))):
                for _ in range(2):
                    call()
                r = dict(B=bsz, L=L, model=name, mode=mode, **breakdown(call))
                r["kernels"] = dict(list(r["kernels"].items())[:40])
                rows.append(r)
                print(json.dumps({k: v for k, v in r.items() if k != "kernels"}), flush=True)
            del g
            torch.cuda.empty_cache()
    md = table(rows)
    print(md)
    for r in rows:
        print(f"\n{r['B']}x{r['L']} {r['model']} {r['mode']}: top kernels (ms per call, launches)")
        for k, (ms, n) in list(r["kernels"].items())[:15]:
            print(f"  {ms:8.3f} {n:6.0f}  {k[:110]}")
    if args.out:
        meta = dict(date=time.strftime("%Y-%m-%d"), device=torch.cuda.get_device_name(), torch=torch.__version__,
                    commit=commit(), backend=args.backend, **versions())
        Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
        Path(args.out).with_suffix(".md").write_text(md + "\n")


if __name__ == "__main__":
    main()
