#!/usr/bin/env bash
# One GPU lease (H200) for the quality benchmarks on the trained family and the pruned-prefill speed.
# Carries: .carry/family-l .carry/eval .carry/valid.txt .carry/ft_train.txt (see benchmarks/lab/README.md).
set -u
source benchmarks/lab/gpu_step.sh
step bench_prune 60 python3 benchmarks/bench_prune.py --out "$R/bench_prune.json"
step paper 290 python3 benchmarks/paper.py --small simba_convert/models/mamba-tiny --large .carry/family-l \
  --valid .carry/valid.txt --ood .carry/eval/squadshifts_new_wiki.txt --tasks .carry/eval/bigbench --windows 256 --out "$R/paper"
step finetune 150 python3 benchmarks/bench_finetune.py --model simba_convert/models/mamba-tiny --tasks .carry/eval/bigbench \
  --train-text .carry/ft_train.txt --eval-text .carry/valid.txt --out "$R/finetune.json"
