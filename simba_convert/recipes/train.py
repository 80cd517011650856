"""Train a small Mamba-1 or Mamba-2 LM on the token files and save it in the mamba_ssm checkpoint layout.

    python3 -m simba_convert.recipes.train --out DIR [--d-model 256 --n-layer 8 --steps 600
        --batch 32 --seq-len 512 --lr 3e-3 --warmup 100 --seed 0 --max-minutes 3]
    python3 -m simba_convert.recipes.train --arch mamba2 --out DIR [--headdim 64 --d-state 32 --chunk-size 64
        --threads 1 --ckpt FILE] [--resume] [--compare mamba-tiny]
    python3 -m simba_convert.recipes.train --smoke --out /tmp/smoke --tokens DIR --tokenizer FILE

Recipe: `init_mamba_weights` (mamba_ssm's init), AdamW (betas 0.9/0.95, weight decay 0.1 on matrices
and the embedding only; norms, biases, A_log and D are not decayed), linear warm-up then cosine
decay to 10% of the peak LR, grad-norm clip 1.0, bf16 autocast on CUDA (weights and optimizer in
fp32). Each step reads `--batch` random windows of `--seq-len`+1 tokens of the training tokens,
their starts drawn from a generator seeded with `--seed`; validation perplexity is measured on the
fixed, non-overlapping windows at the start of the validation tokens. Same seed, same data, same
device -> same weights (deterministic algorithms are switched on).

`--arch mamba2` trains a `Mamba2LM` (ngroups, headdim, chunk_size; d_state defaults to 64) from
mamba_ssm's Mamba2 initialisation (`init_mamba2_weights`, simba_convert/model/init.py) with the same
recipe, and writes it with `write_mamba2`. Mamba-1 training is unchanged by the Mamba-2 and resume options.

Resuming: the training state (weights, AdamW state, step, the window generator, the open log
interval, elapsed time, evals) is saved to `--ckpt` (default `<out parent>/.<out name>.resume.pt`)
every `--ckpt-minutes` and when the loop ends; `--resume` (with --force once an output was written)
continues from it, bit for bit the run that was not interrupted (same device and thread count), log
included. `--steps` and `--max-minutes` may change on resume (the cosine then aims at the new end);
the model, data and optimiser settings may not. `--max-minutes` counts training time over all
resumed runs; `--stop-at STEP` stops as an interruption would. The file is removed once a run that
reached `--steps` has written its output (one stopped early keeps it, to be continued).

`--max-minutes` stops the loop gracefully (the final evaluation and the checkpoint still happen;
the summary records `stopped_early`). Output (`--out`, not overwritten without --force):
config.json, model.safetensors (in --dtype-save; the tied lm_head is omitted), tokenizer.json,
train_log.jsonl (one JSON object per log or eval point) and train_summary.json. `--compare DIR|NAME`
(repeatable) also evaluates the written checkpoint, reloaded as stored, and each named model on the
same validation windows, in fp32 on the training device (summary key `heldout_comparison`).
"""

from __future__ import annotations

import argparse
import copy
import contextlib
import hashlib
import json
import math
import os
import platform
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # needed by deterministic cuBLAS, before CUDA starts

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

ARCHS = ("mamba1", "mamba2")
D_STATE = {"mamba1": 16, "mamba2": 64}
# Arguments that must match for --resume: they decide the model, the data and the optimiser.
RESUME_FIXED = ("arch", "d_model", "n_layer", "d_state", "expand", "headdim", "ngroups", "chunk_size", "batch",
                "seq_len", "lr", "min_lr_ratio", "warmup", "weight_decay", "grad_clip", "seed", "tokens")
SMOKE = dict(device="cpu", d_model=32, n_layer=2, steps=30, batch=4, seq_len=32, lr=1e-2, warmup=3,
             eval_every=10, eval_windows=8, log_every=5)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    p.add_argument("--tokens", type=Path, default=Path(".data/tokens"), help="folder with {train,valid}.u16.npy")
    p.add_argument("--tokenizer", type=Path, default=Path(".data/tokenizer.json"))
    p.add_argument("--arch", choices=ARCHS, default="mamba1")
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--n-layer", type=int, default=8)
    p.add_argument("--d-state", type=int, default=None, help="default 16 (mamba1), 64 (mamba2)")
    p.add_argument("--expand", type=int, default=2)
    p.add_argument("--headdim", type=int, default=64, help="mamba2: channels per head")
    p.add_argument("--ngroups", type=int, default=1, help="mamba2: groups of B and C")
    p.add_argument("--chunk-size", type=int, default=64, help="mamba2: SSD chunk length")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--min-lr-ratio", type=float, default=0.1, help="final LR as a fraction of --lr")
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--eval-windows", type=int, default=256, help="at most this many validation windows")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--max-minutes", type=float, default=float("inf"), help="stop the loop after this long")
    p.add_argument("--dtype-save", choices=("bfloat16", "float32"), default="bfloat16")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cuda, cpu")
    p.add_argument("--backend", default="auto", choices=("auto", "triton", "reference"), help="selective-scan backend")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave torch's default)")
    p.add_argument("--ckpt", type=Path, default=None, help="training-state file (default <out parent>/.<out name>.resume.pt)")
    p.add_argument("--ckpt-minutes", type=float, default=2.0, help="save the training state this often")
    p.add_argument("--resume", action="store_true", help="continue from --ckpt")
    p.add_argument("--stop-at", type=int, default=None, metavar="STEP",
                   help="stop the loop at this step as if interrupted (the state is kept for --resume)")
    p.add_argument("--compare", action="append", default=[], metavar="DIR|NAME",
                   help="also evaluate this model on the validation windows (repeatable)")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.add_argument("--smoke", action="store_true", help="tiny CPU configuration, a few steps (explicit flags still win)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    pre, _ = p.parse_known_args(argv)
    if pre.smoke:
        p.set_defaults(**SMOKE)
    args = p.parse_args(argv)
    if args.d_state is None:
        args.d_state = D_STATE[args.arch]
    if args.ckpt is None:
        args.ckpt = args.out.parent / f".{args.out.name}.resume.pt"
    return args


# --- data ------------------------------------------------------------------------------------------
def load_tokens(folder: Path, split: str, device: torch.device) -> torch.Tensor:
    arr = np.load(folder / f"{split}.u16.npy", mmap_mode="r")
    if arr.dtype != np.uint16 or arr.ndim != 1:
        raise SystemExit(f"error: {folder}/{split}.u16.npy must be a 1-D uint16 array")
    return torch.from_numpy(arr.astype(np.int64)).to(device)


class WindowSampler:
    """Random training windows [B, L+1] with starts drawn from a seeded CPU generator (device-independent)."""

    def __init__(self, tokens: torch.Tensor, batch: int, seq_len: int, seed: int):
        if tokens.numel() < seq_len + 2:
            raise SystemExit(f"error: {tokens.numel()} training tokens cannot fill a window of {seq_len + 1}")
        self.tokens, self.batch, self.seq_len = tokens, batch, seq_len
        self.gen = torch.Generator().manual_seed(seed)
        self.offsets = torch.arange(seq_len + 1, device=tokens.device)

    def next(self) -> torch.Tensor:
        starts = torch.randint(0, self.tokens.numel() - self.seq_len, (self.batch,), generator=self.gen)
        return self.tokens[starts.to(self.tokens.device)[:, None] + self.offsets]


def valid_windows(tokens: torch.Tensor, seq_len: int, max_windows: int) -> torch.Tensor:
    """Non-overlapping windows [W, L+1] from the start of the validation tokens (each shares one token with the next)."""
    n = min((tokens.numel() - 1) // seq_len, max_windows)
    if n < 1:
        raise SystemExit(f"error: {tokens.numel()} validation tokens cannot fill a window of {seq_len + 1}")
    idx = torch.arange(n, device=tokens.device)[:, None] * seq_len + torch.arange(seq_len + 1, device=tokens.device)
    return tokens[idx]


# --- model and optimisation ------------------------------------------------------------------------
def no_decay(name: str) -> bool:
    return name.endswith("bias") or name.endswith("A_log") or name.endswith(".D") or "norm" in name


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    decay = [p for n, p in model.named_parameters() if not no_decay(n)]
    keep = [p for n, p in model.named_parameters() if no_decay(n)]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8)


def lr_at(step: int, peak: float, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up over `warmup` steps, then cosine from `peak` down to `min_ratio`·peak at `total`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    frac = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


def autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def lm_loss(model, windows: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Mean next-token cross-entropy of windows [B, L+1]."""
    with autocast(device):
        logits = model(windows[:, :-1])
    return F.cross_entropy(logits.float().flatten(0, 1), windows[:, 1:].flatten())


@torch.no_grad()
def evaluate(model, windows: torch.Tensor, device: torch.device, batch: int) -> dict:
    """Validation loss (nats/token) and perplexity over all windows."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, windows.shape[0], batch):
        w = windows[i:i + batch]
        total += lm_loss(model, w, device).item() * w[:, 1:].numel()
        count += w[:, 1:].numel()
    model.train(was_training)
    loss = total / count
    return {"valid_loss": loss, "valid_ppl": math.exp(loss), "valid_tokens": count}


def build_model(args, vocab_size: int, device: torch.device):
    from simba_convert.model.init import init_mamba2_weights, init_mamba_weights

    if getattr(args, "arch", "mamba1") == "mamba2":
        from simba_convert.arch.mamba2 import Mamba2Config, Mamba2LM

        cfg = Mamba2Config(d_model=args.d_model, n_layer=args.n_layer, vocab_size=vocab_size, d_state=args.d_state,
                           expand=args.expand, headdim=args.headdim, ngroups=args.ngroups, chunk_size=args.chunk_size)
        return init_mamba2_weights(Mamba2LM(cfg), args.seed).to(device).set_backend(args.backend)
    from simba_convert.model.config import MambaConfig
    from simba_convert.model.mamba import MambaLM

    cfg = MambaConfig(d_model=args.d_model, n_layer=args.n_layer, vocab_size=vocab_size,
                      d_state=args.d_state, expand=args.expand)
    model = init_mamba_weights(MambaLM(cfg), args.seed).to(device)
    return model.set_backend(args.backend)


# --- outputs -----------------------------------------------------------------------------------------
def versions() -> dict:
    out = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    for mod in ("triton", "tokenizers", "safetensors", "simba_convert"):
        try:
            out[mod] = __import__(mod).__version__
        except (ImportError, AttributeError):
            out[mod] = None
    return out


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_model(model, out: Path, tokenizer: Path, force: bool) -> None:
    """Write the checkpoint directory atomically: Mamba-1 through save_checkpoint, Mamba-2 through write_mamba2."""
    if model.config.architecture != "mamba2":
        from simba_convert.io.checkpoint import save_checkpoint

        save_checkpoint(model, out, tokenizer_dir=tokenizer, force=force)
        return
    from simba_convert.arch.mamba2 import write_mamba2
    from simba_convert.io.atomic import atomic_directory

    with atomic_directory(out, force=force) as tmp:
        write_mamba2(model, tmp, layout="mamba_ssm", fmt="safetensors")
        shutil.copyfile(tokenizer, tmp / "tokenizer.json")


def save(model, args, log_path: Path, summary: dict, compare=None) -> None:
    """Write the checkpoint, move the log in, run `compare(out_dir)` (its result goes into the summary), then
    write train_summary.json."""
    to_save = copy.deepcopy(model).to(device="cpu", dtype=getattr(torch, args.dtype_save))
    write_model(to_save, args.out, args.tokenizer, args.force)
    os.replace(log_path, args.out / "train_log.jsonl")
    if compare is not None:
        summary["heldout_comparison"] = compare(args.out)
    summary["files"] = {p.name: p.stat().st_size for p in sorted(args.out.iterdir())}
    summary["checkpoint_bytes"] = summary["files"]["model.safetensors"] + summary["files"]["tokenizer.json"]
    tmp = args.out / "train_summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    tmp.replace(args.out / "train_summary.json")


def compare_heldout(args, vwin: torch.Tensor, device: torch.device):
    """A function out_dir -> {label: eval} over the validation windows, in fp32: the written checkpoint as stored
    (reloaded) and each --compare model, so that the numbers come from one run on one device."""

    def compare(out_dir: Path) -> dict:
        from simba_convert.io.checkpoint import load_dense
        from simba_convert.io.resolve import resolve

        out = {"note": "fp32 on " + device.type + ", same validation windows for every model", "models": {}}
        for label, src in [("this model (as stored)", str(out_dir))] + [(c, c) for c in args.compare]:
            r = resolve(src, offline=True)
            m = load_dense(r.path, device=device, dtype="float32").set_backend(args.backend)
            t = time.perf_counter()
            ev = evaluate(m, vwin, device, args.batch)
            out["models"][label] = {"source": src, "kind": r.kind, "architecture": m.config.architecture,
                                    "parameters": sum(p.numel() for p in m.parameters()), **ev,
                                    "eval_s": time.perf_counter() - t}
            print(f"held-out {label}: loss {ev['valid_loss']:.4f}, ppl {ev['valid_ppl']:.2f}", file=sys.stderr)
        return out

    return compare


def loss_curve(log_path: Path, points: int = 24) -> list:
    """[step, mean train loss] at up to `points` evenly spaced log entries (the first and last included)."""
    rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    rows = [(r["step"], round(r["loss"], 4)) for r in rows if "loss" in r]
    if len(rows) <= points:
        return [list(r) for r in rows]
    idx = sorted({round(i * (len(rows) - 1) / (points - 1)) for i in range(points)})
    return [list(rows[i]) for i in idx]


# --- resuming -------------------------------------------------------------------------------------------
def _fixed(args) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k in RESUME_FIXED}


def save_state(path: Path, model, opt, sampler, step: int, elapsed: float, evals: list, recent: list, args,
               resumes: list, interval: tuple) -> None:
    """The training state, written atomically (a crash while saving leaves the previous one). `interval` is the
    open log interval (its first step, its loss sum so far), so that the resumed run logs what this one would."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "generator": sampler.gen.get_state(),
             "step": step, "elapsed_s": elapsed, "evals": evals, "recent": recent, "fixed": _fixed(args),
             "resumes": resumes, "interval_start": interval[0], "interval_loss_sum": interval[1],
             "steps_planned": args.steps}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_state(path: Path, args, model, opt, sampler) -> dict:
    """Restore model, optimiser and generator from `path` (weights_only: no unpickling); return the rest."""
    if not path.is_file():
        raise SystemExit(f"error: --resume: no training state at {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    want = _fixed(args)
    diff = {k: (state["fixed"].get(k), v) for k, v in want.items() if state["fixed"].get(k) != v}
    if diff:
        k, (was, now) = next(iter(diff.items()))
        raise SystemExit(f"error: --resume: {k} was {was!r} in the saved run, now {now!r}")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sampler.gen.set_state(state["generator"])
    return state


def _resume_log(log_path: Path, out_log: Path, step: int, evals: list) -> None:
    """Keep the log entries of the saved state: training entries up to its step and its evaluations (a stopped
    run's final evaluation and anything logged after the state was saved are dropped). The log is read from the
    partial file, or from the output of a run that stopped early."""
    src = log_path if log_path.is_file() else out_log
    rows = [json.loads(r) for r in src.read_text().splitlines() if r.strip()] if src.is_file() else []
    eval_steps = {e["step"] for e in evals}
    kept = [r for r in rows if ("loss" in r and r["step"] <= step) or ("valid_loss" in r and r["step"] in eval_steps)]
    log_path.write_text("".join(json.dumps(r) + "\n" for r in kept))


def run(args: argparse.Namespace):
    """Train as `args` say, write the checkpoint; return (model in fp32 on its device, summary dict)."""
    from simba_convert.io.atomic import check_writable
    from tokenizers import Tokenizer

    check_writable(args.out, args.force)  # fail before training, not after
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    vocab = Tokenizer.from_file(str(args.tokenizer)).get_vocab_size()
    train_tokens = load_tokens(args.tokens, "train", device)
    vwin = valid_windows(load_tokens(args.tokens, "valid", device), args.seq_len, args.eval_windows)
    if int(train_tokens.max()) >= vocab:
        raise SystemExit(f"error: token ids reach {int(train_tokens.max())} but the tokenizer has {vocab}")

    model = build_model(args, vocab, device).train()
    opt = make_optimizer(model, args.lr, args.weight_decay)
    sampler = WindowSampler(train_tokens, args.batch, args.seq_len, args.seed)
    log_path = args.out.parent / f".{args.out.name}.train_log.jsonl.partial"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    evals, recent, step, elapsed0, resumes, interval = [], [], 0, 0.0, [], (0, 0.0)
    if args.resume:
        state = load_state(args.ckpt, args, model, opt, sampler)
        evals, recent, step, elapsed0 = state["evals"], state["recent"], state["step"], state["elapsed_s"]
        interval = (state["interval_start"], state["interval_loss_sum"])
        resumes = state["resumes"] + [{"step": step, "elapsed_s": elapsed0,
                                       "steps_planned_before": state["steps_planned"], "steps_planned": args.steps}]
        _resume_log(log_path, args.out / "train_log.jsonl", step, evals)
        print(f"resumed from {args.ckpt} at step {step} ({elapsed0 / 60:.1f} min trained)", file=sys.stderr)
    log = log_path.open("a" if args.resume else "w")

    def record(entry: dict) -> None:
        log.write(json.dumps(entry) + "\n")
        log.flush()

    tokens_per_step = args.batch * args.seq_len
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        # Off a terminal (the GPU tool's log) redraw rarely, so the log keeps its useful tail.
        bar = tqdm(total=args.steps, initial=step, desc=f"train {args.arch} d{args.d_model}x{args.n_layer}",
                   unit="step", dynamic_ncols=True, mininterval=0.1 if sys.stderr.isatty() else 10.0)
    t_start = time.perf_counter() - elapsed0  # elapsed time counts every resumed run's training time
    t_mark, step_mark = time.perf_counter(), interval[0]
    loss_acc = torch.tensor(interval[1], dtype=torch.float32, device=device)
    t_ckpt, stopped_early = time.perf_counter(), False

    def checkpoint() -> None:
        save_state(args.ckpt, model, opt, sampler, step, time.perf_counter() - t_start, evals, recent, args, resumes,
                   (step_mark, loss_acc.item()))

    while step < args.steps:
        if (time.perf_counter() - t_start) / 60 > args.max_minutes or step == args.stop_at:
            stopped_early = True
            break
        lr = lr_at(step, args.lr, args.warmup, args.steps, args.min_lr_ratio)
        for g in opt.param_groups:
            g["lr"] = lr
        loss = lm_loss(model, sampler.next(), device)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.step()
        loss_acc += loss.detach()
        step += 1
        logged = step % args.log_every == 0 or step == args.steps
        if logged:
            now = time.perf_counter()
            mean_loss = loss_acc.item() / (step - step_mark)  # .item() synchronises: timing is honest
            tps = tokens_per_step * (step - step_mark) / (now - t_mark)
            recent.append(mean_loss)
            record({"step": step, "loss": mean_loss, "lr": lr, "grad_norm": float(grad_norm),
                    "tokens_per_s": tps, "elapsed_s": now - t_start})
            if bar is not None:
                bar.set_postfix(loss=f"{mean_loss:.3f}", tok_s=f"{tps:,.0f}", lr=f"{lr:.2e}")
            t_mark, step_mark, loss_acc = now, step, torch.zeros((), device=device)
        if step % args.eval_every == 0 and step < args.steps:
            ev = {"step": step, **evaluate(model, vwin, device, args.batch)}
            evals.append(ev)
            record(ev)
            t_mark = time.perf_counter()  # keep evaluation out of the throughput figures
        if step < args.steps and (time.perf_counter() - t_ckpt) / 60 >= args.ckpt_minutes:
            checkpoint()
            t_ckpt = t_mark = time.perf_counter()  # nor the saving
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    checkpoint()
    train_time = time.perf_counter() - t_start
    final = {"step": step, **evaluate(model, vwin, device, args.batch)}
    evals.append(final)
    record(final)
    log.close()

    summary = {
        "architecture": model.config.architecture,
        "config": model.config.to_mamba_ssm(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "recipe": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                   if k not in ("out", "force", "quiet", "resume", "ckpt", "stop_at")},
        "steps_planned": args.steps, "steps": step, "stopped_early": stopped_early,
        "tokens_seen": step * tokens_per_step,
        "train_tokens": int(train_tokens.numel()), "epochs": step * tokens_per_step / train_tokens.numel(),
        "final_train_loss": (sum(recent[-5:]) / len(recent[-5:])) if recent else None,
        "final_train_loss_note": "mean of the last (up to) 5 logged interval means",
        "loss_curve": loss_curve(log_path),
        "loss_curve_note": "[step, mean training loss over the log interval ending there], evenly subsampled",
        **{k: final[k] for k in ("valid_loss", "valid_ppl", "valid_tokens")},
        "evals": evals,
        "resumes": resumes,
        "train_time_s": train_time, "tokens_per_s": step * tokens_per_step / max(train_time, 1e-9),
        "wall_time_s": time.perf_counter() - t_start,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "backend": args.backend, "versions": versions(),
        "tokenizer_sha256": sha256_file(args.tokenizer),
        "token_files_sha256": {s: sha256_file(args.tokens / f"{s}.u16.npy") for s in ("train", "valid")},
    }
    save(model, args, log_path, summary, compare_heldout(args, vwin, device) if args.compare else None)
    if not stopped_early:
        args.ckpt.unlink(missing_ok=True)  # the run is complete: nothing left to resume
    loss = summary["final_train_loss"]  # None when the run stopped before its first log point
    print(f"{args.out}: {step} steps, train loss {'n/a' if loss is None else f'{loss:.3f}'}, "
          f"valid ppl {summary['valid_ppl']:.2f}, {summary['tokens_per_s']:,.0f} tok/s, "
          f"{summary['checkpoint_bytes'] / 1e6:.2f} MB")
    return model, summary


def main(argv=None) -> dict:
    return run(parse_args(argv))[1]


if __name__ == "__main__":
    main()
