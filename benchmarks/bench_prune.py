"""Prefill time of the token-pruned model against the dense model with the same kernels (issue 6).

Random weights at Mamba-1.4B shapes (d 2048, 48 layers), bf16, L = 2048 and 8192; budgets 0.8 / 0.6 / 0.4
with the `linear` schedule solved for each budget (protect 64, criterion `last`). The ideal speed-up is
1/budget. All rows come from one run, so the ratios compare like with like.

Each model is timed eagerly (`ms`; `host_ms` is the time the host takes to enqueue one forward: when it
is close to `ms`, launches, not kernels, set the pace) and, on CUDA, replayed as one CUDA graph
(`graph_ms`, `simba_convert.model.cuda_graph.GraphedForward`), which removes the per-launch host cost.

    PYTHONPATH=. python3 benchmarks/bench_prune.py --out $OUT/prune.json      # H200
    PYTHONPATH=. python3 benchmarks/bench_prune.py --smoke                    # CPU, tiny
"""

from __future__ import annotations

import argparse
import json

import torch
from common import environment, timeit

from simba_convert.model.config import MambaConfig
from simba_convert.model.mamba import MambaLM
from simba_convert.pruning import schedules
from simba_convert.pruning.flops import flops_report
from simba_convert.pruning.model import PrunedMambaLM
from simba_convert.pruning.spec import PruningSpec


def graph_ms(model, bsz, L, P, ids, device) -> float | None:
    """Median ms of one CUDA-graph replay of model(ids, num_last=P); None off CUDA."""
    if device.type != "cuda":
        return None
    from simba_convert.model.cuda_graph import GraphedForward

    graphed = GraphedForward(model, bsz, L, num_last=P)
    eager = model(ids, num_last=P)
    replay = graphed(ids)
    if not torch.equal(replay, eager):
        raise SystemExit("CUDA graph replay differs from the eager forward")
    return timeit(lambda: graphed(ids), device)[0]  # the graph's memory pool is freed when it goes out of scope


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
    with torch.device(dev):  # initialise on the device: 1.4B parameters take long on the host
        model = MambaLM(cfg)
    model = model.to(dtype).eval()
    P = 64 if not args.smoke else 16
    rows = []
    for bsz, L in cases:
        ids = torch.randint(0, cfg.vocab_size, (bsz, L), device=dev)
        dense_ms, dense_host = timeit(lambda: model(ids, num_last=P), dev)
        dense_graph = graph_ms(model, bsz, L, P, ids, dev)
        rows.append({"B": bsz, "L": L, "budget": 1.0, "flops_ratio": 1.0, "ms": dense_ms, "host_ms": dense_host,
                     "graph_ms": dense_graph, "speedup": 1.0, "graph_speedup": 1.0, "variant": "dense"})
        for budget in (0.8, 0.6, 0.4):
            r = schedules.schedule_for_budget("linear", cfg, budget, L, P)
            pm = PrunedMambaLM(model, PruningSpec(r, protect=P))
            ms, host = timeit(lambda: pm(ids, num_last=P), dev)
            g = graph_ms(pm, bsz, L, P, ids, dev)
            fr = flops_report(cfg, r, L, P).ratio
            rows.append({"B": bsz, "L": L, "budget": budget, "flops_ratio": fr, "ms": ms, "host_ms": host,
                         "graph_ms": g, "speedup": dense_ms / ms, "graph_speedup": dense_graph / g if g else None,
                         "ideal": 1 / fr, "variant": "pruned-linear"})
    meta = {**environment(dev), "dtype": str(dtype), "config": cfg.to_dict(), "protect": P}
    print("| B | L | budget | FLOPs ratio | eager ms | host ms | speed-up | graph ms | graph speed-up | ideal |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        g = "- | -" if r["graph_ms"] is None else f"{r['graph_ms']:.2f} | {r['graph_speedup']:.2f}x"
        print(f"| {r['B']} | {r['L']} | {r['budget']} | {r['flops_ratio']:.3f} | {r['ms']:.2f} | {r['host_ms']:.2f} | "
              f"{r['speedup']:.2f}x | {g} | {r.get('ideal', 1.0):.2f}x |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
