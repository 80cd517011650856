"""The generated tables of BENCHMARKS.md outside the issue-15 section, one renderer a results file (tables.py runs them).

Each renderer reads its files in benchmarks/results/ and returns the markdown between `<!-- generated:NAME -->`
and `<!-- /generated:NAME -->`: the table, then the file(s) it came from with what they record about the run
(command, date, device, versions, commit). Numbers are formatted here and nowhere else; prose around a table
may quote them, but a table is never typed by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
VERSION_KEYS = ("python", "torch", "triton", "transformers", "mamba_ssm", "causal_conv1d", "onnxruntime")


def load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def f(v, fmt: str = "{:.1f}") -> str:
    return "-" if v is None else fmt.format(v)


def meta(run: dict) -> dict:
    """The run's provenance, wherever the file keeps it: a `meta` object or the top level, versions flat or in a
    `versions` object."""
    m = dict(run.get("meta", run))
    m.update(m.get("versions") or {})
    models = run.get("models")
    if isinstance(models, dict):  # family_train.json: the versions are recorded per trained model
        for part in models.values():
            m.update({k: v for k, v in (part.get("versions") or {}).items() if not m.get(k)})
    return m


def sources(*names: str) -> str:
    """`Source:` lines for the files a table was rendered from."""
    lines = []
    for name in names:
        m = meta(load(name))
        parts = [f"`{m['command']}`" if m.get("command") else "command not recorded", (m.get("date") or "")[:10],
                 m.get("device_name") or m.get("device")]
        parts += [f"{k} {m[k]}" for k in VERSION_KEYS if m.get(k)]
        parts.append(f"commit {m['commit']}" if m.get("commit") else
                     f"commit not recorded (results committed in {m['committed_in']})" if m.get("committed_in")
                     else "commit not recorded")
        lines.append(f"- `results/{name}`: " + ", ".join(p for p in parts if p))
    return ("Source:\n" if len(lines) == 1 else "Sources:\n") + "\n".join(lines)


def table(head: list[str], rows: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
                     + ["| " + " | ".join(r) + " |" for r in rows])


def ms(v) -> str:
    """Milliseconds as the tables print them: whole from 100 ms up, else one decimal."""
    return f(v, "{:.0f}" if v is not None and v >= 100 else "{:.1f}")


def times(v, bold: bool = False) -> str:
    s = f(v, "{:.0f}×" if v is not None and v >= 10 else "{:.2f}×")
    return f"**{s}**" if bold else s


# --- speed ----------------------------------------------------------------------------------------------------------
DENSE_FILES = ("bench_dense_h200_1p4b.json", "bench_dense_cpu.json")
DTYPES = {"bfloat16": "bf16", "float32": "fp32", "float16": "fp16"}
SHAPE_LABELS = {"tiny": "tiny (d 64, 2 layers)", "small": "small (d 256, 4 layers)"}


def dense() -> str:
    """Our MambaLM against transformers' MambaForCausalLM (its PyTorch loop), same weights, same run."""
    rows = []
    for name in DENSE_FILES:
        run = load(name)
        # older files: device "cuda" / "cpu" and the name in device_name; newer: the name in device
        gpu = not run["device"].startswith("cpu")
        device = run.get("device_name", run["device"]).removeprefix("NVIDIA ") if gpu else "CPU"
        for r in run["rows"]:
            if r["impl"] == "transformers" or "median_ms" not in r:
                continue
            base = next(b for b in run["rows"] if b["impl"] == "transformers" and b["shape"] == r["shape"]
                        and (b["batch"], b["seq_len"]) == (r["batch"], r["seq_len"]))
            backend = "auto = Triton" if gpu and r["backend"] == "auto" else r["backend"]
            rows.append([device, SHAPE_LABELS.get(r["shape"], r["shape"]), f"{r['batch']}×{r['seq_len']}",
                         DTYPES.get(r["dtype"], r["dtype"]), ms(base["median_ms"]), f"{ms(r['median_ms'])} ({backend})",
                         times(r["speedup_vs_transformers"], bold=r["speedup_vs_transformers"] > 1)])
    return table(["device", "shape", "B×L", "dtype", "transformers ms", "ours ms (backend)",
                  "ours / transformers speed"], rows) + "\n\n" + sources(*DENSE_FILES)


def scan() -> str:
    """One layer's selective scan: the two Triton forward kinds against the floor, and the training step."""
    run = load("bench_scan_h200.json")
    counts = {k: sum(s["fwd_kind"] == k for s in run["scan"][0]["triton_sweep"]) for k in ("chunk", "seq")}
    rows = []
    for r in run["scan"]:
        seq, chunk = r["triton_seq_fwd_ms"], r["triton_chunk_fwd_ms"]
        rows.append([f"{r['shape'].removesuffix(' layer')} (D {r['D']})", f"{r['floor_fwd_ms']:.3f} ms",
                     f"{chunk:.3f} ms", f"{seq:.3f} ms", f"{seq / r['floor_fwd_ms']:.1f}", f"{seq / chunk:.2f}",
                     f"{r['floor_fwd_bwd_ms']:.3f} ms", f"{r['triton_fwd_bwd_ms']:.3g} ms",
                     f"{r['triton_fwd_bwd_over_floor']:.0f}",
                     f"{r['ref_fwd_ms_extrapolated']:.0f} / {r['ref_fwd_bwd_ms_extrapolated']:.0f} ms"])
    head = ["layer", "floor fwd", f"`chunk` fwd (best of {counts['chunk']})", f"`seq` fwd (best of {counts['seq']})",
            "seq × floor", "seq / chunk", "floor fwd+bwd", "fwd+bwd", "× floor", "chunked PyTorch fwd / fwd+bwd*"]
    return table(head, rows) + "\n\n" + sources("bench_scan_h200.json")


IMPACT = "bench_impact_h200.json"


def _config(c: dict) -> str:
    if "block_t" in c:
        return f"{c['block_t']}×{c['block_d']}, {c['num_warps']} warp{'s' if c['num_warps'] > 1 else ''}"
    return f"{c['block_d']} ch., {c['num_warps']} warp{'s' if c['num_warps'] > 1 else ''}"


def impact() -> str:
    """The impact-score kernels against the eager reference, torch.compile and the floor."""
    rows = []
    for r in load(IMPACT)["rows"]:
        best = r["kernel_best"]["ms"]
        rows.append([r["shape"], r["criterion"], f"{r['floor_ms']:.3f} ms", f"{r['reference_ms']:.3g} ms",
                     f"{r['compile_ms']:.3g} ms", f"{r['kernel_default']['ms']:.3f} ms",
                     f"{best:.3f} ms ({_config(r['kernel_best']['config'])})", f"{best / r['floor_ms']:.1f}",
                     f"{r['reference_ms'] / best:.0f}×", f"{r['compile_ms'] / best:.1f}×"])
    head = ["layer", "criterion", "floor", "eager PyTorch", "torch.compile", "Triton default", "best of the sweep",
            "best / floor", "eager / best", "compile / best"]
    return table(head, rows) + "\n\n" + sources(IMPACT)


def impact_fused() -> str:
    """The pruned model's call (raw dt, softplus in the kernel) against materialising delta first."""
    rows = []
    for r in load(IMPACT)["rows"]:
        s = r["fused_softplus"]
        rows.append([r["shape"], r["criterion"], f"{s['materialised_ms']:.3f} ms ({s['softplus_ms']:.3f})",
                     f"{s['fused_ms']:.3f} ms", f"{s['rel_err']:.1e}"])
    return table(["layer", "criterion", "materialised (softplus alone)", "fused", "rel err vs reference"], rows) + \
        "\n\n" + sources(IMPACT)


SPLIT_FILES = ("sweep_scan_split_h200.json", "sweep_scan_split_h200_b8.json")


def split_scan() -> str:
    """The seq scan split into S segments, against chunk and seq, by B×L (the first file wins on a repeated case;
    the fastest in bold). `auto`'s rows are left out: they show the rule of that run, not today's."""
    cases: dict[tuple, dict] = {}
    for name in SPLIT_FILES:
        seen = {}
        for r in load(name)["rows"]:
            seen.setdefault((r["B"], r["L"]), {})[r["kind"]] = r["ms"]
        for case, kinds in seen.items():
            cases.setdefault(case, kinds)
    kinds = ["chunk", "seq", "split4", "split8", "split16", "split32"]
    rows = []
    for (b, length), t in cases.items():
        fastest = min(t[k] for k in kinds if k in t)
        rows.append([f"{b}×{length}"] + [("-" if k not in t else f"**{t[k]:.3f}**" if t[k] == fastest
                                          else f"{t[k]:.3f}") for k in kinds])
    head = ["B×L", "chunk", "seq", "split 4", "split 8", "split 16", "split 32"]
    return table(head, rows) + "\n\n" + sources(*SPLIT_FILES)


PRUNE = "bench_prune_h200.json"


def prune() -> str:
    """Dense and pruned prefill, eager and CUDA-graph replay; speed-ups against dense in the same run."""
    rows, by_case = [], {}
    for r in load(PRUNE)["rows"]:
        by_case.setdefault((r["B"], r["L"]), {})[r["budget"]] = r
    for (b, length), c in by_case.items():
        d = c[1.0]
        cells = [f"{b}×{length}", f"{d['ms']:.1f} / {f(d['graph_ms'])}"]  # no graph off CUDA
        cells += [f"{c[x]['speedup']:.2f}× / {f(c[x]['graph_speedup'], '{:.2f}×')}" for x in (0.8, 0.6, 0.4)]
        cells.append(" / ".join(f"{c[x]['ideal']:.2f}" for x in (0.8, 0.6, 0.4)))
        rows.append(cells)
    head = ["B×L", "dense eager / graph ms", "0.8 eager / graph", "0.6 eager / graph", "0.4 eager / graph",
            "ideal 0.8 / 0.6 / 0.4"]
    return table(head, rows) + "\n\n" + sources(PRUNE)


CONVERT = "bench_convert_h200.json"


def convert() -> str:
    run = load(CONVERT)
    t = run["timings"]
    head = ["stage", "load", "score", f"calibrate ({run['evaluations']} candidates)", "save", "total"]
    row = ["seconds", *(f"{t[k]:.1f}" for k in ("load", "score", "calibrate", "save")),
           f"**{run['convert_total_s']:.1f}** (target < 300)"]
    return table(head, [row]) + "\n\n" + sources(CONVERT)


# --- quality --------------------------------------------------------------------------------------------------------
FAMILY = "family_train.json"


def family() -> str:
    """The two trained models: same data, tokenizer and recipe, different depth."""
    run = load(FAMILY)
    rows = []
    for name, m in run["models"].items():
        rows.append([name + (" (bundled)" if name == "mamba-tiny" else ""), str(m["config"]["n_layer"]),
                     f"{m['parameters'] / 1e6:.2f} M", f"{m['final_train_loss']:.3f}", f"**{m['valid_ppl']:.2f}**",
                     f"{m['tokens_per_s']:,.0f}", f"{m['train_time_s']:.0f} s", f"{m['checkpoint_bytes'] / 1e6:.1f} MB (bf16)"])
    head = ["model", "layers", "params", "train loss", "valid ppl", "train tokens/s", "time", "on disk"]
    return table(head, rows) + "\n\n" + sources(FAMILY)


FINETUNE_FILES = ("finetune_h200_tiny.json", "finetune_h200_family.json")


def finetune() -> str:
    """Quality before and after N distillation steps, from the same calibrated start each time."""
    rows = []
    for name in FINETUNE_FILES:
        for m in load(name)["models"]:
            model, dense = Path(m["model"]).name, m["dense"]["ppl"]

            def row(variant, q, hkl=None, kl=None, sps=None):
                delta = "—" if q is m["dense"] else f"{100 * (q['ppl'] / dense - 1):+.2f} %".replace("-", "−")
                return [model, variant, f"{q['ppl']:.3f}", delta, f(hkl, "{:.4f}").replace("-", "—"),
                        f(kl, "{:.4f}").replace("-", "—"), f"{q['acc_mean']:.3f}", f"{q['acc_norm_mean']:.3f}",
                        f(sps, "{:.3f}").replace("-", "—")]

            rows.append(row("dense", m["dense"]))
            rows.append(row("sparse, before", m["sparse"], m["heldout_kl_before"], m["runs"][0]["before"]["kl"]))
            rows += [row(f"+ {r['steps']} steps", r["quality"], r["heldout_kl"], r["after"]["kl"], r["s_per_step"])
                     for r in m["runs"]]
    head = ["model", "variant", "ppl (protected)", "Δ ppl vs dense", "held-out KL", "ft-valid KL", "acc", "acc_norm",
            "s/step"]
    return table(head, rows) + "\n\n" + sources(*FINETUNE_FILES)


PAPER = "paper_h200.json"


def _vo(r: dict, bold: bool = False) -> str:
    v = f"{r['valid_ppl']:.2f}"
    return f"{f'**{v}**' if bold else v} / {r['ood_ppl']:.1f}"


def _acc(r: dict) -> list[str]:
    a = r.get("acc") or {}
    return [f(a.get("mean_acc"), "{:.3f}"), f(a.get("mean_acc_norm"), "{:.3f}")]


def paper_dense(name: str = PAPER) -> str:
    d = load(name)["dense"]
    rows = [[k, f"{v['flops']:.3g}".replace("e+0", "e"), f"{v['valid_ppl']:.2f}", f"{v['ood_ppl']:.1f}", *_acc(v)]
            for k, v in d.items()]
    return table(["model", "FLOPs/window", "valid ppl", "ood ppl", "mean acc", "mean acc_norm"], rows) + \
        "\n\n" + sources(name)


def _by_budget(entries: list[dict], key: str, names: tuple[str, ...], bold_best: bool) -> list[list[str]]:
    rows = []
    for budget in sorted({e["budget"] for e in entries}):
        cell = {e[key]: e for e in entries if e["budget"] == budget}
        best = min(c["valid_ppl"] for c in cell.values())
        rows.append([f"{budget:.1f}"] + [_vo(cell[n], bold_best and cell[n]["valid_ppl"] == best) for n in names])
    return rows


def paper_schedules(name: str = PAPER) -> str:
    names = ("calibrated", "linear", "uniform")
    return table(["budget", *names], _by_budget(load(name)["schedules"], "schedule", names, False))


def paper_criteria(name: str = PAPER) -> str:
    names = ("last", "global", "delta", "output", "random")
    return table(["budget", *names], _by_budget(load(name)["criteria"], "criterion", names, True))


def paper_equal_flops(name: str = PAPER) -> str:
    e = load(name)["equal_flops"]
    models = {k: v for k, v in e.items() if k != "budget"}
    best = {k: min(v[k] for v in models.values()) for k in ("valid_ppl", "ood_ppl")}
    rows = [[k, *(f"**{v[q]:{fmt}}**" if v[q] == best[q] else f"{v[q]:{fmt}}" for q, fmt in
                  (("valid_ppl", ".2f"), ("ood_ppl", ".1f"))), *_acc(v)] for k, v in models.items()]
    return table(["model", "valid ppl", "ood ppl", "mean acc", "mean acc_norm"], rows)


def paper_context(name: str = PAPER) -> str:
    ctx = load(name)["context"]
    names = [k for k in ctx[0] if k not in ("L", "note")]
    return table(["L", *names], [[str(r["L"]), *(f(r.get(n)) for n in names)] for r in ctx])


def paper_speed() -> str:
    s = load(PAPER)["speed"]
    rows = {r["budget"]: r for r in s["rows"]}
    pruned = [b for b in rows if b != 1.0]
    return (f"**F. Speed** — family-l prefill B={s['B']}, L={s['L']}: dense {rows[1.0]['ms']:.1f} ms; budget "
            + " / ".join(f"{b:g}" for b in pruned) + ": " + " / ".join(f"{rows[b]['speedup']:.2f}×" for b in pruned)
            + ".")


PRECISION = "precision_check_cpu.json"
PRECISION_ROWS = (  # (label, key in each case's rel_rms)
    ("fp64 logits moved by one bf16 rounding of the embeddings", "cond (fp64, embed x(1+2^-9 noise))"),
    ("ours bf16 vs fp64", "ours-bf16 vs truth"),
    ("transformers bf16 vs fp64", "hf-bf16 vs truth"),
    ("ours fp32 vs transformers fp32", "ours-fp32 vs hf-fp32"),
    ("ours with transformers' bf16 casts vs transformers bf16", "ours-bf16[all_hf] vs hf-bf16"),
)
INITS = {"hf": "transformers' random init", "torch": "our constructor init", "mamba_ssm": "mamba_ssm's training init"}


def _rel(v: float) -> str:
    return "**0.0**" if v == 0 else f"{v:.3f}" if v >= 0.1 else f"{v:.2e}".replace("e-0", "e-")


def precision() -> str:
    cases = load(PRECISION)["cases"]
    rows = [[label, *(_rel(c["rel_rms"][key]) for c in cases)] for label, key in PRECISION_ROWS]
    return table(["logits rel RMS", *(INITS.get(c["init"], c["init"]) for c in cases)], rows) + "\n\n" + \
        sources(PRECISION)


# --- numbers quoted in prose, rendered from the files that back them ----------------------------------------------
def _sci(v: float) -> str:
    return f"{v:.1e}".replace("e-0", "e-")


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:.0f} s" if seconds >= 60 else f"{seconds:.0f} s"


def _load(run: dict) -> str:
    a, b = run.get("loadavg_start"), run.get("loadavg_end")
    return "load not recorded" if not (a and b) else f"machine load average {a[0]:.1f} → {b[0]:.1f} over the run"


CONVERT_CPU = "bench_convert_cpu.json"


def convert_cpu() -> str:
    """The README's conversion command on the CPU: wall time, stages, and the KL of every schedule."""
    run = load(CONVERT_CPU)
    t, s, h = run["timings"], run["schedules"], run["holdout"]
    held = ("the search chose `linear`, so no held-out check was made" if h is None else
            f"on the {h['windows']} held-out windows {h['best_kl']:.4f} against {h['linear_kl']:.4f} for `linear` "
            f"({'fell back to `linear`' if h['fell_back'] else 'kept'})")
    return (f"On the CPU, the README's command `{run['readme_command']}` (CPU defaults: {run['samples']} windows of "
            f"{run['seq_len']} tokens, {run['max_evals']} candidates) took **{_minutes(run['wall_s'])}** wall in a fresh "
            f"process on the shared 2-core VM ({_load(run)}): load {t['load']:.1f} s, score {t['score']:.1f} s, "
            f"calibrate {t['calibrate']:.1f} s, save {t['save']:.1f} s, the rest start-up and imports. FLOPs ratio "
            f"{run['achieved_flops_ratio']:.4f}; calibration KL **{s['best']['kl']:.4f}** against {s['linear']['kl']:.4f} "
            f"for `linear` and {s['uniform']['kl']:.3f} for `uniform`; {held}.\n\n" + sources(CONVERT_CPU))


AUTOCAST = "finetune_autocast_cpu.json"


def finetune_autocast() -> str:
    """KL of bf16 autocast against KL of pruning, same windows."""
    c = load(AUTOCAST)["autocast_check"]
    kl = c["kl"]
    return (f"bf16 autocast is not what limits the KL: on {c['windows']} windows of {c['seq_len']} tokens of the "
            f"calibration text (`{c['text']}`), {c['model']}'s fp32 logits and its logits under bf16 autocast differ by "
            f"KL **{_sci(kl['autocast_bf16'])}** at the {c['protect']} protected positions, against "
            f"{kl['pruned_linear']:.3f} for pruning it at budget {c['budget']:g} (`linear` schedule, FLOPs "
            f"{c['flops_ratio']:.3f}) on the same windows; CPU.\n\n" + sources(AUTOCAST))


ONNX_FP16, ONNX_QUIET = "bench_onnx_cpu_fp16.json", "bench_onnx_cpu_quiet.json"


def onnx_fp16() -> str:
    """fp16 files: agreement with PyTorch fp16, the Casts onnxruntime's CPU EP adds, and their time."""
    run = load(ONNX_FP16)
    ort = [r for r in run["rows"] if r["runtime"] == "onnxruntime"]
    L = min(r["seq_len"] for r in ort)
    rms = sorted(r["rel_rms_vs_pytorch"] for r in ort)
    kept = "the same kept tokens" if all(r["kept_match"] for r in ort) else "**different kept tokens**"
    in_file = {v: run["exports"]["dense" if v == "dense" else f"sparse{L}"]["op_counts"].get("Cast", 0)
               for v in ("dense", "sparse")}
    executed = {v: round(run["profile"][f"L={L} {v} library"]["nodes_by_op"].get("Cast", 0)) for v in ("dense", "sparse")}

    def lib_ms(rows, variant):
        return next(r["median_ms"] for r in rows if r["seq_len"] == L and r["batch"] == 1 and r["threads"] == "default"
                    and r["variant"] == variant and r["runtime"] == "onnxruntime" and r["path"] == "library")

    quiet = load(ONNX_QUIET)["rows"]
    return (f"fp16 files pass the same checks: on the bundled {run['model']} (B = 1, L = {L}, budget {run['budget']:g}) "
            f"their logits are within {_sci(rms[0])}–{_sci(rms[-1])} relative RMS of PyTorch fp16, with {kept}, in stock "
            f"onnxruntime and with our library. onnxruntime's CPU EP runs part of them in fp32 behind Casts it inserts: "
            f"with the library it executes {executed['dense']} (dense) and {executed['sparse']} (sparse) Cast nodes a "
            f"run against the {in_file['dense']} and {in_file['sparse']} in the files. A correctness path: with the "
            f"library these prefills took {lib_ms(run['rows'], 'dense'):.1f} (dense) and "
            f"{lib_ms(run['rows'], 'sparse'):.1f} ms (sparse), {_load(run)}, against {lib_ms(quiet, 'dense'):.1f} and "
            f"{lib_ms(quiet, 'sparse'):.1f} ms for the fp32 files in the quiet rerun above (another run, at lower load)."
            f"\n\n" + sources(ONNX_FP16, ONNX_QUIET))


def regions() -> dict[str, str]:
    return {
        "dense": dense(), "scan": scan(), "impact": impact(), "impact_fused": impact_fused(),
        "split_scan": split_scan(), "prune": prune(), "convert": convert(), "family": family(),
        "finetune": finetune(), "paper_dense": paper_dense(), "paper_schedules": paper_schedules(),
        "paper_criteria": paper_criteria(), "paper_equal_flops": paper_equal_flops(),
        "paper_context": paper_context(), "paper_speed": paper_speed(), "precision": precision(),
        "convert_cpu": convert_cpu(), "finetune_autocast": finetune_autocast(), "onnx_fp16": onnx_fp16(),
    }
