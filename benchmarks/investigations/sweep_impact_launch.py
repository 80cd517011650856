"""Launch configs of the `last` impact kernel at the shapes a pruned 1.4B forward scores (issue 6).

A pruned layer scores B × k tokens, k between the protected suffix and L, so the launch has B·⌈D/32⌉
programs over sequences shorter than bench_impact.py's B=8, L=2048. This sweeps the sequence chunking
(more programs, one extra pass for the per-chunk sums) and warps per program at such shapes, with raw bf16
dt and the fused softplus as the model calls it. Every config's scores are checked against the default's.

    PYTHONPATH=. python3 benchmarks/investigations/sweep_impact_launch.py --out $OUT/sweep.json    # H200
    PYTHONPATH=. python3 benchmarks/investigations/sweep_impact_launch.py --smoke                   # CPU, interpreter
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

if "--smoke" in sys.argv:
    os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402

from simba_convert.ops.score.triton import default_config, impact_score_triton  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for the shared helper `common`
from common import bench_ms, elapsed_ms, environment  # noqa: E402

CASES = ((1, 2048), (1, 1229), (1, 8192), (4, 2048), (4, 1229), (16, 1229))


def inputs(bsz, L, D, N, dev, g):
    def r(*s, scale=1.0):
        return (torch.randn(*s, device=dev, generator=g) * scale).to(torch.bfloat16)

    u, dt = r(bsz, L, D), r(bsz, L, D, scale=0.5)
    Bm, Cm = r(bsz, L, N), r(bsz, L, N)
    A = -torch.exp(torch.randn(D, N, device=dev, generator=g) * 0.5)
    bias = torch.randn(D, device=dev, generator=g) - 3.0
    return (u, dt, A, Bm, Cm), dict(delta_bias=bias, delta_softplus=True)


def time_ms(fn, dev) -> float:
    if dev.type == "cuda":
        return bench_ms(fn, graph=True, rep=40)  # graph replay: the host's launch path is not the kernel's time
    return elapsed_ms(fn, dev)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None)
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    dev = torch.device("cpu" if args.smoke else "cuda")
    D, N = (64, 16) if args.smoke else (4096, 16)
    cases = ((1, 40), (2, 33)) if args.smoke else CASES
    chunk_opts = (1, 2) if args.smoke else (1, 4, 16, 32)
    warp_opts = (2,) if args.smoke else (1, 2, 4, 8)
    block_d_opts = (32,) if args.smoke else (16, 32, 64)
    g = torch.Generator(device=dev).manual_seed(0)
    rows = []
    print("| B | L | programs | default (chunks, warps) ms | best (chunks, warps) ms | speed-up |")
    print("|---|---|---|---|---|---|")
    for bsz, L in cases:
        args_, kw = inputs(bsz, L, D, N, dev, g)
        programs = bsz * -(-D // 32)
        dflt = default_config("last", programs, fused_softplus=True, seqlen=L)
        ref = impact_score_triton(*args_, criterion="last", **kw)
        case = {"B": bsz, "L": L, "programs": programs, "default": dflt, "configs": []}
        for ch, nw, bd in ((c, w, b) for c in chunk_opts for w in warp_opts for b in block_d_opts):
            cfg = dict(block_t=32, block_d=bd, chunks=ch, num_warps=nw)
            s = impact_score_triton(*args_, criterion="last", config=cfg, **kw)
            rel = float(((s - ref).abs() / ref.abs().clamp_min(1e-30)).max())
            ms = time_ms(lambda: impact_score_triton(*args_, criterion="last", config=cfg, **kw), dev)
            case["configs"].append({**cfg, "ms": ms, "max_rel_vs_default": rel})
        d_ms = time_ms(lambda: impact_score_triton(*args_, criterion="last", **kw), dev)
        case["default_ms"] = d_ms
        best = min(case["configs"], key=lambda c: c["ms"])
        case["best"] = best
        rows.append(case)
        print(f"| {bsz} | {L} | {programs} | ({dflt['chunks']}, {dflt['num_warps']}) {d_ms:.3f} | "
              f"({best['chunks']}, {best['num_warps']}) {best['ms']:.3f} | {d_ms / best['ms']:.2f}x |", flush=True)
        for c in case["configs"]:
            print(f"    chunks {c['chunks']:2d} warps {c['num_warps']} block_d {c['block_d']} -> {c['ms']:.3f} ms "
                  f"(rel {c['max_rel_vs_default']:.1e})")
    meta = {**environment(dev), "D": D, "N": N}
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
