"""Prefill speed against what Mamba users run (issue 15): mamba_ssm, transformers with the CUDA kernels, our
dense model and our pruned model at budgets 0.8 / 0.6 / 0.4, on each of our backends, eager and CUDA graph;
then a per-kernel table against mamba_ssm / causal_conv1d and against the floor.

All models hold the same random weights at the Mamba-1.4B shape (d 2048, 48 layers, vocab 50280), bf16;
every forward returns the logits of the last P = 64 positions (the protected suffix). One process, one run:
the ratios compare like with like. mamba_ssm / causal_conv1d and transformers are optional: rows whose
package does not import are recorded as skipped.

    PYTHONPATH=. python3 benchmarks/bench_vs_mamba.py --out $OUT/vs_mamba.json            # H200
    PYTHONPATH=. python3 benchmarks/bench_vs_mamba.py --smoke                             # CPU, seconds

Logits check: each dense implementation against mamba_ssm's (relative RMS over the 64 positions), and each
pruned model's graph replay against its eager forward (bit-equal). The kernel table times one layer's
kernels (triton.testing.do_bench_cudagraph, median; plain do_bench also recorded) at the case's B×L; floors use the copy bandwidth measured in the
same run and the H200's special-function rate for exp2 (132 SMs × 16 per clock × 1.98 GHz).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from common import commit, copy_bandwidth, error_line, rel_rms, timeit, versions  # the shared helper (this folder is on sys.path)

from simba_convert.model.config import MambaConfig
from simba_convert.model.mamba import MambaLM
from simba_convert.pruning import schedules
from simba_convert.pruning.flops import flops_report
from simba_convert.pruning.model import PrunedMambaLM
from simba_convert.pruning.spec import PruningSpec

P = 64
SFU_EXP2_PER_S = 132 * 16 * 1.98e9


def time_ms(fn, reps: int, warmup: int = 1) -> tuple[float, float]:
    """(median device ms per call, median host ms to enqueue a call): bench_prune's timer."""
    return timeit(fn, torch.device("cuda" if torch.cuda.is_available() else "cpu"), warmup, reps)


class Captured:
    """fn(ids) captured once as a CUDA graph for one input shape; calling it replays (output overwritten)."""

    def __init__(self, fn, ids: torch.Tensor):
        self.ids = ids.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                fn(self.ids)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = fn(self.ids)

    def __call__(self):
        self.graph.replay()
        return self.out


def build_models(cfg: MambaConfig, dev, dtype):
    """Our MambaLM, and mamba_ssm's / transformers' models holding copies of the same weights (None if absent)."""
    torch.manual_seed(0)
    with torch.device(dev):
        ours = MambaLM(cfg)
    ours = ours.to(dtype).eval()
    impls = {}
    try:
        from mamba_ssm.models.config_mamba import MambaConfig as MC
        from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel

        mc = MC(d_model=cfg.d_model, n_layer=cfg.n_layer, vocab_size=cfg.vocab_size, ssm_cfg={"layer": "Mamba1"},
                rms_norm=True, residual_in_fp32=True, fused_add_norm=True, pad_vocab_size_multiple=8)
        m = MambaLMHeadModel(mc, device=dev, dtype=dtype).eval()
        m.load_state_dict(ours.state_dict(), strict=True)
        impls["mamba_ssm"] = lambda ids, m=m: m(ids, num_last_tokens=P).logits
        impls["mamba_ssm"].model = m
    except Exception as e:
        impls["mamba_ssm"] = f"skipped: {error_line(e)}"
    try:
        from transformers import MambaConfig as HC, MambaForCausalLM
        from transformers.utils.import_utils import is_causal_conv1d_available, is_mamba_ssm_available

        from simba_convert.io.layout import layout_name

        if not (is_mamba_ssm_available() and is_causal_conv1d_available()):
            raise RuntimeError("transformers would take its PyTorch path (no mamba_ssm / causal_conv1d)")
        hc = HC(vocab_size=cfg.padded_vocab_size, hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layer,
                state_size=cfg.d_state, conv_kernel=cfg.d_conv, expand=cfg.expand, use_cache=False,
                residual_in_fp32=True)
        with torch.device(dev):
            hf = MambaForCausalLM(hc)
        hf = hf.to(dtype).eval()
        hf.load_state_dict({layout_name(k, "hf"): v for k, v in ours.state_dict().items()}, strict=False)
        impls["transformers"] = lambda ids, hf=hf: hf(input_ids=ids, use_cache=False, logits_to_keep=P).logits
    except Exception as e:
        impls["transformers"] = f"skipped: {error_line(e)}"
    return ours, impls


def model_rows(cfg, ours, impls, bsz, L, budgets, backends, reps, dev, graphs: bool, hf: bool = True,
               everies=(1,)) -> list[dict]:
    ids = torch.randint(0, cfg.vocab_size, (bsz, L), device=dev, generator=torch.Generator(dev).manual_seed(1))
    rows, ref = [], None
    runs = [(name, "-", 1.0, fn) for name, fn in impls.items() if hf or name != "transformers"]
    for backend in backends:
        runs.append(("ours-dense", backend, 1.0, lambda x: ours(x, num_last=P)))
        for budget in budgets:
            for every in everies:  # `linear` stepped over `every` layers (--prune-every); 1 is the paper's
                r = schedules.schedule_for_budget("linear", cfg, budget, L, P, every=every)
                pm = PrunedMambaLM(ours, PruningSpec(r, protect=P))
                name = f"ours-pruned-{budget}" + (f"-every{every}" if every > 1 else "")
                runs.append((name, backend, budget, lambda x, pm=pm: pm(x, num_last=P), r))
    for name, backend, budget, fn, *sched in runs:
        row = dict(B=bsz, L=L, impl=name, backend=backend, budget=budget)
        rows.append(row)
        if isinstance(fn, str):
            row["skipped"] = fn
            continue
        try:
            if backend != "-":
                ours.set_backend(backend)
            with torch.inference_mode():
                out = fn(ids).float()
                if name == "mamba_ssm":
                    ref = out
                if ref is not None and budget == 1.0:
                    row["rel_rms_vs_mamba_ssm"] = rel_rms(out, ref)
                row["ms"], row["host_ms"] = time_ms(lambda: fn(ids), reps)
                if graphs and dev.type == "cuda":
                    g = Captured(fn, ids)
                    replay = g().float()
                    row["graph_equal_eager"] = bool(torch.equal(replay, out))
                    row["graph_ms"] = time_ms(g, reps)[0]
                    del g
            if budget != 1.0:
                row["flops_ratio"] = flops_report(cfg, sched[0], L, P).ratio
                row["prune_points"] = schedules.prune_points(sched[0])
        except Exception as e:
            row["error"] = error_line(e)
        finally:
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        print(json.dumps(row), flush=True)
    base = {k: next((r.get(k) for r in rows if r["impl"] == "mamba_ssm" and k in r), None) for k in ("ms", "graph_ms")}
    for r in rows:
        for k, s in (("ms", "vs_mamba_ssm"), ("graph_ms", "graph_vs_mamba_ssm")):
            if base[k] and r.get(k):
                r[s] = base[k] / r[k]
        dense = next((d for d in rows if d["impl"] == "ours-dense" and d["backend"] == r["backend"]), None)
        for k, s in (("ms", "vs_ours_dense"), ("graph_ms", "graph_vs_ours_dense")):
            if dense and dense.get(k) and r.get(k):
                r[s] = dense[k] / r[k]
    return rows


def generation_rows(cfg, ours, impls, bsz, L, budgets, backends, new: int, dev) -> list[dict]:
    """Time to first token (prefill + first token) and decode tokens/s of greedy generation: mamba_ssm's
    `generate(cg=True)` against ours (dense and pruned prefill, CUDA-graph decoding steps; the prefill replays
    the graph generate() captures for a prompt shape it has seen before)."""
    ids = torch.randint(0, cfg.vocab_size, (bsz, L), device=dev, generator=torch.Generator(dev).manual_seed(3))
    runs = []
    m = getattr(impls.get("mamba_ssm"), "model", None)
    if m is not None:
        runs.append(("mamba_ssm", "-", lambda n: m.generate(ids, L + n, cg=True)))
    for backend in backends:
        runs.append(("ours-dense", backend, lambda n: ours.generate(ids, n)))
        for budget in budgets:
            pm = PrunedMambaLM(ours, PruningSpec(schedules.schedule_for_budget("linear", cfg, budget, L, P), protect=P))
            runs.append((f"ours-pruned-{budget}", backend, lambda n, pm=pm: pm.generate(ids, n)))
    rows = []
    for name, backend, fn in runs:
        row = dict(B=bsz, L=L, impl=name, backend=backend, new_tokens=new)
        try:
            if backend != "-":
                ours.set_backend(backend)
            fn(new)  # compiles kernels, captures the step graph
            fn(new)  # a prompt shape seen twice: generate() captures its prefill graph
            t1 = time_ms(lambda: fn(1), 3, warmup=0)[0]
            tn = time_ms(lambda: fn(new), 3, warmup=0)[0]
            row.update(ttft_ms=t1, decode_tok_s=bsz * (new - 1) / ((tn - t1) * 1e-3))
        except Exception as e:
            row["error"] = error_line(e)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def kernel_rows(cfg, bsz, L, dev, bw) -> list[dict]:
    """One layer's kernels at the 1.4B layer shape: ours against mamba_ssm / causal_conv1d and the floor.

    `*_ms` is the median CUDA-graph replay of the op (what a graphed forward pays), `*_eager_ms` the plain
    do_bench median (with the host's launch path, which dominates small shapes)."""
    from triton.testing import do_bench, do_bench_cudagraph

    from simba_convert.model import mixer_cuda
    from simba_convert.ops.conv1d import causal_conv1d
    from simba_convert.ops.score import impact_score
    from simba_convert.ops.rms_norm import add_rms_norm
    from simba_convert.ops.scan import selective_scan
    from simba_convert.pruning.select import gather_rows, select_kept_dense_rows, select_kept_dense_rows_ref

    d, D, N, K = cfg.d_model, cfg.d_inner, cfg.d_state, cfg.d_conv
    bf = torch.bfloat16
    g = torch.Generator(dev).manual_seed(2)
    xz = torch.randn(bsz, L, 2 * D, device=dev, dtype=bf, generator=g)  # in_proj's output, token-major
    x, z = xz.chunk(2, dim=-1)
    w = torch.randn(D, K, device=dev, dtype=bf, generator=g) * 0.5
    cb = torch.randn(D, device=dev, dtype=bf, generator=g)
    u = torch.randn(bsz, L, D, device=dev, dtype=bf, generator=g)
    dt = torch.randn(bsz, L, D, device=dev, dtype=bf, generator=g) * 0.5 - 2
    Bm = torch.randn(bsz, L, N, device=dev, dtype=bf, generator=g)
    Cm = torch.randn(bsz, L, N, device=dev, dtype=bf, generator=g)
    A = -torch.rand(D, N, device=dev, generator=g) * 4 - 0.5
    Dskip = torch.randn(D, device=dev, generator=g)
    bias = torch.randn(D, device=dev, generator=g) * 0.5
    hid = torch.randn(bsz, L, d, device=dev, dtype=bf, generator=g)
    res = torch.randn(bsz, L, d, device=dev, dtype=torch.float32, generator=g)
    nw = torch.ones(d, device=dev, dtype=bf)
    sc = torch.rand(bsz, L, device=dev, generator=g)
    T = bsz * L
    exp_floor = T * D * N / SFU_EXP2_PER_S * 1e3
    floors = {
        "scan": max((4 * T * D * 2 + 2 * T * N * 2) / bw * 1e3, exp_floor),
        "conv": 2 * T * D * 2 / bw * 1e3,
        "add_rms_norm": T * d * (2 + 4 + 2 + 4) / bw * 1e3,
        "score": max(2 * T * D * 2 / bw * 1e3, exp_floor),
        "selection": 2 * T * d * 0.9 * (2 + 4) / bw * 1e3,
    }
    ours = {
        "scan": lambda: selective_scan(u, dt, A, Bm, Cm, Dskip, z, bias, True, backend="triton"),
        "conv": lambda: causal_conv1d(x, w, cb, activation="silu", backend="triton"),
        "add_rms_norm": lambda: add_rms_norm(hid, res, nw, 1e-5, True, backend="triton"),
        "score": lambda: impact_score(u, dt, A, Bm, Cm, criterion="last", delta_bias=bias, delta_softplus=True,
                                      backend="triton"),
        "selection": lambda: gather_rows(select_kept_dense_rows(sc, P, int(0.9 * L)), hid, res),
        "selection (torch topk + sort)": lambda: gather_rows(select_kept_dense_rows_ref(sc.clone(), P, int(0.9 * L)),
                                                             hid, res),
    }
    floors["selection (torch topk + sort)"] = floors["selection"]
    theirs = {}
    if mixer_cuda.available():
        from mamba_ssm.ops.triton.layer_norm import rms_norm_fn as norm_fn

        conv_fn, scan_fn = mixer_cuda.kernels()[:2]
        xzt = xz.reshape(T, 2 * D).t().contiguous().view(2 * D, bsz, L).transpose(0, 1)  # [B, 2D, L] as mixer_cuda
        xt, zt = xzt.chunk(2, dim=1)
        ut, dtt = u.transpose(1, 2).contiguous(), dt.transpose(1, 2).contiguous()
        Bt, Ct = Bm.transpose(1, 2).contiguous(), Cm.transpose(1, 2).contiguous()
        theirs = {
            "scan": lambda: scan_fn(ut, dtt, A, Bt, Ct, Dskip, zt, bias, True),
            "conv": lambda: conv_fn(xt, w, cb, activation="silu"),
            "add_rms_norm": lambda: norm_fn(hid, nw, None, residual=res, prenorm=True, residual_in_fp32=True, eps=1e-5),
        }
        # Our score from the channels-first tensors of the cuda backend: strided views, and token-major copies
        # first (what mixer_cuda hands the score).
        ours["score (cuda layout, strided)"] = lambda: impact_score(
            ut.transpose(1, 2), dtt.transpose(1, 2), A, Bt.transpose(1, 2), Ct.transpose(1, 2), criterion="last",
            delta_bias=bias, delta_softplus=True, backend="triton")
        ours["score (cuda layout, copy + score)"] = lambda: impact_score(
            ut.transpose(1, 2).contiguous(), dtt.transpose(1, 2).contiguous(), A, Bm, Cm, criterion="last",
            delta_bias=bias, delta_softplus=True, backend="triton")
        floors["score (cuda layout, strided)"] = floors["score (cuda layout, copy + score)"] = floors["score"]
    rows = []
    for name, fn in ours.items():
        row = dict(B=bsz, L=L, kernel=name, floor_ms=floors[name])
        try:
            # Graph replay is what the model runs under; a plain do_bench at B=1 times the host's launch path.
            row["ours_ms"] = do_bench_cudagraph(fn, rep=50, return_mode="median")
            row["ours_eager_ms"] = do_bench(fn, return_mode="median")
            if name in theirs:
                row["mamba_ms"] = do_bench_cudagraph(theirs[name], rep=50, return_mode="median")
                row["mamba_eager_ms"] = do_bench(theirs[name], return_mode="median")
        except Exception as e:
            row["error"] = error_line(e)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def markdown(meta, rows, krows, grows) -> str:
    out = [f"{meta['date']} · {meta['device']} · torch {meta['torch']} · triton {meta.get('triton')} · "
           f"mamba_ssm {meta.get('mamba_ssm')} · causal_conv1d {meta.get('causal_conv1d')} · "
           f"transformers {meta.get('transformers')} · commit {meta.get('commit')}", "",
           "| B×L | impl | backend | eager ms | graph ms | vs mamba_ssm (eager / graph) | vs our dense (eager / graph) "
           "| logits rel RMS vs mamba_ssm |", "|---|---|---|---|---|---|---|---|"]

    def f(v, fmt="{:.2f}"):
        return "-" if v is None else fmt.format(v)

    for r in rows:
        if "skipped" in r or "error" in r:
            out.append(f"| {r['B']}×{r['L']} | {r['impl']} | {r['backend']} | {r.get('skipped') or r.get('error')} "
                       "| | | | |")
            continue
        out.append(f"| {r['B']}×{r['L']} | {r['impl']} | {r['backend']} | {f(r.get('ms'))} | {f(r.get('graph_ms'))} | "
                   f"{f(r.get('vs_mamba_ssm'), '{:.2f}x')} / {f(r.get('graph_vs_mamba_ssm'), '{:.2f}x')} | "
                   f"{f(r.get('vs_ours_dense'), '{:.2f}x')} / {f(r.get('graph_vs_ours_dense'), '{:.2f}x')} | "
                   f"{f(r.get('rel_rms_vs_mamba_ssm'), '{:.1e}')} |")
    if krows:
        out += ["", "| B×L | kernel (one 1.4B layer) | ours ms (graph) | mamba_ssm / causal_conv1d ms (graph) "
                "| ours / theirs | floor ms | ours / floor |", "|---|---|---|---|---|---|---|"]
        for r in krows:
            o, t, fl = r.get("ours_ms"), r.get("mamba_ms"), r["floor_ms"]
            out.append(f"| {r['B']}×{r['L']} | {r['kernel']} | {f(o, '{:.3f}')} | {f(t, '{:.3f}')} | "
                       f"{f(o / t if o and t else None, '{:.2f}x')} | {fl:.3f} | {f(o / fl if o else None, '{:.1f}x')} |")
    if grows:
        out += ["", f"| B×L | impl | backend | time to first token ms | decode tokens/s ({grows[0]['new_tokens']} new) |",
                "|---|---|---|---|---|"]
        for r in grows:
            out.append(f"| {r['B']}×{r['L']} | {r['impl']} | {r['backend']} | {f(r.get('ttft_ms'))} | "
                       f"{f(r.get('decode_tok_s'), '{:.0f}')} | {r.get('error', '')}")
    return "\n".join(out)


def parse_cases(spec: str) -> list[tuple[int, int]]:
    """"1x2048,4x8192" -> [(1, 2048), (4, 8192)]."""
    return [tuple(int(v) for v in c.split("x")) for c in spec.split(",") if c]


def run_meta(script: str, dev, dtype, cfg) -> dict:
    """What a results file of these comparisons records about its run."""
    return dict(date=time.strftime("%Y-%m-%d"), device=torch.cuda.get_device_name() if dev.type == "cuda" else
                platform.processor() or "cpu", torch=torch.__version__, dtype=str(dtype), protect=P,
                config=cfg.to_dict(), commit=commit(), command=f"benchmarks/{script} " + " ".join(
                    a for a in __import__("sys").argv[1:] if not a.startswith("/")), **versions())


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="1x2048,4x2048,16x2048,1x8192,4x8192,16x8192")
    ap.add_argument("--kernel-cases", default="1x2048,4x2048,16x2048,1x8192")
    ap.add_argument("--budgets", default="0.8,0.6,0.4")
    ap.add_argument("--prune-every", default="1", help="K values for the pruned rows: linear stepped over K layers")
    ap.add_argument("--backends", default="triton,cuda")
    ap.add_argument("--hf-cases", default=None, help="BxL cases that also time transformers (default: all)")
    ap.add_argument("--gen-cases", default="1x2048,4x2048", help="BxL prompts for the generation table")
    ap.add_argument("--gen-tokens", type=int, default=129)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--no-graphs", action="store_true")
    ap.add_argument("--skip-models", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="tiny model on the CPU: checks the script runs")
    ap.add_argument("--out", default=None, help="JSON path; a .md table is written beside it")
    args = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    parse = parse_cases
    if args.smoke:
        cfg, dtype, cases, kcases = MambaConfig(d_model=64, n_layer=4, vocab_size=512), torch.float32, [(1, 256)], []
        backends = ["reference"]
        global P
        P = 16
    else:
        cfg, dtype = MambaConfig(d_model=2048, n_layer=48, vocab_size=50277), torch.bfloat16
        cases, kcases, backends = parse(args.cases), parse(args.kernel_cases), args.backends.split(",")
    budgets = [float(b) for b in args.budgets.split(",")]
    meta = run_meta("bench_vs_mamba.py", dev, dtype, cfg)
    rows, krows, grows = [], [], []
    if not args.skip_models:
        ours, impls = build_models(cfg, dev, dtype)
        if args.smoke:
            impls = {}
        for bsz, L in cases:
            hf = args.hf_cases is None or (bsz, L) in parse(args.hf_cases)
            rows += model_rows(cfg, ours, impls, bsz, L, budgets, backends, args.reps, dev, not args.no_graphs, hf,
                               everies=[int(k) for k in args.prune_every.split(",")])
            save(args.out, meta, rows, krows, grows, partial=True)
        for bsz, L in ([] if args.smoke else parse(args.gen_cases)):
            grows += generation_rows(cfg, ours, impls, bsz, L, budgets, backends, args.gen_tokens, dev)
            save(args.out, meta, rows, krows, grows, partial=True)
        del ours, impls
    if dev.type == "cuda" and kcases:
        torch.cuda.empty_cache()
        bw = copy_bandwidth(dev)
        meta["copy_bandwidth_TBps"] = bw / 1e12
        for bsz, L in kcases:
            krows += kernel_rows(cfg, bsz, L, dev, bw)
            save(args.out, meta, rows, krows, grows, partial=True)
    print(save(args.out, meta, rows, krows, grows, partial=False))


def save(out, meta, rows, krows, grows, partial: bool) -> str:
    """Write the results so far (a run stopped at a time limit keeps its finished cases; `partial` marks it)."""
    meta = dict(meta, partial=True) if partial else meta
    table = markdown(meta, rows, krows, grows)
    if out:
        Path(out).write_text(json.dumps({"meta": meta, "rows": rows, "kernels": krows, "generation": grows}, indent=1))
        Path(out).with_suffix(".md").write_text(table + "\n")
    return table


if __name__ == "__main__":
    main()
