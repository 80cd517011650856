"""Dense forward throughput: our MambaLM against transformers' MambaForCausalLM on the same random weights.

    PYTHONPATH=. python3 benchmarks/bench_dense.py --device cuda --out $OUT/bench_dense.json   # H200, bf16
    PYTHONPATH=. python3 benchmarks/bench_dense.py --device cpu --out benchmarks/results/bench_dense_cpu.json
    PYTHONPATH=. python3 benchmarks/bench_dense.py --smoke --out /tmp/bench_dense.json          # seconds, CPU

Both models share the very same weight tensors (ours is built on the meta device and assigned
transformers' tensors), run in the same process, and are timed alternately: full-sequence logits
for B×L tokens, no cache. transformers takes its pure-torch path (no mamba_ssm / causal_conv1d on the
benchmark machines). Ours is timed per scan backend: `auto` (Triton on CUDA) and `reference` (the
PyTorch path of ops.selective_scan; on the CPU `auto` is the same path, so it is timed once).
Median (and min) of several interleaved runs after warm-up; CUDA events on the GPU. Writes JSON to
--out and a markdown table to stdout and beside the JSON (.md). Weights are random (throughput does not
depend on them); the logits of each implementation are compared with transformers' as a sanity check.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from common import elapsed_ms, environment, error_line, loadavg, rel_rms

from simba_convert.io.layout import canonical_name
from simba_convert.model.config import MambaConfig
from simba_convert.model.mamba import MambaLM

# d_model, n_layer, vocab (padded); d_state 16, d_conv 4, expand 2 as in the released checkpoints
SHAPES = {
    "tiny": (64, 2, 1024),
    "small": (256, 4, 50280),
    "mamba-130m": (768, 24, 50280),
    "mamba-1.4b": (2048, 48, 50280),
}
CASES = {  # (shape, batch, seq_len)
    "smoke": [("tiny", 1, 32)],
    "cpu": [("tiny", 2, 128), ("small", 1, 256), ("mamba-130m", 1, 256)],
    "cuda": [("mamba-130m", 1, 2048), ("mamba-130m", 8, 2048), ("mamba-1.4b", 1, 2048)],
}


def build_pair(shape: str, device: str, dtype: torch.dtype):
    """(transformers model, our MambaLM) holding the same weight tensors."""
    from transformers import MambaConfig as HFConfig, MambaForCausalLM

    d, n, vocab = SHAPES[shape]
    hcfg = HFConfig(vocab_size=vocab, hidden_size=d, num_hidden_layers=n, state_size=16, conv_kernel=4,
                    expand=2, use_cache=False)
    torch.manual_seed(0)
    with torch.device(device):  # random init directly on the device (CPU init of 1.4B takes ~30 s)
        hf = MambaForCausalLM(hcfg)
    hf = hf.to(dtype).eval()
    cfg = MambaConfig.from_hf(hf.config.to_dict())
    with torch.device("meta"):
        ours = MambaLM(cfg)
    ours.load_state_dict({canonical_name(k): v for k, v in hf.state_dict().items()}, strict=True, assign=True)
    if cfg.tie_embeddings:
        ours.lm_head.weight = ours.backbone.embedding.weight
    return hf, ours.eval()


def run_case(shape, bsz, seq_len, device, dtype, backends, warmup, repeats) -> list[dict]:
    """Time transformers and each of our backends in interleaved rounds (one call of each per round), so
    that a load change on a shared machine hits all of them alike."""
    hf, ours = build_pair(shape, device, dtype)
    ids = torch.randint(0, SHAPES[shape][2], (bsz, seq_len), device=device,
                        generator=torch.Generator(device=device).manual_seed(1))
    rows, fns, slowest = [], [], 0.0
    with torch.inference_mode():
        ref_logits = hf(input_ids=ids, use_cache=False).logits
        impls = [("transformers", "torch", lambda: hf(input_ids=ids, use_cache=False).logits)]
        impls += [("simba_convert", b, lambda b=b: ours.set_backend(b)(ids)) for b in backends]
        for impl, backend, fn in impls:
            row = dict(shape=shape, batch=bsz, seq_len=seq_len, dtype=str(dtype).removeprefix("torch."),
                       impl=impl, backend=backend, runs_ms=[])
            rows.append(row)
            try:
                if device == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                t0 = time.perf_counter()
                out = fn()
                if device == "cuda":
                    torch.cuda.synchronize()
                slowest = max(slowest, time.perf_counter() - t0)
                row["rel_rms_vs_transformers"] = rel_rms(out.float(), ref_logits.float())
                del out
                for _ in range(warmup):
                    fn()
                if device == "cuda":
                    torch.cuda.synchronize()
                    row["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
            except Exception as e:  # e.g. a backend that cannot run here: record it, time the others
                row["error"] = error_line(e)
                continue
            fns.append((row, fn))
        if slowest > 10.0:  # a call of more than 10 s (transformers' loop at 1.4B): 3 rounds are enough
            repeats = min(repeats, 3)
        for _ in range(repeats):
            for row, fn in fns:
                row["runs_ms"].append(elapsed_ms(fn, device))
    for row, _ in fns:
        med = statistics.median(row["runs_ms"])
        row.update(median_ms=med, min_ms=min(row["runs_ms"]), tokens_per_s=bsz * seq_len / (med * 1e-3))
        print(f"  {shape} {bsz}x{seq_len} {row['impl']}/{row['backend']}: {med:.1f} ms", file=sys.stderr, flush=True)
    base = next((r for r in rows if r["impl"] == "transformers" and "median_ms" in r), None)
    for r in rows:
        if base and "median_ms" in r:
            r["speedup_vs_transformers"] = base["median_ms"] / r["median_ms"]
    return rows


def markdown(results: dict) -> str:
    head = (f"Dense forward, {results['device']}, torch {results['torch']}, transformers "
            f"{results['transformers']}, {results['date']}\n\n`{results['command']}`\n\n")
    lines = ["| shape | B×L | dtype | impl | backend | median ms | min ms | tokens/s | × transformers | rel RMS vs transformers |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        if "error" in r:
            lines.append(f"| {r['shape']} | {r['batch']}×{r['seq_len']} | {r['dtype']} | {r['impl']} | {r['backend']} "
                         f"| error: {r['error']} | | | | |")
            continue
        lines.append(
            f"| {r['shape']} | {r['batch']}×{r['seq_len']} | {r['dtype']} | {r['impl']} | {r['backend']} | "
            f"{r['median_ms']:.1f} | {r['min_ms']:.1f} | {r['tokens_per_s']:,.0f} | {r.get('speedup_vs_transformers', float('nan')):.2f} | "
            f"{r['rel_rms_vs_transformers']:.1e} |"
        )
    return head + "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                    help="default: bfloat16 on cuda, float32 on cpu")
    ap.add_argument("--cases", default=None, help="comma list of shape:BxL, e.g. mamba-130m:1x2048 [default: per device]")
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--smoke", action="store_true", help="tiny CPU run, seconds")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    device = "cpu" if args.smoke else args.device
    if device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda but CUDA is not available")
    dtype = getattr(torch, args.dtype or ("bfloat16" if device == "cuda" else "float32"))
    if args.cases:
        cases = []
        for c in args.cases.split(","):
            shape, bl = c.split(":")
            b, length = bl.lower().split("x")
            cases.append((shape, int(b), int(length)))
    else:
        cases = CASES["smoke" if args.smoke else device]
    warmup = args.warmup if args.warmup is not None else (1 if args.smoke or device == "cpu" else 2)
    repeats = args.repeats if args.repeats is not None else (2 if args.smoke else 7 if device == "cpu" else 5)
    # auto = Triton on CUDA, reference elsewhere: on the CPU both name the same path, so time it once
    backends = ["auto", "reference"] if device == "cuda" else ["reference"]

    results = {
        "benchmark": "bench_dense",
        **environment(device, None if argv is None else ["benchmarks/bench_dense.py", *argv]),
        "cpu_threads": torch.get_num_threads(),
        "loadavg": loadavg(),  # CPU runs: was the box quiet?
        "warmup": warmup,
        "repeats": repeats,
        "rows": [],
    }
    for shape, bsz, seq_len in cases:
        results["rows"] += run_case(shape, bsz, seq_len, device, dtype, backends, warmup, repeats)
        if device == "cuda":  # the models of the case are gone with run_case's frame
            torch.cuda.empty_cache()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    md = markdown(results)
    args.out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
