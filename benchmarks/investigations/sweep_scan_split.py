"""Forward kinds of the Triton selective scan at the shapes where few programs run (issue 15: B=1).

The 1.4B layer (D 4096, N 16), bf16 activations, D skip, z gate, delta bias + softplus, no checkpoints (an
inference forward). Times `chunk`, `seq` and `split` with several segment counts, and what `auto` picks;
every output is compared with the chunk kernel's. With mamba_ssm importable, its `selective_scan_fn` on the
same data (channels-first copies) is timed too. `--graph` times CUDA-graph replays (as the model runs them);
`--extra` adds split variants with 64 channels a program and other pipeline depths; `--softplus libdevice` runs
the kernels with the softplus before b/ this change (log through libdevice's logf and a division), to compare the
two in one session (run the script twice).

    PYTHONPATH=. python3 benchmarks/investigations/sweep_scan_split.py --out $OUT/sweep_scan_split.json     # H200
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

import triton
import triton.language as tl

from simba_convert.ops.scan import triton_seq
from simba_convert.ops.scan.triton import LaunchConfig, resolve_forward, scan_forward

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for the shared helper `common`
from common import bench_ms, environment  # noqa: E402

CASES = ((1, 2048), (1, 8192), (1, 1229), (2, 2048), (4, 2048))
SPLITS = (2, 4, 8, 16, 32)


@triton.jit
def libdevice_delta_act(x, SOFTPLUS: tl.constexpr):
    """The softplus the kernels used before: log1p(exp(x)) through `tl.log` (libdevice logf) and a division."""
    if SOFTPLUS:
        e = tl.exp(tl.minimum(x, 20.0))
        w = 1.0 + e
        lp = tl.where(w == 1.0, e, tl.log(w) * e / (w - 1.0))
        return tl.where(x > 20.0, x, lp), tl.where(x > 20.0, 1.0, e / w)
    return x, tl.full(x.shape, 1.0, tl.float32)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None)
    ap.add_argument("--cases", default=None, help="BxL list (default: the module's CASES)")
    ap.add_argument("--graph", action="store_true", help="time CUDA-graph replays (do_bench_cudagraph)")
    ap.add_argument("--extra", action="store_true", help="also split with 64 channels a program, and stages 2 / 4")
    ap.add_argument("--softplus", choices=("series", "libdevice"), default="series")
    args = ap.parse_args()
    if args.softplus == "libdevice":
        triton_seq.delta_act = libdevice_delta_act
    cases = [tuple(int(v) for v in c.split("x")) for c in args.cases.split(",")] if args.cases else CASES
    dev = torch.device("cuda")
    D, N = 4096, 16
    g = torch.Generator(dev).manual_seed(0)
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception:
        selective_scan_fn = None
    rows = []
    for bsz, L in cases:
        r = lambda *s, sc=1.0: (torch.randn(*s, device=dev, generator=g) * sc).to(torch.bfloat16)  # noqa: E731
        u, dt, z = r(bsz, L, D), r(bsz, L, D, sc=0.5), r(bsz, L, D)
        Bm, Cm = r(bsz, L, N), r(bsz, L, N)
        A = -torch.exp(torch.randn(D, N, device=dev, generator=g) * 0.5)
        Dsk, bias = torch.randn(D, device=dev, generator=g), torch.randn(D, device=dev, generator=g) - 3.0
        args_ = (u, dt, A, Bm, Cm, Dsk, z, bias, True, None, False, False)
        configs = [("chunk", LaunchConfig(fwd_kind="chunk")), ("seq", LaunchConfig(fwd_kind="seq", fwd_block_d=32,
                                                                                  fwd_warps=1, fwd_stages=3))]
        configs += [(f"split{s}", LaunchConfig(fwd_kind="split", fwd_block_d=32, fwd_warps=1, fwd_stages=3,
                                               fwd_splits=s)) for s in SPLITS]
        if args.extra:
            configs += [(f"split{s}/bd64", LaunchConfig(fwd_kind="split", fwd_block_d=64, fwd_warps=1, fwd_stages=3,
                                                       fwd_splits=s)) for s in (16, 32, 64)]
            configs += [(f"split16/stages{k}", LaunchConfig(fwd_kind="split", fwd_block_d=32, fwd_warps=1, fwd_stages=k,
                                                           fwd_splits=16)) for k in (2, 4)]
        configs.append(("auto", LaunchConfig()))
        ref = scan_forward(*args_, config=configs[0][1])[0].float()
        for name, cfg in configs:
            y = scan_forward(*args_, config=cfg)[0].float()
            err = float((y - ref).norm() / ref.norm())
            ms = bench_ms(lambda: scan_forward(*args_, config=cfg), graph=args.graph)
            chosen = resolve_forward(cfg, bsz, D, L, False)
            row = dict(B=bsz, L=L, kind=name, resolved=f"{chosen.fwd_kind}/{chosen.fwd_splits}", ms=ms,
                       rel_vs_chunk=err, softplus=args.softplus, graph=args.graph)
            rows.append(row)
            print(json.dumps(row), flush=True)
        if selective_scan_fn is not None:
            ut, dtt, zt = (t.transpose(1, 2).contiguous() for t in (u, dt, z))
            Bt, Ct = Bm.transpose(1, 2).contiguous(), Cm.transpose(1, 2).contiguous()
            ms = bench_ms(lambda: selective_scan_fn(ut, dtt, A, Bt, Ct, Dsk, zt, bias, True), graph=args.graph)
            y = selective_scan_fn(ut, dtt, A, Bt, Ct, Dsk, zt, bias, True).transpose(1, 2).float()
            rows.append(dict(B=bsz, L=L, kind="mamba_ssm", ms=ms, rel_vs_chunk=float((y - ref).norm() / ref.norm())))
            print(json.dumps(rows[-1]), flush=True)
    print("| B×L | kind | resolved | ms | rel vs chunk |\n|---|---|---|---|---|")
    for r_ in rows:
        print(f"| {r_['B']}×{r_['L']} | {r_['kind']} | {r_.get('resolved', '-')} | {r_['ms']:.3f} | {r_['rel_vs_chunk']:.1e} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({**environment(dev), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
