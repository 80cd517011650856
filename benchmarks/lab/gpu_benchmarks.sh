#!/usr/bin/env bash
# One GPU lease (H200) for the kernel, dense, pruned-prefill and 1.4B-conversion benchmarks.
# Run from the repository root with OUT set; carries: .carry/gpt-neox-20b.json .carry/calib_1p4b.txt
set -u
source benchmarks/lab/gpu_step.sh
step bench_scan 95 python3 benchmarks/bench_scan.py --out "$R/bench_scan.json"
step bench_impact 110 python3 benchmarks/bench_impact.py --quick --out "$R/bench_impact.json"
step bench_prune 50 python3 benchmarks/bench_prune.py --out "$R/bench_prune.json"
step bench_convert 170 python3 benchmarks/bench_convert.py --tokenizer .carry/gpt-neox-20b.json \
  --calib .carry/calib_1p4b.txt --out "$R/bench_convert.json"
step bench_dense 110 python3 benchmarks/bench_dense.py --device cuda --cases mamba-130m:1x2048,mamba-1.4b:1x2048 \
  --warmup 1 --repeats 2 --out "$R/bench_dense.json"
step gpu_tests 45 python3 -m pytest -q -m gpu -p no:cacheprovider tests/
