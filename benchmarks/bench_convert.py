"""Conversion wall time per stage for a Mamba-1.4B-shaped checkpoint (random weights) — issue 7's target.

Writes a random-weight checkpoint in the mamba_ssm layout (bf16 safetensors, 1.37 B parameters) with the
GPT-NeoX tokenizer, then runs the whole conversion (`simba_convert.convert`) with 128 x 2048 calibration
tokens at budget 0.6 on the GPU, and records the stage timings the report carries. Target: < 5 minutes.

    PYTHONPATH=. python3 benchmarks/bench_convert.py --tokenizer .carry/gpt-neox-20b.json \
        --calib .carry/calib_1p4b.txt --out $OUT/bench_convert.json
    PYTHONPATH=. python3 benchmarks/bench_convert.py --smoke --tokenizer <file> --out /tmp/c.json     # CPU

--readme times the README's command instead, `simba-convert --in mamba-tiny --budget 0.6` (the bundled model and
calibration text, the device's defaults), run as a user runs it: a fresh process of this checkout's CLI, its JSON
report kept (stage timings, FLOPs ratio, the KL of every schedule, the held-out check), with the wall time and the
machine's load before and after (a shared CPU's timings move with it):

    PYTHONPATH=. python3 benchmarks/bench_convert.py --readme --out benchmarks/results/bench_convert_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import ROOT, environment, loadavg

from simba_convert.io.checkpoint import save_checkpoint
from simba_convert.model.config import MambaConfig
from simba_convert.model.mamba import MambaLM
from simba_convert.pipeline.convert import convert


README_ARGS = ("--in", "mamba-tiny", "--budget", "0.6")


def readme_run() -> dict:
    """The README's conversion command in a fresh process of this checkout (PYTHONPATH: an installed copy elsewhere
    must not be what runs); --out, --report json and --quiet change where it writes and what it prints, not the work."""
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory(prefix="simba-bench-") as tmp:
        cmd = [sys.executable, "-m", "simba_convert.cli", *README_ARGS, "--out", str(Path(tmp) / "out"),
               "--report", "json", "--quiet"]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
        load_start = loadavg()
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"the README command failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    rep = json.loads(proc.stdout)
    cal = rep["calibration"]
    return {
        **environment(dev), "readme_command": "simba-convert " + " ".join(README_ARGS), "wall_s": wall,
        "loadavg_start": load_start, "loadavg_end": loadavg(), "timings": rep["timings"],
        "samples": rep["config"]["samples"], "seq_len": rep["config"]["seq_len"],
        "max_evals": rep["config"]["max_evals"], "evaluations": cal["evaluations"],
        "achieved_flops_ratio": rep["simba"]["achieved_flops_ratio"],
        "schedules": {k: {"label": cal[k]["label"], "kl": cal[k]["kl"], "flops_ratio": cal[k]["flops_ratio"],
                          "keep_ratios": cal[k]["keep_ratios"]} for k in ("best", "linear", "uniform")},
        "holdout": cal["holdout"], "schedule_saved": rep["simba"]["schedule"],
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", default=None, help="tokenizer file of the random checkpoint (not with --readme)")
    ap.add_argument("--calib", default=None)
    ap.add_argument("--out", required=True)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--readme", action="store_true", help="time the README's command (see the module docstring)")
    args = ap.parse_args()
    if args.readme:
        result = readme_run()
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps({k: result[k] for k in ("wall_s", "timings", "achieved_flops_ratio", "holdout",
                                                 "loadavg_start", "loadavg_end")}))
        return
    if args.tokenizer is None:
        ap.error("--tokenizer is required (except with --readme)")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="simba-bench-"))
    if args.smoke:
        cfg, samples, seq_len, dev, dtype = MambaConfig(d_model=64, n_layer=4, vocab_size=50277), 4, 128, "cpu", "float32"
    else:
        cfg, samples, seq_len, dev, dtype = MambaConfig(d_model=2048, n_layer=48, vocab_size=50277), 128, 2048, "cuda", "bfloat16"
    t0 = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(dev):
        model = MambaLM(cfg)
    # the constructor's random init is enough for timing (init_mamba_weights draws 1.4 B fp64 numbers on one CPU core)
    model = model.to(torch.bfloat16)
    src = work / "mamba-1.4b-random"
    save_checkpoint(model, src, tokenizer_dir=args.tokenizer, force=True)
    del model
    if dev == "cuda":
        torch.cuda.empty_cache()
    make_s = time.perf_counter() - t0
    out = work / "out"
    t1 = time.perf_counter()
    rep = convert(str(src), str(out), budget=0.8 if args.smoke else 0.6, samples=samples, seq_len=seq_len, protect=8 if args.smoke else 64, calib=args.calib,
                  device=dev, dtype=dtype, force=True, progress=False)
    total = time.perf_counter() - t1
    result = {
        **environment(dev), "config": cfg.to_dict(), "samples": samples, "seq_len": seq_len, "dtype": dtype,
        "checkpoint_write_s": make_s, "convert_total_s": total, "timings": rep["timings"],
        "achieved_flops_ratio": rep["simba"]["achieved_flops_ratio"], "evaluations": rep["calibration"]["evaluations"],
        "kl": {k: rep["calibration"][k]["kl"] for k in ("best", "linear", "uniform")},
        "peak_gpu_gb": torch.cuda.max_memory_allocated() / 2**30 if dev == "cuda" else None,
    }
    Path(args.out).write_text(json.dumps(result, indent=2))
    print("| stage | seconds |\n|---|---|")
    for k, v in rep["timings"].items():
        print(f"| {k} | {v:.1f} |")
    print(f"| total | {total:.1f} |")
    print(json.dumps({k: result[k] for k in ("achieved_flops_ratio", "evaluations", "kl", "peak_gpu_gb")}))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
