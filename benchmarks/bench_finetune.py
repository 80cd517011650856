"""Brief fine-tune of sparsified models (issue 8, SIMBA.md §7): quality before and after N steps, time per step.

For each dense checkpoint (the trained family, given by path), the pipeline's own stages calibrate the
keep ratios at `--budget` (default 0.5); then, from the same calibrated starting point each time, the
pruned model is distilled from the dense one for each step count in `--steps` (default 200 and 1000)
and each trainable set in `--trainable`. Every variant — dense, sparse before, sparse after N steps —
is evaluated the same way with `simba_convert.evaluate.evaluate`: perplexity of the protected positions
on held-out text and zero-shot BIG-bench multiple-choice accuracy. Early stopping is off (patience 0,
no restoring) so "after N steps" means exactly N steps.

    PYTHONPATH=. python3 benchmarks/bench_finetune.py --model /tmp/models/mamba-tiny --model /tmp/models/family-l \\
        --tasks shared/data/eval/bigbench --out $OUT/finetune.json                     # H200
    PYTHONPATH=. python3 benchmarks/bench_finetune.py --smoke --out /tmp/finetune.json  # CPU, tiny, random
    PYTHONPATH=. python3 benchmarks/bench_finetune.py --autocast-check --samples 8 \
        --out benchmarks/results/finetune_autocast_cpu.json                             # CPU, seconds

--autocast-check answers one question instead (does bf16 autocast limit what distillation can reach?): on --samples
windows of the calibration text, KL(dense fp32 ‖ the same dense model under bf16 autocast) at the protected
positions, against KL(dense ‖ pruned) at --budget with the `linear` schedule (no schedule fitted to these windows);
the model is --model (default: the bundled mamba-tiny), on the CPU unless CUDA is available.

Defaults: training text `.data/corpus/train.txt` (first --train-chars characters), held-out text
`.data/corpus/valid.txt`, calibration text: the bundled one. Writes JSON (--out) and a markdown table
(--md, default: the JSON path with .md), and prints the table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import environment

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simba_convert.calibrate.data import encode  # noqa: E402
from simba_convert.evaluate import evaluate  # noqa: E402
from simba_convert.evaluate.bigbench import Task, find_tasks  # noqa: E402
from simba_convert.finetune import FinetuneConfig, all_windows, finetune, frozen_teacher, split_windows  # noqa: E402
from simba_convert.finetune.objective import evaluate as ft_evaluate  # noqa: E402
from simba_convert.pipeline import stages  # noqa: E402
from simba_convert.pipeline.config import ConvertConfig  # noqa: E402
from simba_convert.pruning.flops import flops_report  # noqa: E402


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=[], help="dense checkpoint directory (repeat for a family)")
    ap.add_argument("--budget", type=float, default=0.5)
    ap.add_argument("--steps", default="200,1000", help="comma-separated step counts, each from the same start")
    ap.add_argument("--trainable", default="all", help="comma-separated: all, norms_dt_xproj, lora")
    ap.add_argument("--lr", default=None, help="comma-separated learning rates (default: the trainable set's default)")
    ap.add_argument("--lm-weight", default="0", help="comma-separated weights of the LM loss added to the KL")
    ap.add_argument("--heldout-ft", type=float, default=None, metavar="FRACTION",
                    help="fine-tune on the first FRACTION of the held-out text (text the dense model never saw) "
                         "and evaluate on the rest, instead of fine-tuning on --train-text")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--grad-accum", type=int, default=1)
    ap.add_argument("--checkpointing", action="store_true")
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--protect", type=int, default=64)
    ap.add_argument("--samples", type=int, default=32, help="calibration windows")
    ap.add_argument("--max-evals", type=int, default=40, help="calibration candidates")
    ap.add_argument("--calib", default=None, help="calibration text (default: the bundled one)")
    ap.add_argument("--train-text", default=str(ROOT / ".data" / "corpus" / "train.txt"))
    ap.add_argument("--train-chars", type=int, default=8_000_000)
    ap.add_argument("--eval-text", default=str(ROOT / ".data" / "corpus" / "valid.txt"))
    ap.add_argument("--eval-windows", type=int, default=None, help="held-out windows (default: all)")
    ap.add_argument("--eval-batch-size", type=int, default=32)
    ap.add_argument("--tasks", default=None, help="BIG-bench tasks directory (omit: no accuracy)")
    ap.add_argument("--max-examples", type=int, default=200, help="examples per task")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "finetune.json"))
    ap.add_argument("--md", default=None)
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny random models and data")
    ap.add_argument("--autocast-check", action="store_true",
                    help="KL of bf16 autocast against KL of pruning on calibration windows (module docstring)")
    return ap.parse_args(argv)


# --- the autocast check -----------------------------------------------------------------------------
@torch.no_grad()
def autocast_check(args, dev: str) -> dict:
    """KL(dense fp32 ‖ dense under bf16 autocast) and KL(dense ‖ pruned, linear at --budget) at the protected
    positions of --samples calibration windows, summed in fp64 in window order."""
    from simba_convert.calibrate.data import make_windows, read_calibration_text
    from simba_convert.finetune.objective import amp_context, protected_logp
    from simba_convert.pruning.model import PrunedMambaLM
    from simba_convert.pruning.schedules import family, solve_budget
    from simba_convert.pruning.spec import PruningSpec

    src = args.model[0] if args.model else "mamba-tiny"
    cfg = ConvertConfig(src=src, budget=args.budget, samples=args.samples, seq_len=args.seq_len, protect=args.protect,
                        calib=args.calib, seed=args.seed, device=dev, dtype="float32", progress=False)
    loaded = stages.load_stage(cfg)
    dense = loaded.model.eval()
    text, source = read_calibration_text(args.calib)
    windows = make_windows(encode(loaded.tokenizer, text), args.samples, args.seq_len, args.seed)
    ratios = solve_budget(family("linear", dense.config.n_layer), dense.config, args.budget, args.seq_len, args.protect)
    pruned = PrunedMambaLM(dense, PruningSpec(tuple(ratios), protect=args.protect))
    P, device = args.protect, torch.device(dev)
    kl = {"autocast_bf16": 0.0, "pruned_linear": 0.0}
    n = 0
    for batch in windows.split(args.eval_batch_size):
        inputs = batch[:, :-1].to(dev)
        ref = protected_logp(dense(inputs, num_last=P), P)
        with amp_context(device, True):
            amp = protected_logp(dense(inputs, num_last=P), P)
        sparse = protected_logp(pruned(inputs, num_last=P), P)
        for key, s in (("autocast_bf16", amp), ("pruned_linear", sparse)):
            kl[key] += float((ref.exp() * (ref - s)).sum(-1).double().sum())
        n += inputs.shape[0] * P
    fl = flops_report(dense.config, tuple(ratios), args.seq_len, args.protect)
    return {"model": src, "text": source, "windows": int(windows.shape[0]), "seq_len": args.seq_len, "protect": P,
            "budget": args.budget, "schedule": "linear", "keep_ratios": list(ratios), "flops_ratio": fl.ratio,
            "kl": {k: v / n for k, v in kl.items()}}


# --- smoke-mode inputs ------------------------------------------------------------------------------
def smoke_inputs(args, tmp: Path) -> None:
    """Two random checkpoints of different depth sharing a small BPE tokenizer, text slices and one task."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from simba_convert.io.checkpoint import save_checkpoint
    from simba_convert.model.config import MambaConfig
    from simba_convert.model.mamba import MambaLM

    text = (ROOT / "calibration" / "default.txt").read_text(encoding="utf-8")
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([text[:50_000]], trainers.BpeTrainer(vocab_size=200, special_tokens=["[UNK]"],
                                                                 show_progress=False))
    tok.save(str(tmp / "tokenizer.json"))
    for n_layer in (2, 4):
        torch.manual_seed(n_layer)
        m = MambaLM(MambaConfig(d_model=32, n_layer=n_layer, vocab_size=tok.get_vocab_size(), d_state=8))
        with torch.no_grad():  # long SSM memory and a small embedding, so that pruning changes the predictions
            m.backbone.embedding.weight.mul_(0.3)
            for layer in m.backbone.layers:
                layer.mixer.dt_proj.bias.uniform_(-4, -1)
        save_checkpoint(m, tmp / f"random-{n_layer}l", tokenizer_dir=tmp / "tokenizer.json")
        args.model.append(str(tmp / f"random-{n_layer}l"))
    (tmp / "train.txt").write_text(text[:30_000], encoding="utf-8")
    (tmp / "valid.txt").write_text(text[30_000:40_000], encoding="utf-8")
    (tmp / "calib.txt").write_text(text[40_000:52_000], encoding="utf-8")
    task = {"examples": [{"input": f"{a} plus {b} is", "target_scores": {str(a + b): 1, str(a + b + 1): 0}}
                         for a, b in ((1, 2), (2, 3), (3, 4))]}
    (tmp / "tasks" / "add").mkdir(parents=True)
    (tmp / "tasks" / "add" / "task.json").write_text(json.dumps(task), encoding="utf-8")
    args.train_text, args.eval_text, args.calib = str(tmp / "train.txt"), str(tmp / "valid.txt"), str(tmp / "calib.txt")
    args.tasks, args.steps, args.seq_len, args.protect = str(tmp / "tasks"), "3,6", 64, 8
    args.samples, args.max_evals, args.batch_size, args.eval_windows = 4, 4, 4, 8
    args.budget = 0.8  # two random layers and a 200-token head cannot reach 0.5 at L=64


# --- measuring --------------------------------------------------------------------------------------
def load_tasks(root, max_examples: int) -> list[Task] | None:
    if root is None:
        return None
    return [Task(t.name, t.path, t.examples[:max_examples]) for t in find_tasks(root)]


def quality(model, tok, args, tasks) -> dict:
    r = evaluate(model, tok, text=args.eval_text, seq_len=args.seq_len, protect=args.protect,
                 windows=args.eval_windows, tasks=tasks, batch_size=args.eval_batch_size, progress=False)
    acc = r["accuracy"]
    return {
        "ppl": r["perplexity"], "nll": r["nll"], "tokens_scored": r["tokens_scored"],
        "acc_mean": sum(a["acc"] for a in acc.values()) / len(acc) if acc else None,
        "acc_norm_mean": sum(a["acc_norm"] for a in acc.values()) / len(acc) if acc else None,
        "accuracy": acc,
    }


def bench_model(model_dir: str, args, tasks, dev: str) -> dict:
    cfg = ConvertConfig(src=model_dir, budget=args.budget, samples=args.samples, seq_len=args.seq_len,
                        protect=args.protect, calib=args.calib, seed=args.seed, device=dev, dtype="float32",
                        max_evals=args.max_evals, batch_size=args.batch_size, progress=False)
    t0 = time.perf_counter()
    loaded = stages.load_stage(cfg)
    scored = stages.score_stage(cfg, loaded)
    result = stages.calibrate_stage(cfg, loaded, scored)
    model = stages.pruned_model(cfg, loaded, result)
    calib_s = time.perf_counter() - t0
    dense = loaded.model
    fl = flops_report(dense.config, model.spec.keep_ratios, args.seq_len, args.protect, cfg.criterion)

    text = args.ft_text or Path(args.train_text).read_text(encoding="utf-8")[: args.train_chars]
    train, valid = split_windows(all_windows(encode(loaded.tokenizer, text), args.seq_len), seed=args.seed,
                                 max_valid=64)
    eval_windows = all_windows(encode(loaded.tokenizer, Path(args.eval_text).read_text(encoding="utf-8")), args.seq_len)
    original = {k: v.detach().to("cpu", copy=True) for k, v in dense.state_dict().items()}
    teacher = frozen_teacher(dense)
    out = {
        "model": model_dir, "n_layer": dense.config.n_layer, "d_model": dense.config.d_model,
        "params": sum(p.numel() for p in dense.parameters()), "keep_ratios": list(model.spec.keep_ratios),
        "flops_ratio": fl.ratio, "calibration_kl": result.best.kl, "calibrate_s": calib_s,
        "train_windows": int(train.shape[0]), "valid_windows": int(valid.shape[0]),
        "dense": quality(dense, loaded.tokenizer, args, tasks),
        "sparse": quality(model, loaded.tokenizer, args, tasks),
        "heldout_kl_before": heldout_kl(model, teacher, eval_windows, args, dev),
        "runs": [],
    }
    lrs = [None] if args.lr is None else [float(v) for v in args.lr.split(",")]
    grid = [(t, lr, float(w), int(n)) for t in args.trainable.split(",") for lr in lrs
            for w in args.lm_weight.split(",") for n in args.steps.split(",")]
    for trainable, lr, lm_weight, steps in grid:
        dense.load_state_dict(original)
        ft = FinetuneConfig(steps=steps, lr=lr, trainable=trainable, batch_size=args.batch_size,
                            grad_accum=args.grad_accum, checkpointing=args.checkpointing, lm_weight=lm_weight,
                            eval_every=max(1, steps // 4), patience=0, restore_best=False, seed=args.seed,
                            progress=False)
        rep = finetune(model, train, valid, ft, teacher=teacher)
        keep = ("steps", "trainable", "trainable_params", "before", "after", "s_per_step", "tokens_per_s",
                "train_s", "wall_s", "loss_steps", "losses", "evals", "autocast_bf16")
        run = {k: rep[k] for k in keep}
        run.update(lr=ft.lr, lm_weight=lm_weight)
        run["quality"] = quality(model, loaded.tokenizer, args, tasks)
        run["heldout_kl"] = heldout_kl(model, teacher, eval_windows, args, dev)
        out["runs"].append(run)
        print(f"  {Path(model_dir).name} {trainable} lr {ft.lr:g} lm {lm_weight:g} {steps} steps: ft-valid KL "
              f"{rep['before']['kl']:.4f} -> {rep['after']['kl']:.4f}, held-out KL {out['heldout_kl_before']:.4f} -> "
              f"{run['heldout_kl']:.4f}, ppl {out['sparse']['ppl']:.3f} -> {run['quality']['ppl']:.3f} "
              f"(dense {out['dense']['ppl']:.3f}), {rep['s_per_step'] or 0:.3f} s/step", flush=True)
    dense.load_state_dict(original)
    return out


def heldout_kl(model, teacher, windows, args, dev: str) -> float:
    """KL(dense ‖ sparse) at the protected positions of the evaluation text's windows (fp32, no autocast)."""
    return ft_evaluate(model, teacher, windows, args.protect, batch_size=args.eval_batch_size, amp=False)["kl"]


def split_heldout(args, tmp: Path) -> None:
    """--heldout-ft: the held-out text's first FRACTION (cut at a line end) becomes the fine-tuning text, the
    rest the evaluation text, so the student is distilled on text the dense model was not trained on."""
    args.ft_text = None
    if args.heldout_ft is None:
        return
    if not 0.0 < args.heldout_ft < 1.0:
        raise SystemExit("--heldout-ft must be in (0, 1)")
    text = Path(args.eval_text).read_text(encoding="utf-8")
    cut = text.find("\n", int(len(text) * args.heldout_ft)) + 1 or len(text)
    args.ft_text = text[:cut]
    rest = tmp / "eval_part.txt"
    rest.write_text(text[cut:], encoding="utf-8")
    args.eval_text = str(rest)


# --- reporting --------------------------------------------------------------------------------------
def _f(x, fmt):
    return "n/a" if x is None else format(x, fmt)


def table(res: dict) -> str:
    lines = [
        f"budget {res['args']['budget']}, L={res['args']['seq_len']}, P={res['args']['protect']}; "
        f"{res['meta']['device']}, torch {res['meta']['torch']}, {res['meta']['date']}",
        "",
        "| model | variant | FLOPs | ppl (protected) | acc | acc_norm | held-out KL | ft-valid KL | s/step | tokens/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in res["models"]:
        name = Path(m["model"]).name
        rows = [("dense", 1.0, m["dense"], None, None, None, None),
                ("sparse, before", m["flops_ratio"], m["sparse"], m.get("heldout_kl_before"),
                 m["runs"][0]["before"]["kl"] if m["runs"] else None, None, None)]
        rows += [(f"sparse + {r['steps']} steps ({r['trainable']}, lr {r['lr']:g}, lm {r.get('lm_weight', 0):g})",
                  m["flops_ratio"], r["quality"], r.get("heldout_kl"), r["after"]["kl"], r["s_per_step"],
                  r["tokens_per_s"]) for r in m["runs"]]
        for variant, fr, q, hkl, kl, sps, tps in rows:
            lines.append(f"| {name} | {variant} | {fr:.3f} | {_f(q['ppl'], '.3f')} | {_f(q['acc_mean'], '.3f')} | "
                         f"{_f(q['acc_norm_mean'], '.3f')} | {_f(hkl, '.4f')} | {_f(kl, '.4f')} | {_f(sps, '.3f')} | "
                         f"{_f(tps, ',.0f')} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    dev = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    if args.autocast_check:
        t0 = time.perf_counter()
        check = autocast_check(args, dev)
        meta = {**environment(dev, None if argv is None else ["benchmarks/bench_finetune.py", *argv]),
                "total_s": time.perf_counter() - t0}
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"meta": meta, "autocast_check": check}, indent=2) + "\n", encoding="utf-8")
        print(json.dumps(check["kl"]))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        if args.smoke:
            smoke_inputs(args, Path(tmp))
        if not args.model:
            raise SystemExit("give at least one --model DIR (or --smoke)")
        split_heldout(args, Path(tmp))
        tasks = load_tasks(args.tasks, args.max_examples)
        t0 = time.perf_counter()
        models = [bench_model(m, args, tasks, dev) for m in args.model]
        meta = {**environment(dev, None if argv is None else ["benchmarks/bench_finetune.py", *argv]),
                "total_s": time.perf_counter() - t0}
        res = {"meta": meta, "args": vars(args), "models": models}
    md = table(res)
    print(md)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    Path(args.md or out.with_suffix(".md")).write_text(md, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
