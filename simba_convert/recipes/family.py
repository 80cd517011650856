"""Train the bundled `mamba-tiny` and its larger sibling `family-l` with one command (GPU, ~10 minutes).

    python3 -m simba_convert.recipes.family --out $OUT/family_train.json --models /tmp/models --pack-to $OUT
    python3 -m simba_convert.recipes.family --smoke --out /tmp/family.json --models /tmp/models  # CPU check
    python3 -m simba_convert.recipes.family --suite scaling ...   # Mamba-1 and Mamba-2 families of three sizes each
                                                                 # on the large corpus: family_scaling.py

Needs `.data/tokens/{train,valid}.u16.npy` and `.data/tokenizer.json` (simba_convert/recipes/README.md says how to
make them). Both models share data, tokenizer and recipe (train.py beside this file: batch 32 x 512 tokens,
peak LR 3e-3, warm-up 100, cosine to 10%, AdamW wd 0.1, seed 0) and differ only in depth:

| model | d_model | n_layer | role |
|---|---|---|---|
| mamba-tiny | 256 | 8 | bundled with the package (must stay <= 16 MB as bf16 safetensors + tokenizer) |
| family-l | 256 | 16 | ~2x the backbone FLOPs of mamba-tiny, for scaling comparisons |

`--steps auto` (the default) times a few training steps of the larger model first and gives both
models the same step count, the largest multiple of 50 (capped by --max-steps) that fits
`--minutes-per-model` for family-l; the count is recorded, and `--steps N` reproduces a run exactly.
Each run also stops gracefully at `--minutes-per-model` + 0.5 (still evaluated and saved).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
import time
from pathlib import Path

from . import train

MODELS = {"mamba-tiny": 8, "family-l": 16}
BUNDLE_LIMIT_BYTES = 16_000_000
PART_BYTES = 15 * 2**20  # the GPU tool returns files of at most 16 MiB


def pack(model_dir: Path, dest: Path) -> list[Path]:
    """Write `model_dir` as an uncompressed tar split into parts <name>.tar.part-00, -01, ... of <= PART_BYTES.

    Unpack with: cat <name>.tar.part-* | tar -x -C <folder>
    """
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(model_dir, arcname=model_dir.name)
    data = buf.getvalue()
    dest.mkdir(parents=True, exist_ok=True)
    parts = []
    for i in range(0, len(data), PART_BYTES):
        part = dest / f"{model_dir.name}.tar.part-{i // PART_BYTES:02d}"
        part.write_bytes(data[i:i + PART_BYTES])
        parts.append(part)
    return parts


def train_args(args, name: str, n_layer: int, steps: int) -> list[str]:
    argv = ["--out", str(args.models / name), "--tokens", str(args.tokens), "--tokenizer", str(args.tokenizer),
            "--n-layer", str(n_layer), "--steps", str(steps), "--seed", str(args.seed),
            "--eval-every", str(max(1, steps // 4)), "--max-minutes", str(args.minutes_per_model + 0.5),
            "--dtype-save", "bfloat16"]
    if args.force:
        argv.append("--force")
    if args.smoke:
        argv += ["--smoke", "--n-layer", str(n_layer // 8)]  # 1 and 2 layers: the same 1:2 depth ratio
    return argv


def time_steps(argv: list[str], warmup: int = 3, timed: int = 10) -> float:
    """Seconds per training step of the configuration `argv` describes (after `warmup` untimed steps)."""
    import torch

    a = train.parse_args(argv)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device)
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(str(a.tokenizer)).get_vocab_size()
    model = train.build_model(a, vocab, device).train()
    opt = train.make_optimizer(model, a.lr, a.weight_decay)
    sampler = train.WindowSampler(train.load_tokens(a.tokens, "train", device), a.batch, a.seq_len, a.seed)
    t0 = 0.0
    for i in range(warmup + timed):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        loss = train.lm_loss(model, sampler.next(), device)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / timed


def choose_steps(args) -> tuple[int, float | None]:
    if args.steps != "auto":
        return int(args.steps), None
    per_step = time_steps(train_args(args, "probe", max(MODELS.values()), 1) + ["--quiet"])
    budget = args.minutes_per_model * 60 * 0.9  # leave room for evaluation and saving
    steps = min(args.max_steps, int(budget / per_step) // 50 * 50)
    if steps < 150 and not args.smoke:
        print(f"warning: only {steps} steps fit; training will be short", file=sys.stderr)
    return max(steps, 10 if args.smoke else 150), per_step


def main(argv=None) -> int:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--suite", choices=("bundled", "scaling"), default="bundled")
    if pre.parse_known_args(argv)[0].suite == "scaling":
        from . import family_scaling

        return family_scaling.main(argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=("bundled", "scaling"), default="bundled",
                   help="bundled: mamba-tiny and family-l (this file); scaling: family_scaling.py's six models")
    p.add_argument("--out", type=Path, required=True, help="JSON results file")
    p.add_argument("--models", type=Path, required=True, help="folder for the checkpoints (<models>/<name>/)")
    p.add_argument("--tokens", type=Path, default=Path(".data/tokens"))
    p.add_argument("--tokenizer", type=Path, default=Path(".data/tokenizer.json"))
    p.add_argument("--steps", default="auto", help="'auto' (fit the time budget) or a step count for both models")
    p.add_argument("--max-steps", type=int, default=2000)
    p.add_argument("--minutes-per-model", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true")
    p.add_argument("--pack-to", type=Path, default=None, metavar="DIR",
                   help="also write each checkpoint as <name>.tar.part-NN files of <= 15 MiB into DIR")
    p.add_argument("--smoke", action="store_true", help="tiny CPU models, a few steps")
    args = p.parse_args(argv)
    if args.smoke:
        args.max_steps, args.minutes_per_model = min(args.max_steps, 10), min(args.minutes_per_model, 0.5)

    t0 = time.perf_counter()
    steps, probe = choose_steps(args)
    print(f"steps per model: {steps}" + (f" (family-l probe: {probe:.3f} s/step)" if probe else ""))
    results = {"steps": steps, "probe_s_per_step_family_l": probe, "models": {}}
    for name, n_layer in MODELS.items():
        s = train.main(train_args(args, name, n_layer, steps))
        results["models"][name] = {k: s[k] for k in (
            "config", "parameters", "steps", "stopped_early", "tokens_seen", "epochs", "final_train_loss",
            "valid_loss", "valid_ppl", "valid_tokens", "train_time_s", "tokens_per_s", "checkpoint_bytes",
            "device", "versions")}
    tiny = results["models"]["mamba-tiny"]
    results["bundle_limit_bytes"] = BUNDLE_LIMIT_BYTES
    results["mamba_tiny_fits_bundle"] = tiny["checkpoint_bytes"] <= BUNDLE_LIMIT_BYTES
    if args.pack_to is not None:
        results["packed"] = {name: [q.name for q in pack(args.models / name, args.pack_to)] for name in MODELS}
    results["total_wall_s"] = time.perf_counter() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")

    print("\n| model | layers | params | steps | train loss | valid ppl | tok/s | checkpoint MB |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results["models"].items():
        print(f"| {name} | {r['config']['n_layer']} | {r['parameters'] / 1e6:.2f} M | {r['steps']}"
              f"{' (stopped early)' if r['stopped_early'] else ''} | {r['final_train_loss']:.3f} | "
              f"{r['valid_ppl']:.2f} | {r['tokens_per_s']:,.0f} | {r['checkpoint_bytes'] / 1e6:.2f} |")
    if not results["mamba_tiny_fits_bundle"]:
        print(f"error: mamba-tiny is {tiny['checkpoint_bytes']:,d} bytes, over the {BUNDLE_LIMIT_BYTES:,d} limit",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
