"""Impact-score kernels vs the PyTorch reference vs torch.compile, against the H200 floor (SIMBA.md §3).

    PYTHONPATH=. python3 benchmarks/bench_impact.py --out $OUT/bench_impact.json     # H200, ~3-5 min
    PYTHONPATH=. python3 benchmarks/bench_impact.py --smoke --out /tmp/impact.json   # CPU, interpreter, < 60 s

Shapes are Mamba-130m and Mamba-1.4b layers (B=8, L=2048, D=1536/4096, N=16; u, delta, B, C in bf16, A fp32).
The floor is max(bytes / copy bandwidth, exponentials / SFU rate): the bandwidth is measured here with a
device-to-device copy; the SFU rate is assumed (SFU_RATE below). The kernel is timed with its default
config and with every config of a small sweep, each checked against the reference.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

if "--smoke" in sys.argv:  # triton decides interpreter vs compiler when it is first imported
    os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402
import triton  # noqa: E402
from common import bench_ms, copy_bandwidth, environment, median_ms  # noqa: E402

from simba_convert.ops.score import naive as isc  # noqa: E402
from simba_convert.ops.score.triton import default_config, impact_score_triton  # noqa: E402

# H200 SXM: 132 SMs × 16 ex2 per clock per SM (MUFU) × 1.98 GHz boost. An assumption, not a measurement.
SFU_RATE = 132 * 16 * 1.98e9
SHAPES = {"mamba-130m": (8, 2048, 1536, 16), "mamba-1.4b": (8, 2048, 4096, 16)}
SMOKE_SHAPES = {"tiny": (2, 24, 40, 16)}


def sweep_configs(criterion: str, smoke: bool, quick: bool = False) -> list[dict]:
    if quick and not smoke:  # a lease-sized sweep: the neighbourhood of the default configs
        if criterion == "last":
            return [dict(block_t=bt, block_d=bd, chunks=ch, num_warps=nw) for bt in (16, 32) for bd in (16, 32, 64)
                    for ch in (1, 4) for nw in (2, 4, 8) if bt * bd * 16 <= 16384]
        return [dict(block_d=bd, num_warps=nw) for bd in (16, 32, 64) for nw in (1, 2)]
    if criterion == "last":
        if smoke:
            return [dict(block_t=16, block_d=32, chunks=1, num_warps=4), dict(block_t=8, block_d=16, chunks=2, num_warps=2)]
        return [
            dict(block_t=bt, block_d=bd, chunks=ch, num_warps=nw)
            for bt in (8, 16, 32) for bd in (16, 32, 64) for ch in (1, 4) for nw in (2, 4, 8)
            if bt * bd * 16 <= 16384
        ]
    if smoke:
        return [dict(block_d=32, num_warps=2), dict(block_d=16, num_warps=1)]
    return [dict(block_d=bd, num_warps=nw) for bd in (8, 16, 32, 64, 128) for nw in (1, 2, 4)]


def timer(device: str, smoke: bool):
    """fn -> median milliseconds. On CUDA triton's do_bench (flushes L2 between runs); on the CPU one warm-up
    call, then the median of 5 (smoke: 1)."""
    if device == "cuda":
        return lambda fn: bench_ms(fn, warmup=25, rep=100)
    return lambda fn: median_ms(fn, device, reps=1 if smoke else 5, warmup=1)


def make_inputs(bsz, L, D, N, device):
    g = torch.Generator(device=device).manual_seed(0)
    u = torch.randn(bsz, L, D, device=device, generator=g).bfloat16()
    delta = torch.nn.functional.softplus(torch.randn(bsz, L, D, device=device, generator=g) - 2).bfloat16()
    A = -torch.exp(torch.rand(D, N, device=device, generator=g) * 2.77)  # [-16, -1], Mamba's init range
    B = torch.randn(bsz, L, N, device=device, generator=g).bfloat16()
    C = torch.randn(bsz, L, N, device=device, generator=g).bfloat16()
    return u, delta, A, B, C


def _global_block(G, A, u, delta, delta_next, B, C):
    """One block of the reverse scan for torch.compile (a 2048-step Python loop cannot be compiled whole):
    G [B, D, N]; u, delta, delta_next [B, l, D]; B, C [B, l, N] -> (G before the block, scores [B, l])."""
    u, delta, delta_next, B, C = (t.float() for t in (u, delta, delta_next, B, C))
    scores = []
    for i in reversed(range(u.shape[1])):
        G = C[:, i, None, :] + torch.exp(delta_next[:, i, :, None] * A) * G
        scores.append((u[:, i] * delta[:, i] * torch.einsum("bdn,bn->bd", G, B[:, i])).abs().amax(-1))
    return G, torch.stack(scores[::-1], dim=1)


def compiled_global(block: int = 16):
    step = torch.compile(_global_block, dynamic=False)

    def run(u, delta, A, B, C):
        bsz, L, D = u.shape
        delta_next = torch.cat([delta[:, 1:], torch.zeros_like(delta[:, :1])], dim=1)
        G = torch.zeros(bsz, D, A.shape[1], device=u.device)
        out = []
        for s in reversed(range(0, L, block)):
            e = min(L, s + block)
            G, sc = step(G, A, u[:, s:e], delta[:, s:e], delta_next[:, s:e], B[:, s:e], C[:, s:e])
            out.append(sc)
        return torch.cat(out[::-1], dim=1)

    return run


def floor_ms(bsz, L, D, N, bw) -> dict:
    read = 2 * bsz * L * D * 2 + 2 * bsz * L * N * 2 + D * N * 4  # u, delta, B, C (bf16), A (fp32)
    write = bsz * L * 4
    exps = bsz * L * D * N
    t_bytes, t_exp = (read + write) / bw * 1e3, exps / SFU_RATE * 1e3
    return dict(bytes=read + write, exps=exps, bytes_ms=t_bytes, exp_ms=t_exp, floor_ms=max(t_bytes, t_exp))


def rel_err(out, ref) -> float:
    fin = torch.isfinite(ref)
    return float((out[fin] - ref[fin]).abs().max() / ref[fin].abs().max())


def bench_case(name, shape, criterion, device, ms, bw, smoke, quick=False) -> dict:
    bsz, L, D, N = shape
    x = make_inputs(*shape, device)
    ref_fn = isc.last_score_ref if criterion == "last" else isc.global_score_ref
    ref = ref_fn(*x)
    row = dict(shape=name, B=bsz, L=L, D=D, N=N, criterion=criterion, **floor_ms(*shape, bw))
    row["reference_ms"] = ms(lambda: ref_fn(*x))
    if smoke:
        row["compile_ms"] = None  # torch.compile is measured on the GPU only
    else:
        comp = torch.compile(ref_fn) if criterion == "last" else compiled_global()
        comp(*x)
        row["compile_ms"] = ms(lambda: comp(*x))
    configs = []
    for cfg in [default_config(criterion, bsz * triton.cdiv(D, 32))] + sweep_configs(criterion, smoke, quick):
        out = impact_score_triton(*x, criterion=criterion, config=cfg)
        again = impact_score_triton(*x, criterion=criterion, config=cfg)
        t = ms(lambda: impact_score_triton(*x, criterion=criterion, config=cfg))
        configs.append(dict(config=cfg, ms=t, rel_err=rel_err(out, ref), deterministic=bool(torch.equal(out, again))))
    row["kernel_default"] = configs[0]
    ok = [c for c in configs[1:] if c["rel_err"] <= 1e-5 and c["deterministic"]]
    row["kernel_best"] = min(ok, key=lambda c: c["ms"]) if ok else None
    row["sweep"] = configs[1:]
    row["fused_softplus"] = fused_softplus_case(x, criterion, row["kernel_best"], ms, ref_fn)
    n_dblk = triton.cdiv(D, row["kernel_best"]["config"]["block_d"] if ok else 32)
    row["partial_buffer_bytes"] = 2 * bsz * n_dblk * L * 4  # written by the kernel, read by amax
    return row


def fused_softplus_case(x, criterion, best, ms, ref_fn) -> dict:
    """The pruned model's call: raw bf16 dt + fp32 bias, softplus formed in the kernel, against materialising
    delta = softplus(dt + bias) first (one more [B, L, D] fp32 write and read) and scoring that."""
    u, _, A, B, C = x
    g = torch.Generator(device=u.device).manual_seed(1)
    raw = (torch.randn(u.shape, device=u.device, generator=g) - 2).bfloat16()
    bias = torch.randn(u.shape[-1], device=u.device, generator=g) * 0.5
    cfg = best["config"] if best else None
    fused = lambda: impact_score_triton(u, raw, A, B, C, criterion=criterion, config=cfg,  # noqa: E731
                                        delta_bias=bias, delta_softplus=True)
    delta = torch.nn.functional.softplus(torch.add(raw, bias))
    split = lambda: impact_score_triton(u, torch.nn.functional.softplus(torch.add(raw, bias)), A, B, C,  # noqa: E731
                                        criterion=criterion, config=cfg)
    out = fused()
    return dict(config=cfg, fused_ms=ms(fused), materialised_ms=ms(split),
                softplus_ms=ms(lambda: torch.nn.functional.softplus(torch.add(raw, bias))),
                rel_err=rel_err(out, ref_fn(u, delta, A, B, C)), deterministic=bool(torch.equal(out, fused())))


def fmt(v, nd=3):
    return "—" if v is None else f"{v:.{nd}f}"


def markdown(rows) -> str:
    lines = [
        "| layer | criterion | floor ms (bytes / exp) | reference ms | compile ms | kernel default ms | kernel best ms | best config | best / floor | reference / best |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        best = r["kernel_best"]
        b = best["ms"] if best else None
        lines.append(
            f"| {r['shape']} | {r['criterion']} | {fmt(r['floor_ms'])} ({fmt(r['bytes_ms'])} / {fmt(r['exp_ms'])}) | "
            f"{fmt(r['reference_ms'], 2)} | {fmt(r['compile_ms'], 2)} | {fmt(r['kernel_default']['ms'])} | {fmt(b)} | "
            f"{best['config'] if best else '—'} | {fmt(b / r['floor_ms'] if b else None, 2)} | "
            f"{fmt(r['reference_ms'] / b if b else None, 1)} |"
        )
    lines += ["", "| layer | criterion | softplus then score ms (softplus alone) | fused softplus ms | rel err | deterministic |",
              "|---|---|---|---|---|---|"]
    for r in rows:
        f = r["fused_softplus"]
        lines.append(f"| {r['shape']} | {r['criterion']} | {fmt(f['materialised_ms'])} ({fmt(f['softplus_ms'])}) | "
                     f"{fmt(f['fused_ms'])} | {f['rel_err']:.1e} | {f['deterministic']} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="JSON results path")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU under TRITON_INTERPRET=1")
    ap.add_argument("--quick", action="store_true", help="a small config sweep (fits a short GPU lease)")
    args = ap.parse_args()
    device = "cpu" if args.smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: no CUDA device (use --smoke for the CPU check)")
    ms = timer(device, args.smoke)
    bw = copy_bandwidth(device, 2 * ((1 << 28) if device == "cuda" else (1 << 22)), ms)  # bf16 elements
    rows = []
    for name, shape in (SMOKE_SHAPES if args.smoke else SHAPES).items():
        for criterion in ("last", "global"):
            rows.append(bench_case(name, shape, criterion, device, ms, bw, args.smoke, args.quick))
            print(f"{name} {criterion}: done", file=sys.stderr, flush=True)
    result = dict(
        **environment(device),
        smoke=args.smoke,
        copy_bandwidth_Bps=bw,
        sfu_rate_per_s=SFU_RATE,
        sfu_rate_assumption="132 SMs x 16 ex2/clk/SM x 1.98 GHz (H200 SXM boost), not measured",
        rows=rows,
    )
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=2)
    os.replace(tmp, args.out)
    print(f"copy bandwidth {bw / 1e9:.1f} GB/s; SFU rate assumed {SFU_RATE / 1e12:.2f} T exp/s\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()
