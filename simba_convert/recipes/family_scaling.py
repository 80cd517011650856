"""Train a Mamba-1 and a Mamba-2 family of three sizes each on the large corpus, in calls of at most a few minutes
that resume one another (`family --suite scaling`; GPU).

    python3 -m simba_convert.recipes.family --suite scaling --tokens .data/tokens-large --models DIR \\
        --out DIR/scaling.json [--call-minutes 9] [--only mamba1-s,mamba2-s] [--steps 4000]
    python3 -m simba_convert.recipes.family --suite scaling --smoke --tokens T --tokenizer F --models DIR --out J

Every call trains the models in table order, each with train.py (`--resume` from its training state when one is
left, so a model continues bit for bit where the previous call stopped), and stops once `--call-minutes` are
nearly used: the model in progress stops as an interrupted run would (evaluated and written, its state kept), and
the next call continues it. A model is done when its checkpoint reached its steps and its state was removed. Call
again until the summary says "6 of 6 complete". The training states (fp32 weights and AdamW moments, ~1.2 GB
for the 100 M models) live beside the checkpoints in `--models`: the calls must share that folder.

| name | arch | d_model | n_layer | peak LR | parameters (vocab 8192, tied) |
|---|---|---|---|---|---|
| mamba1-s / mamba2-s | mamba1 / mamba2 | 384 | 8 | 3e-3 | 10.9 M / 10.7 M |
| mamba1-m / mamba2-m | mamba1 / mamba2 | 512 | 20 | 2e-3 | 38.1 M / 37.3 M |
| mamba1-l / mamba2-l | mamba1 / mamba2 | 768 | 24 | 1.5e-3 | 96.8 M / 94.3 M |

Everything else is train.py's recipe (batch 32 x 512, warm-up 100, cosine to 10%, AdamW 0.9/0.95 wd 0.1, seed
0; Mamba-2 with headdim 64, d_state 64, one group, chunk 64). `--steps` (default 4000: 65.5 M tokens, under one
epoch of the large corpus) is the same for every model. The learning rates follow the usual decrease with width;
they are a choice, not a tuned result. Parameter counts are the models' own (`--dry-run` prints them).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import train

SCALING = {  # name: (arch, d_model, n_layer, peak LR)
    "mamba1-s": ("mamba1", 384, 8, 3e-3), "mamba1-m": ("mamba1", 512, 20, 2e-3),
    "mamba1-l": ("mamba1", 768, 24, 1.5e-3),
    "mamba2-s": ("mamba2", 384, 8, 3e-3), "mamba2-m": ("mamba2", 512, 20, 2e-3),
    "mamba2-l": ("mamba2", 768, 24, 1.5e-3),
}
SMOKE_SHAPES = {"s": (16, 1), "m": (16, 2), "l": (32, 2)}  # d_model, n_layer of the --smoke stand-ins
RESULT_KEYS = ("architecture", "config", "parameters", "steps", "steps_planned", "stopped_early", "tokens_seen",
               "epochs", "final_train_loss", "valid_loss", "valid_ppl", "valid_tokens", "train_time_s", "tokens_per_s",
               "checkpoint_bytes", "resumes", "device", "versions")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=("scaling",), default="scaling")
    p.add_argument("--out", type=Path, required=True, help="JSON summary of the family (rewritten by every call)")
    p.add_argument("--models", type=Path, required=True, help="folder of the checkpoints and training states")
    p.add_argument("--tokens", type=Path, default=Path(".data/tokens-large"))
    p.add_argument("--tokenizer", type=Path, default=Path(".data/tokenizer.json"))
    p.add_argument("--only", default=",".join(SCALING), help="comma-separated model names, in table order")
    p.add_argument("--steps", type=int, default=None,
                   help="training steps of every model (default 4000; 12 with --smoke)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--call-minutes", type=float, default=9.0, help="wall time this call may take")
    p.add_argument("--reserve-minutes", type=float, default=1.5,
                   help="kept for starting, the final evaluation and writing (not given to training)")
    p.add_argument("--ckpt-minutes", type=float, default=2.0, help="save the training state this often")
    p.add_argument("--stop-at", type=int, default=None, metavar="STEP",
                   help="stop the model in progress at this step, as the time limit would (for tests)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and the parameter counts; train nothing")
    p.add_argument("--smoke", action="store_true", help="tiny CPU stand-ins of the six models, a few steps")
    args = p.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in SCALING]
    if unknown:
        p.error(f"unknown model {unknown[0]!r}; choose from {', '.join(SCALING)}")
    args.names = [n for n in SCALING if n in names]
    if args.steps is None:
        args.steps = 12 if args.smoke else 4000
    return args


def model_argv(args, name: str, max_minutes: float) -> list[str]:
    """train.py's arguments for model `name` (training state in <models>/.<name>.resume.pt)."""
    arch, d_model, n_layer, lr = SCALING[name]
    argv = ["--out", str(args.models / name), "--tokens", str(args.tokens), "--tokenizer", str(args.tokenizer),
            "--arch", arch, "--steps", str(args.steps), "--seed", str(args.seed), "--eval-every",
            str(max(1, args.steps // 8)), "--max-minutes", f"{max_minutes:.4f}",
            "--ckpt-minutes", str(args.ckpt_minutes),
            "--ckpt", str(args.models / f".{name}.resume.pt"), "--dtype-save", "bfloat16"]
    if args.stop_at is not None:
        argv += ["--stop-at", str(args.stop_at)]
    if args.smoke:
        d, n = SMOKE_SHAPES[name.split("-")[1]]
        argv += ["--smoke", "--quiet", "--d-model", str(d), "--n-layer", str(n)]
        if arch == "mamba2":
            argv += ["--headdim", "8", "--d-state", "8", "--chunk-size", "8"]
    else:
        argv += ["--d-model", str(d_model), "--n-layer", str(n_layer), "--lr", str(lr)]
    return argv


def state_of(args, name: str) -> tuple[str, float]:
    """('done' | 'partial' | 'new', training seconds so far) of model `name`."""
    ckpt = args.models / f".{name}.resume.pt"
    if ckpt.is_file():
        import torch

        return "partial", float(torch.load(ckpt, map_location="cpu", weights_only=True)["elapsed_s"])
    summary = args.models / name / "train_summary.json"
    if summary.is_file():
        s = json.loads(summary.read_text())
        if not s["stopped_early"] and s["steps"] == args.steps:
            return "done", s["train_time_s"]
    return "new", 0.0


def count_parameters(args, name: str) -> int:
    import torch

    a = train.parse_args(model_argv(args, name, 1.0))
    with torch.device("meta"):
        return sum(p.numel() for p in train.build_model(a, 8192, torch.device("meta")).parameters())


def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    if args.dry_run:
        for name in args.names:
            arch, d, n, lr = SCALING[name]
            print(f"{name}: {arch} d_model {d} x {n} layers, lr {lr}, {count_parameters(args, name) / 1e6:.1f} M "
                  f"parameters, {state_of(args, name)[0]}")
        return 0
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results.update(suite="scaling", steps=args.steps, call_minutes=args.call_minutes, models=results.get("models", {}))
    calls = results.setdefault("calls", [])
    call = {"trained": [], "wall_s": None}
    for name in args.names:
        state, done_s = state_of(args, name)
        if state == "done":
            continue
        left = args.call_minutes - args.reserve_minutes - (time.perf_counter() - t0) / 60
        if left < 0.25:
            break
        extra = ["--resume", "--force"] if state == "partial" else ["--force"]
        summary = train.main(model_argv(args, name, done_s / 60 + left) + extra)
        results["models"][name] = {k: summary[k] for k in RESULT_KEYS} | {"complete": not summary["stopped_early"]}
        call["trained"].append({"model": name, "from_step": summary["resumes"][-1]["step"] if extra[0] == "--resume"
                                else 0, "to_step": summary["steps"]})
        if summary["stopped_early"]:
            break  # this call's time is used (or --stop-at said so): the next call continues here
    call["wall_s"] = time.perf_counter() - t0
    calls.append(call)
    complete = [n for n in SCALING if state_of(args, n)[0] == "done"]
    results["complete"] = complete
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(args.out)
    print("\n| model | params | steps | train loss | valid ppl | tok/s | complete |\n|---|---|---|---|---|---|---|")
    for name, r in results["models"].items():
        print(f"| {name} | {r['parameters'] / 1e6:.2f} M | {r['steps']}/{r['steps_planned']} | "
              f"{r['final_train_loss'] if r['final_train_loss'] is None else round(r['final_train_loss'], 3)} | "
              f"{r['valid_ppl']:.2f} | {r['tokens_per_s']:,.0f} | {r['complete']} |")
    todo = [n for n in args.names if n not in complete]
    print(f"{len(complete)} of {len(SCALING)} complete" + (f"; call again to continue ({', '.join(todo)})" if todo
                                                             else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
