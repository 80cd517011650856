"""Selective scan benchmark: Triton vs the PyTorch paths vs the floor, and a whole-model training step.

GPU:   PYTHONPATH=. python3 benchmarks/bench_scan.py --out $OUT/bench_scan.json
Smoke: PYTHONPATH=. python3 benchmarks/bench_scan.py --smoke --out /tmp/bench_scan.json   (CPU, interpreter)

The Triton sweep covers both forward kinds (LaunchConfig.fwd_kind "chunk" and "seq"); per shape it reports
the best forward of each kind, the winner, and how closely the seq forward's output and checkpoints agree
with the chunk forward's. A seq forward's time includes its host-side prep (A·log2 e transposed, B and C
in fp32). The backward is timed for the chunk configs only (it does not depend on the forward's kind).

Floor of one scan call = max(bytes it must move / measured copy bandwidth, exponentials / SFU rate).
The SFU rate is an assumption, not a measurement: 132 SMs x 16 ex2/clk/SM x 1.98 GHz = 4.2e12 ex2/s (H200).
"""

from __future__ import annotations

import argparse
import json
import os

SFU_EX2_PER_S = 132 * 16 * 1.98e9


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="JSON results file")
    p.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU under TRITON_INTERPRET=1")
    p.add_argument("--iters", type=int, default=20)
    return p.parse_args()


ARGS = parse_args()
if ARGS.smoke:
    os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported: kernels pick the interpreter at definition

import torch  # noqa: E402
from common import copy_bandwidth as _copy_bandwidth, environment, median_ms, rel_rms  # noqa: E402

from simba_convert.model.config import MambaConfig  # noqa: E402
from simba_convert.model.mamba import MambaLM  # noqa: E402
from simba_convert.ops.scan import triton as sst  # noqa: E402
from simba_convert.ops.scan import selective_scan  # noqa: E402
from simba_convert.ops.scan.chunked import selective_scan_chunked  # noqa: E402

DEV = "cpu" if ARGS.smoke else "cuda"


def timed(fn, iters, warmup=2):
    """Median milliseconds of fn() (CUDA events on the GPU, perf_counter on the CPU)."""
    if ARGS.smoke:  # the interpreter compiles nothing: one untimed-warm-up-free run checks the code path
        iters, warmup = 1, 0
    return median_ms(fn, DEV, reps=iters, warmup=warmup)


def copy_bandwidth(nbytes):
    """Device-to-device copy rate in bytes/s (read + write counted)."""
    return _copy_bandwidth(DEV, nbytes, lambda fn: timed(fn, ARGS.iters), torch.float32)


def scan_inputs(bsz, L, d, N, dtype, requires_grad=False):
    g = dict(device=DEV)
    t = {
        "u": torch.randn(bsz, L, d, **g).to(dtype),
        "delta": (torch.randn(bsz, L, d, **g) * 0.5 - 2.0).to(dtype),
        "A": -torch.exp(torch.rand(d, N, **g) * 2.5),
        "B": torch.randn(bsz, L, N, **g).to(dtype),
        "C": torch.randn(bsz, L, N, **g).to(dtype),
        "D": torch.randn(d, **g),
        "z": torch.randn(bsz, L, d, **g).to(dtype),
        "delta_bias": torch.randn(d, **g) * 0.5,
    }
    for v in t.values():
        v.requires_grad_(requires_grad)
    return [t[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]


def scan_floor(bsz, L, d, N, elt, bw):
    """(forward ms, forward+backward ms, bytes) lower bounds for one call.

    Forward moves u, delta, z in and y out ([B, L, D] each) plus B, C ([B, L, N]); the backward reads
    those inputs and dy and writes du, d delta, dz, dB, dC. Each needs B·L·D·N exponentials at least.
    """
    tok = bsz * L
    fwd_bytes = tok * (4 * d + 2 * N) * elt
    bwd_bytes = tok * (7 * d + 4 * N) * elt
    exps = tok * d * N
    fwd = max(fwd_bytes / bw, exps / SFU_EX2_PER_S) * 1e3
    bwd = max(bwd_bytes / bw, exps / SFU_EX2_PER_S) * 1e3
    return fwd, fwd + bwd, fwd_bytes, exps


def seq_agreement(ins, seq_cfg):
    """Relative RMS differences, seq forward vs chunk forward, of y and of the checkpoints the backward reads."""
    y0, _, chk0 = sst.scan_forward(*ins, True, None, False, True, config=sst.LaunchConfig(fwd_kind="chunk"))
    y1, _, chk1 = sst.scan_forward(*ins, True, None, False, True, config=seq_cfg)
    return {"seq_vs_chunk_y_rel_rms": rel_rms(y1, y0), "seq_vs_chunk_checkpoints_rel_rms": rel_rms(chk1, chk0)}


def seq_configs():
    """The seq forward's sweep: one channel a lane (BLOCK_D = 32·warps) up to four (BLOCK_D = 128, 1 warp),
    each with 1 to 4 stages of register prefetch."""
    LC = sst.LaunchConfig
    shapes = [(32, 1), (64, 1), (64, 2), (128, 1), (128, 2), (128, 4)]
    return [LC(bd, w, 8, 4, "seq", st) for bd, w in shapes for st in range(1, sst.MAX_FWD_STAGES + 1)]


def bench_layer(name, bsz, L, d, N, L_ref, bw, configs):
    dtype = torch.bfloat16
    row = {"shape": name, "B": bsz, "L": L, "D": d, "N": N, "dtype": "bf16"}
    ins = scan_inputs(bsz, L, d, N, dtype)
    floor_f, floor_fb, nbytes, exps = scan_floor(bsz, L, d, N, 2, bw)
    row.update(floor_fwd_ms=floor_f, floor_fwd_bwd_ms=floor_fb, fwd_bytes=nbytes, exps=exps)

    def fwd_of(cfg):
        return lambda: sst.scan_forward(*ins, True, None, False, False, config=cfg)

    sweep = []
    for cfg in configs:
        y, _, chk = sst.scan_forward(*ins, True, None, False, True, config=cfg)
        f_ms = timed(fwd_of(cfg), ARGS.iters)
        b_ms = None
        if cfg.fwd_kind == "chunk":  # the backward does not depend on the forward's kind: time it once per bwd config
            dy = torch.randn_like(y)
            b_ms = timed(lambda: sst.scan_backward(dy, *ins, True, chk, False, config=cfg), ARGS.iters)
        sweep.append({"config": cfg.__dict__, "fwd_ms": f_ms, "bwd_ms": b_ms, "fwd_kind": cfg.fwd_kind})
        del chk
    row["triton_sweep"] = sweep
    row["triton_fwd_ms"] = min(s["fwd_ms"] for s in sweep)
    row["triton_bwd_ms"] = min(s["bwd_ms"] for s in sweep if s["bwd_ms"] is not None)
    row["triton_default_fwd_ms"] = sweep[0]["fwd_ms"]  # configs[0] is the default LaunchConfig
    best = {}
    for kind in sst.FWD_KINDS:
        runs = [s for s in sweep if s["fwd_kind"] == kind]
        if runs:
            best[kind] = min(runs, key=lambda s: s["fwd_ms"])
            row[f"triton_{kind}_fwd_ms"] = best[kind]["fwd_ms"]
            row[f"triton_{kind}_best_config"] = best[kind]["config"]
            # The training forward also writes the checkpoints every CHUNK steps.
            row[f"triton_{kind}_fwd_with_checkpoints_ms"] = timed(
                lambda: sst.scan_forward(*ins, True, None, False, True, config=sst.LaunchConfig(**best[kind]["config"])),
                ARGS.iters)
    row["triton_fwd_best_kind"] = min(best, key=lambda k: best[k]["fwd_ms"])
    if "seq" in best:
        row.update(seq_agreement(ins, sst.LaunchConfig(**best["seq"]["config"])))

    # The full-length autograd through the dense-state PyTorch scan would need tens of GB: time the
    # chunked path at L_ref and scale linearly in L (it is linear: L/T chunks of equal work).
    scale = L / L_ref
    ref_ins = scan_inputs(bsz, L_ref, d, N, dtype, requires_grad=True)
    ref_f = timed(lambda: selective_scan_chunked(*ref_ins, True), max(3, ARGS.iters // 4))

    def ref_fb():
        selective_scan_chunked(*ref_ins, True).float().sum().backward()

    row["ref_chunked_L"] = L_ref
    row["ref_fwd_ms_extrapolated"] = ref_f * scale
    row["ref_fwd_bwd_ms_extrapolated"] = timed(ref_fb, max(3, ARGS.iters // 4)) * scale
    row["triton_fwd_over_floor"] = row["triton_fwd_ms"] / floor_f
    row["triton_fwd_bwd_ms"] = row["triton_fwd_ms"] + row["triton_bwd_ms"]
    row["triton_fwd_bwd_over_floor"] = row["triton_fwd_bwd_ms"] / floor_fb
    return row


def bench_training(cfg, bsz, L, iters):
    """ms per AdamW step (bf16 autocast, fp32 master weights) for each backend."""
    out = {}
    for backend in ("triton", "reference"):
        torch.manual_seed(0)
        model = MambaLM(cfg).to(DEV).set_backend(backend)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        ids = torch.randint(0, cfg.vocab_size, (bsz, L + 1), device=DEV)

        def step():
            with torch.autocast(DEV, dtype=torch.bfloat16):
                logits = model(ids[:, :-1])
            loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten())
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        try:
            out[backend] = timed(step, iters, warmup=2)
        except torch.cuda.OutOfMemoryError:  # the PyTorch path keeps [B, T, D, N] chunk states for autograd
            out[backend] = float("nan")
            out[f"{backend}_error"] = "out of memory"
        if DEV == "cuda":
            out[f"{backend}_peak_mem_gb"] = torch.cuda.max_memory_allocated() / 1e9
            torch.cuda.reset_peak_memory_stats()
        out["params"] = sum(p.numel() for p in model.parameters())
        del model, opt
    return out


def main():
    LC = sst.LaunchConfig
    meta = {
        **environment(DEV),
        "triton_interpret": bool(ARGS.smoke),
        "sfu_ex2_per_s_assumed": SFU_EX2_PER_S,
        "chunk": sst.CHUNK,
    }
    if ARGS.smoke:
        bw = copy_bandwidth(1 << 22)
        shapes = [("smoke", 1, 20, 8, 16, 10)]
        configs = [LC(), LC(8, 2, 4, 2, "chunk"), LC(8, 1, 4, 2, "seq", 2), LC(8, 1, 4, 2, "seq", 4)]
        train_cfg, tb, tl_ = MambaConfig(d_model=8, n_layer=1, vocab_size=64, d_state=4), 1, 8
    else:
        bw = copy_bandwidth(1 << 30)
        # B·L = 16k tokens at L = 2048; reference chunked path timed at L = 256 and scaled.
        shapes = [("mamba-130m layer", 8, 2048, 1536, 16, 256), ("mamba-1.4b layer", 8, 2048, 4096, 16, 256)]
        configs = [LC(), *(LC(*c, "chunk") for c in ((16, 4, 8, 4), (8, 4, 4, 4), (16, 8, 8, 8), (32, 8, 16, 8),
                                                          (32, 4, 8, 2), (64, 8, 16, 4)))]
        configs += seq_configs()
        train_cfg, tb, tl_ = MambaConfig(d_model=512, n_layer=10, vocab_size=8192), 16, 512
    meta["copy_bandwidth_gbs"] = bw / 1e9
    rows = [bench_layer(*s, bw=bw, configs=configs) for s in shapes]
    train = bench_training(train_cfg, tb, tl_, iters=3 if ARGS.smoke else 10)
    train.update(config=train_cfg.to_dict(), batch=tb, seq_len=tl_, optimizer="AdamW", autocast="bf16")
    result = {"meta": meta, "scan": rows, "train_step": train}
    os.makedirs(os.path.dirname(os.path.abspath(ARGS.out)), exist_ok=True)
    with open(ARGS.out, "w") as f:
        json.dump(result, f, indent=2)

    print(f"copy bandwidth {bw / 1e9:.0f} GB/s; SFU rate assumed {SFU_EX2_PER_S:.2e} ex2/s; {meta['device']}")
    print("| shape | floor fwd ms | triton fwd ms | x floor | floor f+b ms | triton f+b ms | x floor "
          "| chunked ref fwd ms* | chunked ref f+b ms* |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['shape']} B={r['B']} L={r['L']} D={r['D']} | {r['floor_fwd_ms']:.3f} | {r['triton_fwd_ms']:.3f} "
              f"| {r['triton_fwd_over_floor']:.2f} | {r['floor_fwd_bwd_ms']:.3f} | {r['triton_fwd_bwd_ms']:.3f} "
              f"| {r['triton_fwd_bwd_over_floor']:.2f} | {r['ref_fwd_ms_extrapolated']:.1f} "
              f"| {r['ref_fwd_bwd_ms_extrapolated']:.1f} |")
    print(f"* timed at L={rows[0]['ref_chunked_L']} and scaled linearly to L")
    for r in rows:
        print(f"sweep {r['shape']}: " + "; ".join(
            f"{tuple(s['config'].values())}: fwd {s['fwd_ms']:.3f}"
            + (f" bwd {s['bwd_ms']:.3f}" if s["bwd_ms"] is not None else "") for s in r["triton_sweep"]))
        kinds = [k for k in sst.FWD_KINDS if f"triton_{k}_fwd_ms" in r]
        print(f"forward kinds {r['shape']}: " + "; ".join(
            f"{k} {r[f'triton_{k}_fwd_ms']:.3f} ms ({r[f'triton_{k}_fwd_ms'] / r['floor_fwd_ms']:.2f}x floor; "
            f"with checkpoints {r[f'triton_{k}_fwd_with_checkpoints_ms']:.3f} ms) "
            f"best {tuple(r[f'triton_{k}_best_config'].values())}" for k in kinds)
            + f" -> winner: {r['triton_fwd_best_kind']}")
        if "seq_vs_chunk_y_rel_rms" in r:
            print(f"seq vs chunk {r['shape']}: y rel RMS {r['seq_vs_chunk_y_rel_rms']:.2e}, "
                  f"checkpoints rel RMS {r['seq_vs_chunk_checkpoints_rel_rms']:.2e}")
    print(f"train step ({train['params'] / 1e6:.1f}M params, d_model={train_cfg.d_model}, n_layer={train_cfg.n_layer}, "
          f"vocab={train_cfg.vocab_size}, batch {tb}x{tl_}, AdamW, bf16 autocast): "
          f"triton {train['triton']:.1f} ms, reference {train['reference']:.1f} ms")


if __name__ == "__main__":
    main()
