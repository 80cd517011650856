"""Quality of stepped schedules (`--prune-every K`) against the paper's per-layer one, at equal FLOPs.

For each bundled model (mamba-tiny, mamba2-tiny), budget and K: the `linear` schedule stepped over K layers and the
calibrated one (the shipped search, its held-out fallback included), each solved to the budget; reported: the prune
points, the exact FLOPs ratio, KL(dense ‖ pruned) at the protected positions and perplexity there, on held-out text
windows that calibration never saw. The speed side (fewer layers score and select) is `bench_vs_mamba.py
--prune-every`.

    python3 benchmarks/bench_prune_every.py --out benchmarks/results/prune_every_cpu.json     # CPU, minutes
    python3 benchmarks/bench_prune_every.py --smoke                                          # seconds
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from common import ROOT, environment

import simba_convert
from simba_convert.calibrate import data as cdata
from simba_convert.calibrate.objective import KLObjective
from simba_convert.calibrate.search import calibrate, holdout_count
from simba_convert.pruning import schedules
from simba_convert.pruning.flops import flops_report


def rows_for(name: str, args) -> list[dict]:
    model, tok, _ = simba_convert.load_with_tokenizer(name, device="cpu", dtype="float32")
    L, P = args.seq_len, args.protect
    text, _ = cdata.read_calibration_text(None)
    calib = cdata.make_windows(cdata.encode(tok, text), args.samples, L, seed=0)
    n_hold = holdout_count(args.samples)
    search, hold = (KLObjective(model, w, P, batch_size=8) for w in (calib[n_hold:], calib[:n_hold]))
    valid_ids = cdata.encode(tok, Path(args.valid).read_text(encoding="utf-8"))
    test = KLObjective(model, cdata.make_windows(valid_ids, args.windows, L, seed=1), P, batch_size=8)
    cfg, rows = model.config, []
    for budget in args.budgets:
        for every in args.every:
            for schedule in ("linear", "calibrated"):
                t = time.perf_counter()
                if schedule == "linear":
                    r = schedules.schedule_for_budget("linear", cfg, budget, L, P, every=every)
                else:
                    r = calibrate(search, cfg, budget, L, P, max_evals=args.max_evals, holdout=hold, every=every).best.ratios
                ev = test(r)
                rows.append(dict(model=name, n_layer=cfg.n_layer, budget=budget, every=every, schedule=schedule,
                                 prune_points=schedules.prune_points(r), flops_ratio=flops_report(cfg, r, L, P).ratio,
                                 kl=ev.kl, ppl=math.exp(ev.nll), ratios=list(r), seconds=time.perf_counter() - t))
                print(json.dumps({k: v for k, v in rows[-1].items() if k != "ratios"}), flush=True)
    dense = test([1.0] * cfg.n_layer)
    rows.append(dict(model=name, n_layer=cfg.n_layer, budget=1.0, every=1, schedule="dense", prune_points=0,
                     flops_ratio=1.0, kl=dense.kl, ppl=math.exp(dense.nll), ratios=[1.0] * cfg.n_layer))
    return rows


def table(rows: list[dict]) -> str:
    out = ["| model | budget | K | schedule | prune points | FLOPs ratio | KL (held-out) | ppl (held-out) |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['model']} | {r['budget']:g} | {r['every']} | {r['schedule']} | {r['prune_points']} | "
                   f"{r['flops_ratio']:.3f} | {r['kl']:.4f} | {r['ppl']:.2f} |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="mamba-tiny,mamba2-tiny")
    ap.add_argument("--budgets", default="0.8,0.6,0.4")
    ap.add_argument("--every", default="1,2,4")
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--protect", type=int, default=64)
    ap.add_argument("--samples", type=int, default=16, help="calibration windows (a quarter held out, as the CLI)")
    ap.add_argument("--windows", type=int, default=32, help="held-out text windows for the reported KL / ppl")
    ap.add_argument("--max-evals", type=int, default=16)
    ap.add_argument("--valid", default=str(ROOT / ".data" / "corpus" / "valid.txt"))
    ap.add_argument("--smoke", action="store_true", help="one model, one budget, tiny sizes: checks the script runs")
    ap.add_argument("--out", default=None, help="JSON path; a .md table is written beside it")
    args = ap.parse_args()
    if args.smoke:
        args.models, args.budgets, args.every, args.seq_len, args.protect = "mamba-tiny", "0.6", "1,2", 128, 16
        args.samples, args.windows, args.max_evals = 4, 2, 4
        args.valid = str(cdata.bundled_calibration_path())
    args.budgets = [float(b) for b in args.budgets.split(",")]
    args.every = [int(k) for k in args.every.split(",")]
    torch.manual_seed(0)
    rows = [r for name in args.models.split(",") for r in rows_for(name, args)]
    meta = {**environment(torch.device("cpu")), "seq_len": args.seq_len, "protect": args.protect,
            "samples": args.samples, "windows": args.windows, "max_evals": args.max_evals}
    md = table(rows)
    print(md)
    if args.out:
        Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
        Path(args.out).with_suffix(".md").write_text(md + "\n")


if __name__ == "__main__":
    main()
