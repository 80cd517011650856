"""Does a layer's speed depend on the sequence length being a multiple of 16? (issue 6)

Pruned layers run on k_l = ceil(r_l·L) tokens, arbitrary integers, where the dense model runs on L = 2048.
Triton specialises integer arguments divisible by 16 and cuBLAS picks tiles by shape, so a length that is
not aligned may cost more per token. This times one Mamba-1.4B mixer (and its scan, score and in_proj
alone), bf16, at lengths around aligned values, and reports microseconds per token.

    PYTHONPATH=. python3 benchmarks/investigations/bench_alignment.py --out $OUT/alignment.json     # H200
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from simba_convert.model.config import MambaConfig
from simba_convert.model.mamba import MambaMixer
from simba_convert.ops.score import impact_score
from simba_convert.ops.scan import selective_scan

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for the shared helper `common`
from common import bench_ms, environment  # noqa: E402

LENGTHS = (2048, 2047, 2041, 2032, 1232, 1229, 1216, 1024, 1023)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None)
    ap.add_argument("--batches", default="1,4")
    args = ap.parse_args()
    cfg = MambaConfig(d_model=2048, n_layer=1, vocab_size=256)
    torch.manual_seed(0)
    with torch.device("cuda"):
        mixer = MambaMixer(cfg).to(torch.bfloat16).eval()
    rows = []
    print("| B | L | L % 16 | mixer µs/token | scan µs/token | score µs/token | in_proj µs/token |")
    print("|---|---|---|---|---|---|---|")
    with torch.no_grad():
        for bsz in (int(b) for b in args.batches.split(",")):
            for L in LENGTHS:
                h = torch.randn(bsz, L, cfg.d_model, device="cuda", dtype=torch.bfloat16)
                _, it = mixer(h, return_internals=True)
                x, z = mixer.in_proj(h).chunk(2, dim=-1)
                scan_args = (it.u, it.dt, it.A, it.Bm, it.Cm, mixer.D.float(), z, it.delta_bias, True)
                args_, fused = it.score_inputs()
                bench = {"return_mode": "mean", "warmup": 5, "rep": 30}
                t = {
                    "mixer": bench_ms(lambda: mixer(h), **bench),
                    "scan": bench_ms(lambda: selective_scan(*scan_args), **bench),
                    "score": bench_ms(lambda: impact_score(*args_, criterion="last", **fused), **bench),
                    "in_proj": bench_ms(lambda: mixer.in_proj(h), **bench),
                }
                per_tok = {k: v * 1e3 / (bsz * L) for k, v in t.items()}
                rows.append({"B": bsz, "L": L, "ms": t, "us_per_token": per_tok})
                print(f"| {bsz} | {L} | {L % 16} | {per_tok['mixer']:.4f} | {per_tok['scan']:.4f} | "
                      f"{per_tok['score']:.4f} | {per_tok['in_proj']:.4f} |", flush=True)
    meta = environment("cuda")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
