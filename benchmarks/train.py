"""Train a small Mamba-1 LM on the token files and save it in the mamba_ssm checkpoint layout.

    PYTHONPATH=. python3 benchmarks/train.py --out DIR [--d-model 256 --n-layer 8 --steps 600
        --batch 32 --seq-len 512 --lr 3e-3 --warmup 100 --seed 0 --max-minutes 3]
    PYTHONPATH=. python3 benchmarks/train.py --smoke --out /tmp/smoke --tokens DIR --tokenizer FILE

Recipe: `init_mamba_weights` (mamba_ssm's init), AdamW (betas 0.9/0.95, weight decay 0.1 on matrices
and the embedding only; norms, biases, A_log and D are not decayed), linear warm-up then cosine
decay to 10% of the peak LR, grad-norm clip 1.0, bf16 autocast on CUDA (weights and optimizer in
fp32). Each step reads `--batch` random windows of `--seq-len`+1 tokens of the training tokens,
their starts drawn from a generator seeded with `--seed`; validation perplexity is measured on the
fixed, non-overlapping windows at the start of the validation tokens. Same seed, same data, same
device -> same weights (deterministic algorithms are switched on).

`--max-minutes` stops the loop gracefully (the final evaluation and the checkpoint still happen;
the summary records `stopped_early`). Output (`--out`, not overwritten without --force):
config.json, model.safetensors (in --dtype-save; the tied lm_head is omitted), tokenizer.json,
train_log.jsonl (one JSON object per log or eval point) and train_summary.json.
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
import sys
import time
from pathlib import Path

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # needed by deterministic cuBLAS, before CUDA starts

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

SMOKE = dict(device="cpu", d_model=32, n_layer=2, steps=30, batch=4, seq_len=32, lr=1e-2, warmup=3,
             eval_every=10, eval_windows=8, log_every=5)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    p.add_argument("--tokens", type=Path, default=Path(".data/tokens"), help="folder with {train,valid}.u16.npy")
    p.add_argument("--tokenizer", type=Path, default=Path(".data/tokenizer.json"))
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--n-layer", type=int, default=8)
    p.add_argument("--d-state", type=int, default=16)
    p.add_argument("--expand", type=int, default=2)
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
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.add_argument("--smoke", action="store_true", help="tiny CPU configuration, a few steps (explicit flags still win)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    pre, _ = p.parse_known_args(argv)
    if pre.smoke:
        p.set_defaults(**SMOKE)
    return p.parse_args(argv)


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
    from simba_convert.model.config import MambaConfig
    from simba_convert.model.init import init_mamba_weights
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


def save(model, args, log_path: Path, summary: dict) -> None:
    from simba_convert.io.checkpoint import save_checkpoint

    to_save = copy.deepcopy(model).to(device="cpu", dtype=getattr(torch, args.dtype_save))
    save_checkpoint(to_save, args.out, tokenizer_dir=args.tokenizer, force=args.force)
    os.replace(log_path, args.out / "train_log.jsonl")
    summary["files"] = {p.name: p.stat().st_size for p in sorted(args.out.iterdir())}
    summary["checkpoint_bytes"] = summary["files"]["model.safetensors"] + summary["files"]["tokenizer.json"]
    tmp = args.out / "train_summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    tmp.replace(args.out / "train_summary.json")


def run(args: argparse.Namespace):
    """Train as `args` say, write the checkpoint; return (model in fp32 on its device, summary dict)."""
    from simba_convert.io.atomic import check_writable
    from tokenizers import Tokenizer

    check_writable(args.out, args.force)  # fail before training, not after
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
    log = log_path.open("w")

    def record(entry: dict) -> None:
        log.write(json.dumps(entry) + "\n")
        log.flush()

    tokens_per_step = args.batch * args.seq_len
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        # Off a terminal (the GPU tool's log) redraw rarely, so the log keeps its useful tail.
        bar = tqdm(total=args.steps, desc=f"train d{args.d_model}x{args.n_layer}", unit="step", dynamic_ncols=True,
                   mininterval=0.1 if sys.stderr.isatty() else 10.0)
    evals, recent = [], []
    t_start = time.perf_counter()
    t_mark, step_mark, loss_acc = t_start, 0, torch.zeros((), device=device)
    step, stopped_early = 0, False
    while step < args.steps:
        if (time.perf_counter() - t_start) / 60 > args.max_minutes:
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
        if step % args.log_every == 0 or step == args.steps:
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
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    train_time = time.perf_counter() - t_start
    final = {"step": step, **evaluate(model, vwin, device, args.batch)}
    evals.append(final)
    record(final)
    log.close()

    summary = {
        "config": model.config.to_mamba_ssm(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "recipe": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                   if k not in ("out", "force", "quiet")},
        "steps_planned": args.steps, "steps": step, "stopped_early": stopped_early,
        "tokens_seen": step * tokens_per_step,
        "train_tokens": int(train_tokens.numel()), "epochs": step * tokens_per_step / train_tokens.numel(),
        "final_train_loss": (sum(recent[-5:]) / len(recent[-5:])) if recent else None,
        "final_train_loss_note": "mean of the last (up to) 5 logged interval means",
        **{k: final[k] for k in ("valid_loss", "valid_ppl", "valid_tokens")},
        "evals": evals,
        "train_time_s": train_time, "tokens_per_s": step * tokens_per_step / max(train_time, 1e-9),
        "wall_time_s": time.perf_counter() - t_start,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "backend": args.backend, "versions": versions(),
        "tokenizer_sha256": sha256_file(args.tokenizer),
        "token_files_sha256": {s: sha256_file(args.tokens / f"{s}.u16.npy") for s in ("train", "valid")},
    }
    save(model, args, log_path, summary)
    print(f"{args.out}: {step} steps, train loss {summary['final_train_loss']:.3f}, "
          f"valid ppl {summary['valid_ppl']:.2f}, {summary['tokens_per_s']:,.0f} tok/s, "
          f"{summary['checkpoint_bytes'] / 1e6:.2f} MB")
    return model, summary


def main(argv=None) -> dict:
    return run(parse_args(argv))[1]


if __name__ == "__main__":
    main()
