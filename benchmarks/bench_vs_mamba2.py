"""Mamba-2 prefill speed against mamba_ssm's `Mamba2` (issue 17): mamba_ssm (its Triton SSD, causal_conv1d and
gated-norm kernels, the fused path it runs by default), our dense Mamba-2 and our pruned one at budgets 0.8 / 0.6 /
0.4, on each of our backends, eager and CUDA graph.

All models hold the same random weights at the Mamba-2 2.7B shape (d 2560, 64 layers, d_state 128, head dim 64,
one group, vocab 50288), bf16; every forward returns the logits of the last P = 64 positions. One process, one run.
mamba_ssm is optional: its rows are recorded as skipped when it does not import.

    PYTHONPATH=.:benchmarks python3 benchmarks/bench_vs_mamba2.py --out $OUT/vs_mamba2.json     # H200
    PYTHONPATH=.:benchmarks python3 benchmarks/bench_vs_mamba2.py --smoke                      # CPU, seconds

`--profile` adds, per case, the GPU time of one graph replay by stage (benchmarks/kernel_profile.py); `--ssd` a
table of one layer's SSD scan: ours at chunk lengths 32 / 64 / 128 against mamba_ssm's `mamba_chunk_scan_combined`
(chunk 256, as its checkpoints say), graph replays, with the floor (reading x, dt, B, C and writing y once at the
copy bandwidth measured in the same run).
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

import bench_vs_mamba as bvm
import torch
from common import copy_bandwidth, error_line, rel_rms  # the shared helper (this folder is on sys.path)

from simba_convert.arch.mamba2.config import Mamba2Config
from simba_convert.arch.mamba2.model import Mamba2LM
from simba_convert.pruning import schedules
from simba_convert.pruning.model import PrunedMambaLM
from simba_convert.pruning.spec import PruningSpec

SHAPE_2P7B = dict(d_model=2560, n_layer=64, vocab_size=50277, pad_vocab_size_multiple=16)


def build_models(cfg: Mamba2Config, dev, dtype):
    """Our Mamba2LM and mamba_ssm's MambaLMHeadModel(Mamba2) holding a copy of its weights (a string if absent)."""
    torch.manual_seed(0)
    with torch.device(dev):
        ours = Mamba2LM(cfg)
    ours = ours.to(dtype).eval()
    impls = {}
    try:
        from mamba_ssm.models.config_mamba import MambaConfig as MC
        from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel

        m = MambaLMHeadModel(MC(**cfg.to_mamba_ssm()), device=dev, dtype=dtype).eval()
        m.load_state_dict(ours.state_dict(), strict=True)
        impls["mamba_ssm"] = lambda ids, m=m: m(ids, num_last_tokens=bvm.P).logits
    except Exception as e:
        impls["mamba_ssm"] = f"skipped: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return ours, impls


def profile_rows(cfg, ours, impls, bsz, L, budgets, backend, dev, everies=(1,)) -> list[dict]:
    """GPU time of one graph replay by stage, for mamba_ssm, our dense and our pruned models (`linear` stepped over
    each K in `everies`)."""
    from kernel_profile import breakdown

    ids = torch.randint(0, cfg.vocab_size, (bsz, L), device=dev)
    ours.set_backend(backend)
    models = [(n, f) for n, f in impls.items() if callable(f)]
    models.append(("ours-dense", lambda x: ours(x, num_last=bvm.P)))
    for b in budgets:
        for k in everies:
            r = schedules.schedule_for_budget("linear", cfg, b, L, bvm.P, every=k)
            pm = PrunedMambaLM(ours, PruningSpec(r, protect=bvm.P))
            models.append((f"ours-pruned-{b}" + (f"-every{k}" if k > 1 else ""), lambda x, pm=pm: pm(x, num_last=bvm.P)))
    rows = []
    for name, fn in models:
        g = bvm.Captured(fn, ids)
        for _ in range(2):
            g()
        r = dict(B=bsz, L=L, model=name, backend=backend, mode="graph", **breakdown(g))
        r["kernels"] = dict(list(r["kernels"].items())[:25])
        rows.append(r)
        print(json.dumps({k: v for k, v in r.items() if k != "kernels"}), flush=True)
        for k, (ms, n) in list(r["kernels"].items())[:12]:
            print(f"  {ms:8.3f} {n:6.0f}  {k[:110]}", flush=True)
        del g
        torch.cuda.empty_cache()
    return rows


@contextlib.contextmanager
def exact_dot(prec: str):
    """Run the SSD kernels' fp32-exact dots in `prec` ("ieee" or "tf32x3") inside the block."""
    from simba_convert.ops.ssd import triton as ssd_triton

    old, ssd_triton.EXACT_DOT = ssd_triton.EXACT_DOT, prec
    try:
        yield
    finally:
        ssd_triton.EXACT_DOT = old


def ssd_rows(cfg, bsz, L, dev, bw, sweep: bool = False) -> list[dict]:
    """One layer's SSD scan at B×L: ours by chunk length against mamba_ssm's, with the memory floor."""
    from triton.testing import do_bench_cudagraph

    from simba_convert.ops.ssd.triton import ssd_scan_triton

    g = torch.Generator(dev).manual_seed(0)
    H, P, G, N = cfg.nheads, cfg.headdim, cfg.ngroups, cfg.d_state
    bf = dict(device=dev, dtype=torch.bfloat16)
    x = torch.randn(bsz, L, H, P, generator=g, device=dev).to(**bf)
    dt = torch.randn(bsz, L, H, generator=g, device=dev).to(**bf)
    B, C = (torch.randn(bsz, L, G, N, generator=g, device=dev).to(**bf) for _ in range(2))
    A = -torch.rand(H, generator=g, device=dev) * 4 - 0.5
    D, bias = torch.rand(H, generator=g, device=dev), torch.randn(H, generator=g, device=dev) - 1
    floor = (x.numel() * 2 + dt.numel() + B.numel() + C.numel()) * 2 / bw * 1e3
    runs = [(f"ours chunk {T}", lambda T=T: ssd_scan_triton(x, dt, A, B, C, D=D, dt_bias=bias, dt_softplus=True,
                                                             chunk_size=T)) for T in (32, 64, 128)]
    if sweep:
        from simba_convert.ops.ssd.triton import LaunchConfig, ssd_forward

        def exact_run(T, c, prec):  # the fp32-exact dots (as under autograd) in precision `prec`
            def run():
                with exact_dot(prec):
                    return ssd_forward(x, dt, A, B, C, D, bias, True, None, False, T, c, exact=True)[0]
            return run

        for prec in ("ieee", "tf32x3"):
            runs.append((f"ours chunk 64 block_p 64 warps 4 fp32 dots {prec} (as under autograd)",
                         exact_run(64, LaunchConfig(block_p=64, num_warps=4), prec)))
        for T, bp, w in ((64, 32, 4), (64, 64, 8), (64, 32, 8), (128, 32, 4), (128, 32, 8), (128, 64, 8), (128, 16, 4)):
            cfg_ = LaunchConfig(block_p=bp, num_warps=w)
            runs.append((f"ours chunk {T} block_p {bp} warps {w}", lambda T=T, c=cfg_: ssd_forward(
                x, dt, A, B, C, D, bias, True, None, False, T, c, exact=False)[0]))
    try:
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

        runs.append(("mamba_ssm chunk 256", lambda: mamba_chunk_scan_combined(
            x, dt, A, B, C, chunk_size=256, D=D, dt_bias=bias, dt_softplus=True)))
    except Exception as e:
        print(f"mamba_ssm's SSD skipped: {type(e).__name__}: {e}", flush=True)
    rows = []
    ref = None
    for name, fn in runs:
        row = dict(B=bsz, L=L, kernel=name, floor_ms=floor)
        try:
            out = fn().float()
            ref = out if ref is None else ref
            row["rel_rms_vs_ours_32"] = rel_rms(out, ref)
            row["ms"] = do_bench_cudagraph(fn, rep=50, return_mode="median")
        except Exception as e:
            row["error"] = error_line(e)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if sweep:
        rows += ssd_train_rows(x, dt, A, B, C, D, bias, floor)
    return rows


def ssd_train_rows(x, dt, A, B, C, D, bias, floor) -> list[dict]:
    """Forward + backward through autograd (fp32 A, D, dt_bias with gradients: the fine-tune's case), eager
    (`do_bench`), with the fp32-exact dots in each precision; gradients compared with the ieee run's."""
    from triton.testing import do_bench

    from simba_convert.ops.ssd import ssd_scan

    leaves = [t.detach().clone().requires_grad_(True) for t in (x, dt, A, B, C, D, bias)]
    dy = torch.randn_like(x)

    @torch.enable_grad()  # the benchmark's main runs under no_grad
    def step():
        for t in leaves:
            t.grad = None
        xx, dd, aa, bb, cc, dsk, bi = leaves
        y = ssd_scan(xx, dd, aa, bb, cc, D=dsk, dt_bias=bi, dt_softplus=True, chunk_size=64, backend="triton")
        y.backward(dy)
        return torch.cat([t.grad.float().flatten() for t in leaves])

    rows, ref = [], None
    for prec in ("ieee", "tf32x3"):
        row = dict(B=x.shape[0], L=x.shape[1], kernel=f"ours chunk 64 forward+backward (autograd) dots {prec}",
                   floor_ms=3 * floor)
        try:
            with exact_dot(prec):
                g = step()
                ref = g if ref is None else ref
                row["rel_rms_vs_ours_32"] = rel_rms(g, ref)  # here: the gradients against the ieee run's
                row["ms"] = do_bench(step, rep=50, return_mode="median")
        except Exception as e:
            row["error"] = error_line(e)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def ssd_table(rows) -> str:
    out = ["| B×L | SSD scan (one 2.7B layer) | ms (graph) | floor ms | / floor | rel RMS vs ours chunk 32 |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        ms, fl = r.get("ms"), r["floor_ms"]
        t, ratio = ("-", "-") if ms is None else (f"{ms:.3f}", f"{ms / fl:.1f}x")
        err = r.get("rel_rms_vs_ours_32")
        out.append(f"| {r['B']}×{r['L']} | {r['kernel']} | {t} | {fl:.3f} | {ratio} | "
                   f"{r.get('error') if err is None else f'{err:.1e}'} |")
    return "\n".join(out)


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="1x2048,4x2048,1x8192,4x8192")
    ap.add_argument("--budgets", default="0.8,0.6,0.4")
    ap.add_argument("--prune-every", default="1", help="K values for the pruned rows: linear stepped over K layers")
    ap.add_argument("--backends", default="triton,auto")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--profile", default="", help="BxL cases to profile by stage (graph replay)")
    ap.add_argument("--profile-backend", default="auto")
    ap.add_argument("--profile-every", default="1", help="K values of the profiled pruned models")
    ap.add_argument("--ssd", default="", help="BxL cases for the SSD kernel table")
    ap.add_argument("--ssd-sweep", action="store_true", help="also time launch configs of our SSD forward")
    ap.add_argument("--skip-models", action="store_true", help="only the profile")
    ap.add_argument("--smoke", action="store_true", help="tiny model on the CPU: checks the script runs")
    ap.add_argument("--out", default=None, help="JSON path; a .md table is written beside it")
    args = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    parse = bvm.parse_cases
    if args.smoke:
        cfg, dtype, cases, backends = Mamba2Config(d_model=64, n_layer=3, vocab_size=512, headdim=16, d_state=16,
                                                   chunk_size=32), torch.float32, [(1, 256)], ["reference"]
        bvm.P = 16
    else:
        cfg, dtype = Mamba2Config(**SHAPE_2P7B), torch.bfloat16
        cases, backends = parse(args.cases), args.backends.split(",")
    budgets = [float(b) for b in ("0.8,0.6" if args.smoke else args.budgets).split(",")]
    meta = bvm.run_meta("bench_vs_mamba2.py", dev, dtype, cfg)
    ours, impls = build_models(cfg, dev, dtype)
    if args.smoke:
        impls = {}
    rows, prows, srows = [], [], []
    if dev.type == "cuda" and args.ssd:
        bw = copy_bandwidth(dev)
        meta["copy_bandwidth_TBps"] = bw / 1e12
        for bsz, L in parse(args.ssd):
            srows += ssd_rows(cfg, bsz, L, dev, bw, args.ssd_sweep)
    if not args.skip_models:
        for bsz, L in cases:
            rows += bvm.model_rows(cfg, ours, impls, bsz, L, budgets, backends, args.reps, dev, dev.type == "cuda",
                                   hf=False, everies=[int(k) for k in args.prune_every.split(",")])
            if args.out:  # a run stopped at a time limit keeps its finished cases
                Path(args.out).write_text(json.dumps({"meta": dict(meta, partial=True), "rows": rows, "ssd": srows,
                                                      "profile": prows}, indent=1))
    if dev.type == "cuda":
        for bsz, L in parse(args.profile):
            prows += profile_rows(cfg, ours, impls, bsz, L, budgets, args.profile_backend, dev,
                                  [int(k) for k in args.profile_every.split(",")])
    table = bvm.markdown(meta, rows, [], [])
    if srows:
        table += "\n\n" + ssd_table(srows)
    if prows:
        from kernel_profile import table as stage_table

        table += "\n\n" + stage_table(prows)
    print(table)
    if args.out:
        Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows, "ssd": srows, "profile": prows}, indent=1))
        Path(args.out).with_suffix(".md").write_text(table + "\n")


if __name__ == "__main__":
    main()
