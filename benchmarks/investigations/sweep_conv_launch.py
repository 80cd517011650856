"""Launch configs of the Triton causal conv1d + SiLU (issue 15) at the 1.4B layer (D 4096, K 4), bf16, x the
first half of in_proj's token-major output [B, L, 2D] as the model passes it. Each config's output is checked
against the default's; with causal_conv1d importable, `causal_conv1d_fn` on the channels-first layout mamba_ssm
uses is timed beside it. Floor: x read once and u written once over the copy bandwidth measured here.

    PYTHONPATH=. python3 benchmarks/investigations/sweep_conv_launch.py --out $OUT/sweep_conv.json     # H200
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import torch

from simba_convert.ops.conv1d.triton import LaunchConfig, causal_conv1d_triton

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for the shared helper `common`
from common import bench_ms, copy_bandwidth, environment  # noqa: E402

CASES = ((1, 2048), (4, 2048), (16, 2048), (1, 8192))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    dev = torch.device("cuda")
    D, K = 4096, 4
    g = torch.Generator(dev).manual_seed(0)
    bw = copy_bandwidth(dev)
    try:
        from causal_conv1d import causal_conv1d_fn
    except Exception:
        causal_conv1d_fn = None
    rows = []
    for bsz, L in CASES:
        xz = torch.randn(bsz, L, 2 * D, device=dev, generator=g).to(torch.bfloat16)
        x = xz[..., :D]
        w = (torch.randn(D, K, device=dev, generator=g) * 0.5).to(torch.bfloat16)
        b = torch.randn(D, device=dev, generator=g).to(torch.bfloat16)
        ref = causal_conv1d_triton(x, w, b).float()
        floor = 2 * bsz * L * D * 2 / bw * 1e3
        for bl, bd, nw in itertools.product((8, 16, 32, 64), (64, 128, 256), (2, 4, 8)):
            cfg = LaunchConfig(block_l=bl, block_d=bd, num_warps=nw)
            out = causal_conv1d_triton(x, w, b, config=cfg).float()
            row = dict(B=bsz, L=L, block_l=bl, block_d=bd, num_warps=nw, floor_ms=floor,
                       equal_default=bool(torch.equal(out, ref)),
                       ms=bench_ms(lambda: causal_conv1d_triton(x, w, b, config=cfg)))
            rows.append(row)
        if causal_conv1d_fn is not None:
            xt = xz.reshape(bsz * L, 2 * D).t().contiguous().view(2 * D, bsz, L).transpose(0, 1)[:, :D]
            rows.append(dict(B=bsz, L=L, kernel="causal_conv1d_fn", floor_ms=floor,
                             ms=bench_ms(lambda: causal_conv1d_fn(xt, w, b, activation="silu"))))
        case = [r for r in rows if r["B"] == bsz and r["L"] == L and "block_l" in r]
        best = min(case, key=lambda r: r["ms"])
        dflt = next(r for r in case if (r["block_l"], r["block_d"], r["num_warps"]) == (32, 128, 4))
        theirs = next((r["ms"] for r in rows if r["B"] == bsz and r["L"] == L and "kernel" in r), None)
        print(f"{bsz}x{L}: default {dflt['ms']:.4f} ms, best {best['ms']:.4f} ms "
              f"({best['block_l']}, {best['block_d']}, {best['num_warps']}), causal_conv1d_fn {theirs}, "
              f"floor {floor:.4f} ms, all equal: {all(r['equal_default'] for r in case)}", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({**environment(dev), "copy_bandwidth_TBps": bw / 1e12, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
