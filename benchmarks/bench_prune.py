"""Prefill time of the token-pruned model against the dense model with the same kernels (issue 6).

Random weights at Mamba-1.4B shapes (d 2048, 48 layers), bf16, L = 2048 and 8192; budgets 0.8 / 0.6 / 0.4
with the `linear` schedule solved for each budget (protect 64, criterion `last`). The ideal speed-up is
1/budget. All rows come from one run, so the ratios compare like with like.

    PYTHONPATH=. python3 benchmarks/bench_prune.py --out $OUT/prune.json      # H200
    PYTHONPATH=. python3 benchmarks/bench_prune.py --smoke                    # CPU, tiny
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from simba_convert.model.config import MambaConfig
from simba_convert.model.mamba import MambaLM
from simba_convert.pruning import schedules
from simba_convert.pruning.flops import flops_report
from simba_convert.pruning.model import PrunedMambaLM
from simba_convert.pruning.spec import PruningSpec


def timeit(fn, device, warmup=2, reps=5):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            torch.cuda.synchronize()
            times.append(a.elapsed_time(b))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def parse_cases(spec: str) -> list[tuple[int, int]]:
    """"4x2048,1x8192" -> [(4, 2048), (1, 8192)]."""
    try:
        return [tuple(int(v) for v in case.lower().split("x")) for case in spec.split(",")]
    except ValueError:
        raise SystemExit(f"--cases must look like 4x2048,1x8192, got {spec!r}") from None


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--cases", default="4x2048,1x8192", help="comma-separated BxL prefill shapes (GPU)")
    args = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    if args.smoke:
        cfg, dtype, cases = MambaConfig(d_model=64, n_layer=4, vocab_size=512), torch.float32, [(1, 256)]
    else:
        cfg, dtype, cases = MambaConfig(d_model=2048, n_layer=48, vocab_size=50277), torch.bfloat16, parse_cases(args.cases)
    torch.manual_seed(0)
    model = MambaLM(cfg).to(dev, dtype).eval()
    P = 64 if not args.smoke else 16
    rows = []
    for bsz, L in cases:
        ids = torch.randint(0, cfg.vocab_size, (bsz, L), device=dev)
        dense_ms = timeit(lambda: model(ids, num_last=P), dev)
        rows.append({"B": bsz, "L": L, "budget": 1.0, "flops_ratio": 1.0, "ms": dense_ms, "speedup": 1.0, "variant": "dense"})
        for budget in (0.8, 0.6, 0.4):
            r = schedules.schedule_for_budget("linear", cfg, budget, L, P)
            pm = PrunedMambaLM(model, PruningSpec(r, protect=P))
            ms = timeit(lambda: pm(ids, num_last=P), dev)
            fr = flops_report(cfg, r, L, P).ratio
            rows.append({"B": bsz, "L": L, "budget": budget, "flops_ratio": fr, "ms": ms,
                         "speedup": dense_ms / ms, "ideal": 1 / fr, "variant": "pruned-linear"})
    meta = {"device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu", "torch": torch.__version__,
            "dtype": str(dtype), "config": cfg.to_dict(), "protect": P, "date": time.strftime("%Y-%m-%d")}
    print("| B | L | budget | FLOPs ratio | prefill ms | speed-up | ideal |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['B']} | {r['L']} | {r['budget']} | {r['flops_ratio']:.3f} | {r['ms']:.2f} | {r['speedup']:.2f}x | {r.get('ideal', 1.0):.2f}x |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
