"""Where the time of a pruned prefill goes (issue 6): torch.profiler over one dense and one pruned forward.

Mamba-1.4B shapes (d 2048, 48 layers), random weights, bf16, B=4, L=2048 (--batch, --seq-len), num_last=64,
budget 0.6 (--budget) with the `linear` schedule (protect 64), like benchmarks/bench_prune.py. For each model it prints the wall
time, the GPU time of each stage of a layer summed over the layers (CUDA events around the model's own
functions), the top CUDA kernels by total time, and the aten ops that launched the most kernel time.
The stage times come from a separate, instrumented run: a span also counts GPU idle time while the host
is behind, so small stages read high there; the kernel table is the ground truth.
`--variants` adds micro-benchmarks of alternatives for the costliest stages (impact-score input layouts,
conv1d and norm alternatives, each marked bit-for-bit equal or not); `--sweep` adds impact-kernel launch
configs. A checksum of the pruned model's decisions and logits goes to the JSON, and `--check FILE` compares
it with an earlier run's (a refactor must keep them bit for bit).

    PYTHONPATH=. python3 benchmarks/investigations/profile_prune.py --out $OUT/profile_prune.json [--variants] [--sweep]
    PYTHONPATH=. python3 benchmarks/investigations/profile_prune.py --smoke                           # CPU, tiny
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

import simba_convert.model.mamba as mamba_mod
import simba_convert.pruning.model as prune_mod
import simba_convert.pruning.select as select_mod
from simba_convert.model.config import MambaConfig
from simba_convert.model.mamba import MambaLM
from simba_convert.pruning import schedules
from simba_convert.pruning.model import PrunedMambaLM
from simba_convert.pruning.spec import PruningSpec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for the shared helper `common`
from common import environment, median_ms, sync  # noqa: E402


def log(*a):
    print(*a, flush=True)


class StageTimer:
    """Times the model's own functions while installed: GPU milliseconds per stage, summed over calls.

    Each wrapped call is bracketed by CUDA events on the current stream, so a stage's time is the GPU
    time of the kernels it enqueued (the host runs ahead; nothing synchronises until `totals`).
    On the CPU it falls back to host time around each call.
    """

    def __init__(self, dev):
        self.dev = dev
        self.spans = defaultdict(list)
        self._undo = []

    def _wrap(self, owner, attr, stage_of, static=False):
        orig = getattr(owner, attr)
        timer = self

        def wrapped(*a, **kw):
            stage = stage_of(a, kw)
            if timer.dev.type == "cuda":
                s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                s.record()
                out = orig(*a, **kw)
                e.record()
                timer.spans[stage].append((s, e))
            else:
                t0 = time.perf_counter()
                out = orig(*a, **kw)
                timer.spans[stage].append((t0, time.perf_counter()))
            return out

        setattr(owner, attr, staticmethod(wrapped) if static else wrapped)
        self._undo.append((owner, attr, owner.__dict__[attr] if static else orig))

    @contextlib.contextmanager
    def installed(self):
        fixed = lambda name: (lambda a, kw: name)  # noqa: E731
        self._wrap(mamba_mod.MambaBlock, "add_norm", fixed("add_norm"))
        self._wrap(mamba_mod.MambaMixer, "forward",
                   lambda a, kw: "mixer(+internals)" if kw.get("return_internals") else "mixer")
        self._wrap(mamba_mod, "causal_conv1d_ref", fixed("  mixer.conv1d+silu"))
        self._wrap(mamba_mod, "selective_scan", fixed("  mixer.scan"))
        self._wrap(prune_mod, "impact_score", fixed("impact_score"))
        self._wrap(prune_mod, "select_kept", fixed("select_kept"))
        self._wrap(prune_mod, "select_kept_dense_rows", fixed("select_kept"))
        self._wrap(prune_mod, "gather_rows", fixed("gather_rows"))
        self._wrap(prune_mod, "gather_slots", fixed("gather_slots"))
        self._wrap(prune_mod.PrunedMambaLM, "_freeze", fixed("_freeze"), static=True)
        self._wrap(MambaLM, "head", fixed("head"))
        try:
            yield self
        finally:
            for owner, attr, orig in reversed(self._undo):
                setattr(owner, attr, orig)
            self._undo.clear()

    def totals(self) -> dict[str, tuple[int, float]]:
        sync(self.dev)
        out = {}
        for stage, spans in self.spans.items():
            if self.dev.type == "cuda":
                ms = sum(s.elapsed_time(e) for s, e in spans)
            else:
                ms = sum((e - s) * 1e3 for s, e in spans)
            out[stage] = (len(spans), ms)
        return out


def kernel_table(prof, n: int) -> list[dict]:
    """Device activity (kernels, memcpy, memset) aggregated by name, by total time."""
    rows = defaultdict(lambda: [0, 0.0])
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            r = rows[e.name]
            r[0] += 1
            r[1] += e.time_range.elapsed_us() / 1e3
    ranked = sorted(rows.items(), key=lambda kv: -kv[1][1])
    return [{"kernel": k, "calls": c, "ms": ms} for k, (c, ms) in ranked[:n]], sum(v[1] for v in rows.values())


def op_table(prof, n: int, dev) -> list[dict]:
    """aten ops by the kernel time they launched themselves (self device time); host time on the CPU."""
    rows = []
    for e in prof.key_averages():
        if dev.type == "cuda":
            t = getattr(e, "self_device_time_total", None)
            t = e.self_cuda_time_total if t is None else t
        else:
            t = e.self_cpu_time_total
        if t > 0:
            rows.append({"op": e.key, "calls": e.count, "ms": t / 1e3})
    rows.sort(key=lambda r: -r["ms"])
    return rows[:n]


def short(name: str, width: int = 110) -> str:
    return name if len(name) <= width else name[: width - 3] + "..."


def checksum(logits: torch.Tensor, info) -> dict:
    """Hashes of the kept positions of every layer and of the logits' raw bytes, and two sums of the logits."""
    kept = torch.cat([k.flatten() for k in info.kept]).cpu().numpy().tobytes() if info is not None else b""
    lf = logits.float()
    return {"kept_sha256": hashlib.sha256(kept).hexdigest(),
            "logits_sha256": hashlib.sha256(logits.contiguous().view(torch.uint8).cpu().numpy().tobytes()).hexdigest(),
            "logits_sum": float(lf.double().sum()), "logits_abs_sum": float(lf.double().abs().sum())}


def profile_one(name, fn, dev, top):
    """Wall time, per-stage GPU time, and the kernel/op tables of one forward."""
    ms = median_ms(fn, dev, reps=5, warmup=2, wall=True)
    timer = StageTimer(dev)
    with timer.installed():
        fn()
    stages = timer.totals()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=acts) as prof:
        fn()
        sync(dev)
    kernels, kernel_ms = kernel_table(prof, top) if dev.type == "cuda" else ([], 0.0)
    ops = op_table(prof, 20, dev)
    log(f"\n=== {name}: wall {ms:.2f} ms (median of 5), GPU kernel time under the profiler {kernel_ms:.2f} ms ===")
    log("stage (GPU ms summed over layers, instrumented run; 'mixer' includes its conv/scan rows)")
    for stage, (calls, sms) in sorted(stages.items(), key=lambda kv: -kv[1][1]):
        log(f"  {stage:<22} calls {calls:4d}  {sms:9.2f} ms")
    if kernels:
        log(f"top {top} CUDA kernels by total time")
        log(f"  {'ms':>8} {'calls':>6} {'%':>5}  kernel")
        for r in kernels:
            log(f"  {r['ms']:8.2f} {r['calls']:6d} {100 * r['ms'] / kernel_ms:5.1f}  {short(r['kernel'])}")
    log("top aten ops by self " + ("device" if dev.type == "cuda" else "CPU") + " time")
    for r in ops:
        log(f"  {r['ms']:8.2f} {r['calls']:6d}  {short(r['op'], 80)}")
    return {"wall_ms": ms, "kernel_ms": kernel_ms, "stages": {k: {"calls": c, "ms": v} for k, (c, v) in stages.items()},
            "kernels": kernels, "ops": ops}


def time_gpu(fn, dev, reps=20) -> float:
    """Median GPU ms of fn (CUDA events), host ms on the CPU."""
    return median_ms(fn, dev, reps=reps, warmup=1)


def equal(a, b) -> bool:
    return a.shape == b.shape and bool(torch.equal(a, b))


@torch.no_grad()
def variants(model, cfg, bsz, L, dev, dtype, sweep: bool) -> dict:
    """Alternatives for the costly stages of one layer, timed on the layer's real inputs; `equal` says whether an
    alternative gives the same values bit for bit (a candidate for the model only if it does, or if its
    difference is accepted)."""
    import torch.nn.functional as F

    from simba_convert.ops.conv1d import causal_conv1d_ref
    from simba_convert.ops.score import impact_score
    from simba_convert.ops.scan import selective_scan

    out = {}
    layer = model.backbone.layers[0]
    mixer = layer.mixer
    h = torch.randn(bsz, L, cfg.d_model, device=dev, dtype=dtype)
    _, it = mixer(h, return_internals=True)
    log(f"\n=== variants at one layer, B={bsz} L={L} ===")
    log(f"u strides {tuple(it.u.stride())}, Bm strides {tuple(it.Bm.stride())}, delta {it.delta.dtype}")

    def row(table, name, ms, same=None):
        table[name] = {"ms": ms, "equal": same}
        log(f"  {name:<40} {ms:8.3f} ms" + ("" if same is None else f"   equal: {same}"))

    # conv1d: as the mixer runs it (transposing copies around a [B, D, L] conv) against cuDNN's depthwise conv
    # on a channels-last view, which reads and writes [B, L, D] rows directly.
    x = mixer.in_proj(h).chunk(2, dim=-1)[0]
    w, b = mixer.conv1d.weight.squeeze(1), mixer.conv1d.bias
    K, D = w.shape[1], w.shape[0]
    cur = causal_conv1d_ref(x, w, b).contiguous()

    def conv_channels_last():
        xp = F.pad(x, (0, 0, K - 1, 0))  # [B, L+K-1, D] rows
        y = F.conv2d(xp.transpose(1, 2).unsqueeze(2), w.view(D, 1, 1, K).to(x.dtype), b.to(x.dtype), groups=D)
        return F.silu(y.squeeze(2).transpose(1, 2))

    t = {}
    row(t, "conv+silu, then contiguous (model)", time_gpu(lambda: causal_conv1d_ref(x, w, b).contiguous(), dev))
    alt = conv_channels_last()
    row(t, f"conv cuDNN channels-last (contig {alt.is_contiguous()})", time_gpu(conv_channels_last, dev), equal(alt, cur))
    if not equal(alt, cur):
        t["conv_channels_last_max_abs_diff"] = float((alt.float() - cur.float()).abs().max())
        t["conv_channels_last_frac_differing"] = float((alt != cur).float().mean())
        log(f"    differs: max |diff| {t['conv_channels_last_max_abs_diff']:.3e}, fraction {t['conv_channels_last_frac_differing']:.2e}")
    dt, Bm, Cm = mixer._ssm_inputs(cur)
    A, Dsk, db = mixer.A(), mixer.D.float(), mixer.dt_proj.bias.float()
    z = mixer.in_proj(h).chunk(2, dim=-1)[1]
    y0 = selective_scan(cur, dt, A, Bm, Cm, Dsk, z, db, True)
    Bc, Cc = Bm.contiguous(), Cm.contiguous()
    row(t, "scan (B, C split views: model)", time_gpu(lambda: selective_scan(cur, dt, A, Bm, Cm, Dsk, z, db, True), dev))
    row(t, "scan (B, C contiguous)", time_gpu(lambda: selective_scan(cur, dt, A, Bc, Cc, Dsk, z, db, True), dev),
        equal(selective_scan(cur, dt, A, Bc, Cc, Dsk, z, db, True), y0))
    row(t, "internals delta softplus (model)", time_gpu(lambda: F.softplus(torch.add(dt, db)), dev))
    row(t, "mixer", time_gpu(lambda: mixer(h), dev))
    row(t, "mixer + internals", time_gpu(lambda: mixer(h, return_internals=True), dev))
    res32 = torch.randn(bsz, L, cfg.d_model, device=dev)
    hid = torch.randn(bsz, L, cfg.d_model, device=dev, dtype=dtype)
    n0 = layer.add_norm(hid, res32)[0]
    row(t, "add_norm (model)", time_gpu(lambda: layer.add_norm(hid, res32), dev))
    if hasattr(F, "rms_norm") and cfg.rms_norm:
        nw = layer.norm.weight

        def fused():
            r = hid.to(res32.dtype) + res32
            return F.rms_norm(r, (r.shape[-1],), nw.float(), layer.norm.eps).to(nw.dtype), r

        fz = fused()[0]
        row(t, "add + F.rms_norm", time_gpu(fused, dev), equal(fz, n0))
        if not equal(fz, n0):
            t["rms_norm_frac_differing"] = float((fz != n0).float().mean())
            log(f"    differs in a fraction {t['rms_norm_frac_differing']:.2e} of the bf16 outputs")
    out["layer"] = t

    # impact score `last` on the layer's real internals: input layouts and the mask
    mask = torch.ones(bsz, L, dtype=torch.bool, device=dev)
    Bs = mixer._ssm_inputs(it.u)[1]  # the split view, as before the change
    Bt = it.Bm.transpose(1, 2).contiguous().transpose(1, 2)  # [B, L, N] with time contiguous
    ref = impact_score(it.u, it.delta, it.A, Bs, it.Cm, criterion="last", mask=mask)
    imp = {}
    for name, args, m in (("B split view, mask", (it.u, it.delta, it.A, Bs, it.Cm), mask),
                          ("B split view, mask None", (it.u, it.delta, it.A, Bs, it.Cm), None),
                          ("B contiguous, mask None (model)", (it.u, it.delta, it.A, it.Bm, it.Cm), None),
                          ("B time-contiguous, mask None", (it.u, it.delta, it.A, Bt, it.Cm), None),
                          ("B contiguous, mask None, delta bf16 (not exact)",
                           (it.u, it.delta.to(dtype), it.A, it.Bm, it.Cm), None)):
        s = impact_score(*args, criterion="last", mask=m)
        row(imp, f"impact {name}", time_gpu(lambda: impact_score(*args, criterion="last", mask=m), dev), equal(s, ref))
    out["impact"] = imp
    if sweep and dev.type == "cuda":
        out["impact_sweep"] = impact_sweep(it, ref, L, dev)

    # selection and bookkeeping of one pruning step
    scores = ref
    protected = torch.zeros_like(mask)
    protected[:, -64:] = True
    k_keep = int(0.6 * L)
    kn = [k_keep] * bsz
    sel = {}
    row(sel, "select_kept (with masks)", time_gpu(lambda: select_mod.select_kept(scores, mask, protected, kn), dev))
    slots, _ = select_mod.select_kept(scores, mask, protected, kn)
    row(sel, "select_kept_dense_rows (model, no padding)",
        time_gpu(lambda: select_mod.select_kept_dense_rows(scores, 64, k_keep), dev),
        equal(select_mod.select_kept_dense_rows(scores, 64, k_keep), slots))
    pos = torch.arange(L, device=dev).expand(bsz, L)
    row(sel, "stream = hidden + residual", time_gpu(lambda: hid.to(res32.dtype) + res32, dev))
    row(sel, "gather stream fp32, element-wise", time_gpu(lambda: select_mod.gather_slots(res32, slots), dev))
    row(sel, "gather stream fp32, rows", time_gpu(lambda: select_mod.gather_rows(slots, res32), dev))
    row(sel, "gather hidden bf16 + residual fp32, rows (model)", time_gpu(lambda: select_mod.gather_rows(slots, hid, res32), dev))
    frozen = res32.new_zeros(bsz, L + 1, cfg.d_model)
    row(sel, "freeze scatter", time_gpu(lambda: PrunedMambaLM._freeze(frozen, res32, pos, mask, L), dev))
    out["select"] = sel
    return out


def impact_sweep(it, ref, L, dev) -> list[dict]:
    from simba_convert.ops.score.triton import impact_score_triton

    k_keep = int(0.6 * L)
    ref_top = torch.topk(ref, k_keep, dim=1).indices.sort(1).values
    rows = []
    log("  impact `last` sweep: block_t block_d chunks warps -> ms, max rel diff, same top-60%")
    for bt, bd, nw in ((16, 32, 4), (32, 32, 4), (16, 64, 4), (32, 64, 8), (16, 16, 2)):
        for ch in (1, 4, 16):
            cfg_k = dict(block_t=bt, block_d=bd, chunks=ch, num_warps=nw)
            run = lambda: impact_score_triton(it.u, it.delta, it.A, it.Bm, it.Cm, criterion="last", config=cfg_k)  # noqa: E731
            try:
                s = run()
                ms = time_gpu(run, dev)
            except Exception as exc:  # a config that does not compile is a row, not a failure
                log(f"    {bt:3d} {bd:3d} {ch:3d} {nw:2d} -> failed: {exc!r:.100}")
                continue
            rel = float(((s - ref).abs() / ref.abs().clamp_min(1e-30)).max())
            same = equal(torch.topk(s, k_keep, dim=1).indices.sort(1).values, ref_top)
            rows.append({**cfg_k, "ms": ms, "max_rel_diff": rel, "bitwise": equal(s, ref), "same_top": same})
            log(f"    {bt:3d} {bd:3d} {ch:3d} {nw:2d} -> {ms:7.3f} ms  rel {rel:.1e}  bitwise {equal(s, ref)}  same_top {same}")
    return rows


def host_profile(name, fn, dev, top=30) -> list[dict]:
    """cProfile of one forward's host side (after a warm-up): functions by own time, with their call counts."""
    import cProfile
    import pstats

    fn()
    sync(dev)
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    fn()
    prof.disable()
    host = (time.perf_counter() - t0) * 1e3
    sync(dev)
    stats = pstats.Stats(prof).stats
    rows = sorted(({"function": f"{os.path.basename(k[0])}:{k[1]}({k[2]})", "calls": v[1], "own_ms": v[2] * 1e3,
                    "cum_ms": v[3] * 1e3} for k, v in stats.items()), key=lambda r: -r["own_ms"])[:top]
    log(f"\n=== host profile, {name}: {host:.1f} ms to enqueue one forward (under cProfile) ===")
    log("   own ms   cum ms   calls  function")
    for r in rows:
        log(f"  {r['own_ms']:7.2f}  {r['cum_ms']:7.2f}  {r['calls']:6d}  {r['function'][:110]}")
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--variants", action="store_true", help="also time alternatives of the costly stages")
    ap.add_argument("--sweep", action="store_true", help="with --variants: sweep the impact kernel's launch configs")
    ap.add_argument("--check", default=None, help="JSON of an earlier run: the checksums must match")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--batch", type=int, default=4, help="B on the GPU (B=1 is where pruning loses, BENCHMARKS.md)")
    ap.add_argument("--seq-len", type=int, default=2048, help="L on the GPU")
    ap.add_argument("--budget", type=float, default=0.6)
    ap.add_argument("--host-profile", action="store_true",
                    help="also cProfile the host side of one eager forward of each model (where launch time goes)")
    args = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    if args.smoke:
        cfg, dtype, bsz, L, P = MambaConfig(d_model=64, n_layer=4, vocab_size=512), torch.float32, 2, 128, 16
    else:
        cfg, dtype, bsz, L, P = (MambaConfig(d_model=2048, n_layer=48, vocab_size=50277), torch.bfloat16, args.batch,
                                 args.seq_len, 64)
    budget = args.budget
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.device(dev):  # initialise on the device: 1.4B parameters take long on the host
        model = MambaLM(cfg)
    model = model.to(dtype).eval()
    log(f"model built in {time.perf_counter() - t0:.1f} s on {dev} ({torch.cuda.get_device_name() if dev.type == 'cuda' else 'cpu'})")
    ids = torch.randint(0, cfg.vocab_size, (bsz, L), device=dev)
    r = schedules.schedule_for_budget("linear", cfg, budget, L, P)
    pm = PrunedMambaLM(model, PruningSpec(r, protect=P))
    result = {"meta": {**environment(dev), "B": bsz, "L": L, "budget": budget, "protect": P, "dtype": str(dtype),
                       "keep_ratios": list(r)}}
    with torch.no_grad():
        result["dense"] = profile_one("dense", lambda: model(ids, num_last=P), dev, args.top)
        result["pruned"] = profile_one(f"pruned budget {budget}", lambda: pm(ids, num_last=P), dev, args.top)
        logits, info = pm(ids, num_last=P, return_info=True)
        result["checksum"] = {"pruned": checksum(logits, info), "dense": checksum(model(ids, num_last=P), None)}
    log(f"\nspeed-up {result['dense']['wall_ms'] / result['pruned']['wall_ms']:.2f}x; checksums {json.dumps(result['checksum'])}")
    if args.check:
        with open(args.check) as f:
            old = json.load(f)["checksum"]
        same = {k: old[k] == result["checksum"][k] for k in old}
        result["check"] = same
        log(f"checksums equal to {args.check}: {same}")
    if args.host_profile:
        with torch.no_grad():
            result["host_profile"] = {"dense": host_profile("dense", lambda: model(ids, num_last=P), dev),
                                      "pruned": host_profile("pruned", lambda: pm(ids, num_last=P), dev)}
    if args.variants:
        result["variants"] = variants(model, cfg, bsz, L, dev, dtype, args.sweep)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    if args.check and not all(result["check"].values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
