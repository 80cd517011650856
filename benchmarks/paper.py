"""Simba's claims at our scale, in one run (issue 9; also the quality tables of issues 6 and 7).

Takes the trained family (`mamba-tiny`, 8 layers, and `family-l`, 16 layers; same data, tokenizer and
recipe) and measures, on held-out text and BIG-bench multiple choice:
  A. the dense models;
  B. FLOPs/quality curves of family-l for the schedules (calibrated, linear, uniform; criterion last);
  C. the same curves for each criterion (linear schedule);
  D. equal FLOPs: family-l pruned to mamba-tiny's FLOPs (calibrated, linear) against dense mamba-tiny;
  E. context length: perplexity of the last P positions as the context grows 512 -> 8192;
  F. prefill throughput of family-l, dense against pruned, at each budget (same run).
Writes results.json, paper.md (tables) and PNG plots into --out.

    PYTHONPATH=. python3 benchmarks/paper.py --small simba_convert/models/mamba-tiny --large .carry/family-l \
        --valid .data/corpus/valid.txt --ood .carry/eval/squadshifts_new_wiki.txt --tasks .carry/eval/bigbench --out $OUT/paper
    PYTHONPATH=. python3 benchmarks/paper.py --smoke --out /tmp/paper            # CPU, minutes, tiny numbers

Any pair of one family (same tokenizer; Mamba-1 or Mamba-2) runs the same way, labelled with `--names SMALL,LARGE`
(e.g. `--small /tmp/scaling/mamba2-m --large /tmp/scaling/mamba2-l --names mamba2-m,mamba2-l`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from common import environment, timeit

import simba_convert
from simba_convert.calibrate import data as cdata
from simba_convert.calibrate.objective import KLObjective
from simba_convert.calibrate.search import calibrate, holdout_count
from simba_convert.evaluate.bigbench import Task, find_tasks
from simba_convert.evaluate.multiple_choice import multiple_choice_accuracy
from simba_convert.evaluate.perplexity import perplexity_from_ids
from simba_convert.pruning import schedules
from simba_convert.pruning.flops import dense_flops, flops_report
from simba_convert.pruning.model import PrunedMambaLM
from simba_convert.pruning.spec import PruningSpec

L, P = 512, 64
SCHEDULES = ("calibrated", "linear", "uniform")
CRITERIA = ("last", "global", "delta", "output", "random")


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Bench:
    def __init__(self, args, dev):
        self.args, self.dev = args, dev
        self.small, self.tok, _ = simba_convert.load_with_tokenizer(args.small, device=dev, dtype=args.dtype)
        self.large = simba_convert.load(args.large, device=dev, dtype=args.dtype)
        enc = cdata.encode
        self.valid = enc(self.tok, Path(args.valid).read_text(encoding="utf-8"))
        self.ood = enc(self.tok, Path(args.ood).read_text(encoding="utf-8")) if args.ood else None
        text, _ = cdata.read_calibration_text(args.calib)
        windows = cdata.make_windows(enc(self.tok, text), args.samples, L, seed=0)
        # As the CLI: a quarter of the windows held out of the search to check its result (calibrate(holdout=)).
        n_hold = holdout_count(args.samples)
        self.calib_windows, self.holdout_windows = windows[n_hold:], windows[:n_hold]
        self.tasks = None
        if args.tasks:
            self.tasks = [Task(t.name, t.path, t.examples[: args.max_examples]) for t in find_tasks(args.tasks)]
        self.objectives = {}

    def ppl(self, model, ids, seq_len=L, windows=None):
        r = perplexity_from_ids(model, ids, seq_len=seq_len, protect=P, windows=windows, batch_size=self.args.batch,
                                progress=False)
        return r["perplexity"]

    def acc(self, model):
        if not self.tasks:
            return None
        res = multiple_choice_accuracy(model, self.tok, self.tasks, max_len=L, batch_size=self.args.batch, progress=False)
        mean = sum(v["acc"] for v in res.values()) / len(res)
        mean_norm = sum(v["acc_norm"] for v in res.values()) / len(res)
        return {"tasks": res, "mean_acc": mean, "mean_acc_norm": mean_norm}

    def quality(self, model, with_acc=False):
        out = {"valid_ppl": self.ppl(model, self.valid, windows=self.args.windows)}
        if self.ood is not None:
            out["ood_ppl"] = self.ppl(model, self.ood, windows=self.args.windows)
        if with_acc:
            out["acc"] = self.acc(model)
        return out

    def objective(self, dense, criterion, held_out=False):
        key = (id(dense), criterion, held_out)
        if key not in self.objectives:
            w = self.holdout_windows if held_out else self.calib_windows
            self.objectives[key] = KLObjective(dense, w, P, batch_size=self.args.batch, spec_kw={"criterion": criterion})
        return self.objectives[key]

    def ratios(self, dense, schedule, budget, criterion="last"):
        cfg = dense.config
        if schedule != "calibrated":
            return schedules.schedule_for_budget(schedule, cfg, budget, L, P, criterion)
        res = calibrate(self.objective(dense, criterion), cfg, budget, L, P, criterion=criterion, seed=0,
                        max_evals=self.args.max_evals, holdout=self.objective(dense, criterion, held_out=True))
        return res.best.ratios

    def pruned(self, dense, ratios, criterion="last"):
        return PrunedMambaLM(dense, PruningSpec(tuple(ratios), criterion=criterion, protect=P))


def fmt(x, nd=2):
    return "—" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def run(args):
    dev = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    b = Bench(args, dev)
    S, G = args.names  # the labels of the small and the large model in the results and tables
    R = {"meta": {**environment(dev), "L": L, "P": P, "dtype": args.dtype, "names": [S, G]}}
    fs, fl = dense_flops(b.small.config, L, P), dense_flops(b.large.config, L, P)
    equal = fs / fl
    log("A dense")
    R["dense"] = {S: {**b.quality(b.small, True), "flops": fs}, G: {**b.quality(b.large, True), "flops": fl}}
    save_partial(args, R)
    log("B schedules")
    R["schedules"] = []
    for budget in args.budgets:
        for s in SCHEDULES:
            r = b.ratios(b.large, s, budget)
            q = b.quality(b.pruned(b.large, r))
            R["schedules"].append({"budget": budget, "schedule": s, "ratios": list(r),
                                   "flops_ratio": flops_report(b.large.config, r, L, P).ratio, **q})
            log(f"  {budget} {s} {q}")
    save_partial(args, R)
    log("C criteria")
    R["criteria"] = []
    for budget in args.crit_budgets:
        for c in CRITERIA:
            r = schedules.schedule_for_budget("linear", b.large.config, budget, L, P, c)
            q = b.quality(b.pruned(b.large, r, c))
            R["criteria"].append({"budget": budget, "criterion": c, "flops_ratio": flops_report(b.large.config, r, L, P, c).ratio, **q})
    save_partial(args, R)
    log("D equal flops")
    R["equal_flops"] = {"budget": equal, f"{S} dense": R["dense"][S]}
    for s in ("calibrated", "linear"):
        r = b.ratios(b.large, s, equal)
        R["equal_flops"][f"{G} {s}"] = {**b.quality(b.pruned(b.large, r), True), "ratios": list(r),
                                             "flops": flops_report(b.large.config, r, L, P).sparse_total}
    save_partial(args, R)
    log("E context length")
    R["context"] = []
    ctx_ids = b.ood if b.ood is not None else b.valid
    half = {s: b.ratios(b.large, s, 0.5) for s in ("linear", "calibrated")}
    for n in args.contexts:
        row = {"L": n}
        for name, m in ((f"{S} dense", b.small), (f"{G} dense", b.large),
                        (f"{G} linear 0.5", b.pruned(b.large, half["linear"])),
                        (f"{G} calibrated 0.5", b.pruned(b.large, half["calibrated"]))):
            try:
                row[name] = b.ppl(m, ctx_ids, seq_len=n, windows=args.ctx_windows)
            except Exception as e:  # too little text for one window at this length
                row[name] = None
                row["note"] = str(e).splitlines()[0]
        R["context"].append(row)
        log(f"  {row}")
    save_partial(args, R)
    log("F speed")
    R["speed"] = speed(b, args)
    return R


def save_partial(args, R) -> None:
    """The sections finished so far, in <out>/results.partial.json (a run stopped at a time limit keeps them)."""
    (Path(args.out) / "results.partial.json").write_text(json.dumps(R, indent=1, default=lambda o: None))


@torch.no_grad()
def speed(b, args):
    bsz, n = (4, 256) if args.smoke else (16, 2048)
    ids = torch.randint(0, b.large.config.vocab_size, (bsz, n), device=b.dev)
    dense_ms = timeit(lambda: b.large(ids, num_last=P), b.dev)[0]
    rows = [{"budget": 1.0, "ms": dense_ms, "tokens_per_s": bsz * n / dense_ms * 1e3, "speedup": 1.0}]
    for budget in (0.8, 0.6, 0.4):
        r = schedules.schedule_for_budget("linear", b.large.config, budget, n, P)
        pm = b.pruned(b.large, r)
        ms = timeit(lambda: pm(ids, num_last=P), b.dev)[0]
        rows.append({"budget": budget, "ms": ms, "tokens_per_s": bsz * n / ms * 1e3, "speedup": dense_ms / ms,
                     "flops_ratio": flops_report(b.large.config, r, n, P).ratio})
    return {"B": bsz, "L": n, "rows": rows}


def _names(R) -> tuple[str, str]:
    return tuple(R["meta"].get("names", ("mamba-tiny", "family-l")))


def markdown(R) -> str:
    S, G = _names(R)
    out = [f"Device {R['meta']['device']}, torch {R['meta']['torch']}, {R['meta']['date']}; windows of L={L}, "
           f"last P={P} positions scored; perplexities per token of the 8k BPE.", ""]
    out += ["**A. Dense models**", "", "| model | FLOPs/window | valid ppl | ood ppl | mean acc | mean acc_norm |", "|---|---|---|---|---|---|"]
    for k, v in R["dense"].items():
        a = v.get("acc") or {}
        out.append(f"| {k} | {v['flops']:.3g} | {fmt(v['valid_ppl'])} | {fmt(v.get('ood_ppl'))} | {fmt(a.get('mean_acc'), 3)} | {fmt(a.get('mean_acc_norm'), 3)} |")
    out += ["", f"**B. {G}: perplexity vs budget by schedule (criterion last)**", "",
            "| budget | FLOPs ratio | " + " | ".join(f"{s} valid / ood" for s in SCHEDULES) + " |", "|---|---|" + "---|" * len(SCHEDULES)]
    for budget in sorted({r["budget"] for r in R["schedules"]}):
        rows = {r["schedule"]: r for r in R["schedules"] if r["budget"] == budget}
        out.append(f"| {budget} | {rows['linear']['flops_ratio']:.3f} | " + " | ".join(
            f"{fmt(rows[s]['valid_ppl'])} / {fmt(rows[s].get('ood_ppl'))}" for s in SCHEDULES) + " |")
    out += ["", f"**C. {G}: perplexity vs budget by criterion (linear schedule)**", "",
            "| budget | " + " | ".join(f"{c} valid / ood" for c in CRITERIA) + " |", "|---|" + "---|" * len(CRITERIA)]
    for budget in sorted({r["budget"] for r in R["criteria"]}):
        rows = {r["criterion"]: r for r in R["criteria"] if r["budget"] == budget}
        out.append(f"| {budget} | " + " | ".join(f"{fmt(rows[c]['valid_ppl'])} / {fmt(rows[c].get('ood_ppl'))}" for c in CRITERIA) + " |")
    e = R["equal_flops"]
    out += ["", f"**D. Equal FLOPs** (budget {e['budget']:.3f} = {S} FLOPs / {G} FLOPs)", "",
            "| model | valid ppl | ood ppl | mean acc | mean acc_norm |", "|---|---|---|---|---|"]
    for k, v in e.items():
        if k == "budget":
            continue
        a = v.get("acc") or {}
        out.append(f"| {k} | {fmt(v['valid_ppl'])} | {fmt(v.get('ood_ppl'))} | {fmt(a.get('mean_acc'), 3)} | {fmt(a.get('mean_acc_norm'), 3)} |")
    names = [k for k in R["context"][0] if k not in ("L", "note")]
    out += ["", "**E. Perplexity of the last 64 positions vs context length**", "", "| L | " + " | ".join(names) + " |",
            "|---|" + "---|" * len(names)]
    for row in R["context"]:
        out.append(f"| {row['L']} | " + " | ".join(fmt(row.get(k)) for k in names) + " |")
    s = R["speed"]
    out += ["", f"**F. {G} prefill, B={s['B']}, L={s['L']} (linear schedule)**", "", "| budget | ms | tokens/s | speed-up |", "|---|---|---|---|"]
    for r in s["rows"]:
        out.append(f"| {r['budget']} | {r['ms']:.2f} | {r['tokens_per_s']:,.0f} | {r['speedup']:.2f}x |")
    return "\n".join(out) + "\n"


def plots(R, out: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    S, G = _names(R)
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for s in SCHEDULES:
        rows = sorted((r for r in R["schedules"] if r["schedule"] == s), key=lambda r: r["budget"])
        axes[0].plot([r["flops_ratio"] for r in rows], [r["valid_ppl"] for r in rows], "o-", label=s)
    axes[0].axhline(R["dense"][S]["valid_ppl"], ls=":", c="k", label=f"{S} dense")
    axes[0].set(xlabel="FLOPs ratio", ylabel="valid ppl (last 64)", title=f"{G}: schedules", yscale="log")
    for c in CRITERIA:
        rows = sorted((r for r in R["criteria"] if r["criterion"] == c), key=lambda r: r["budget"])
        axes[1].plot([r["flops_ratio"] for r in rows], [r["valid_ppl"] for r in rows], "o-", label=c)
    axes[1].set(xlabel="FLOPs ratio", title=f"{G}: criteria (linear)", yscale="log")
    names = [k for k in R["context"][0] if k not in ("L", "note")]
    for k in names:
        axes[2].plot([r["L"] for r in R["context"]], [r.get(k) for r in R["context"]], "o-", label=k)
    axes[2].set(xlabel="context length", xscale="log", title="last-64 ppl vs context", yscale="log")
    for a in axes:
        a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "paper.png", dpi=100)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", default="mamba-tiny")
    ap.add_argument("--large", default=".carry/family-l")
    ap.add_argument("--valid", default=".data/corpus/valid.txt")
    ap.add_argument("--ood", default=None)
    ap.add_argument("--tasks", default=None)
    ap.add_argument("--calib", default=None)
    ap.add_argument("--out", required=True)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--max-evals", type=int, default=30)
    ap.add_argument("--max-examples", type=int, default=300)
    ap.add_argument("--windows", type=int, default=None)
    ap.add_argument("--ctx-windows", type=int, default=16)
    ap.add_argument("--names", default="mamba-tiny,family-l",
                    help="labels of the small and the large model (a family pair: e.g. mamba2-m,mamba2-l)")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    args.names = args.names.split(",")
    if len(args.names) != 2 or len(set(args.names)) != 2:
        ap.error("--names takes two different labels: SMALL,LARGE")
    args.budgets = [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    args.crit_budgets = [0.3, 0.5, 0.7]
    args.contexts = [512, 1024, 2048, 4096, 8192]
    if args.smoke:
        global L, P
        L, P = 128, 16
        args.budgets, args.crit_budgets, args.contexts = [0.5, 1.0], [0.5], [128, 256]
        args.samples, args.max_evals, args.max_examples, args.windows, args.ctx_windows = 4, 4, 5, 4, 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    R = run(args)
    (out / "results.json").write_text(json.dumps(R, indent=1, default=lambda o: None))
    (out / "results.partial.json").unlink(missing_ok=True)
    md = markdown(R)
    (out / "paper.md").write_text(md)
    plots(R, out)
    print(md)


if __name__ == "__main__":
    main()
