"""BENCHMARKS.md's generated tables, rendered from the results files (never typed in by hand).

A generated region of BENCHMARKS.md sits between `<!-- generated:NAME -->` and `<!-- /generated:NAME -->`;
`python3 benchmarks/tables.py` rewrites every region from the JSON files named below, and `--check` exits 1
when a region differs from what the files give (CI runs the check, so a table cannot drift from its data).

    python3 benchmarks/tables.py            # rewrite BENCHMARKS.md's generated regions
    python3 benchmarks/tables.py --check    # exit 1 if they are out of date
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from tables_render import regions as other_regions  # the other sections' tables (this folder is on sys.path)
from tables_library import regions as library_regions
from tables_scaling import regions as scaling_regions

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DOC = HERE.parent / "BENCHMARKS.md"

# A case measured in several files is taken from the first that has it: re-runs come first.
VS_MAMBA_FILES = ("vs_mamba_h200.json",)
VS_MAMBA2_FILES = ("vs_mamba2_h200_k8k16.json",)
VS_MAMBA2_EARLIER_FILES = ("vs_mamba2_h200.json",)  # K = 1 and the triton backend, an earlier commit
VS_MAMBA2_SSD_FILES = ("vs_mamba2_h200_triton.json",)
VS_MAMBA2_PROFILE_FILES = ("vs_mamba2_h200_profile.json",)
SSD_SWEEP_FILES = ("ssd_sweep_h200.json",)


def _f(v, fmt="{:.1f}") -> str:
    return "-" if v is None else fmt.format(v)


def _load(names) -> list[dict]:
    return [json.loads((RESULTS / n).read_text()) for n in names if (RESULTS / n).exists()]


def _sources(runs: list[dict]) -> str:
    lines = []
    for r in runs:
        m = r["meta"]
        lines.append(f"- `{m['command']}` — {m['date']}, {m['device']}, torch {m['torch']}, triton {m.get('triton')}, "
                     f"mamba_ssm {m.get('mamba_ssm')}, causal_conv1d {m.get('causal_conv1d')}, commit {m.get('commit')}")
    return "\n".join(lines)


def _pruned_kind(impl: str):
    """"ours-pruned-0.6-every8" -> (0.6, 8); "ours-pruned-0.4" -> (0.4, 1); None for other rows."""
    m = re.fullmatch(r"ours-pruned-([0-9.]+)(?:-every(\d+))?", impl)
    return (float(m.group(1)), int(m.group(2) or 1)) if m else None


def vs_mamba_prefill(runs: list[dict]) -> str:
    """One row per B×L: graph-replay ms of mamba_ssm, our dense model per backend, our pruned models (best backend)
    per budget and prune interval K, and the pruned models against dense mamba_ssm (same run)."""
    rows = [r for run in runs for r in run["rows"] if "graph_ms" in r]
    cases = sorted({(r["B"], r["L"]) for r in rows}, key=lambda c: (c[1], c[0]))

    def get(case, impl, backend=None):
        return next((r for r in rows if (r["B"], r["L"]) == case and r["impl"] == impl
                     and (backend is None or r["backend"] == backend)), {})

    def best(case, kind):
        ms = [r["graph_ms"] for r in rows if (r["B"], r["L"]) == case and _pruned_kind(r["impl"]) == kind]
        return min(ms) if ms else None

    backends = sorted({r["backend"] for r in rows if r["backend"] != "-"})
    kinds = sorted({k for r in rows if (k := _pruned_kind(r["impl"]))}, key=lambda k: (-k[0], k[1]))
    hf = any(r["impl"] == "transformers" for r in rows)
    head = ["B×L", "mamba_ssm dense"] + (["transformers"] if hf else []) + [f"ours dense ({b})" for b in backends]
    head += [f"pruned {b:g}, K={k}" for b, k in kinds] + ["FLOPs ratio at 0.6"]
    budgets = list(dict.fromkeys(b for b, _ in kinds))
    ks = {b: [k for bb, k in kinds if bb == b] for b in budgets}
    head += [f"pruned {b:g} vs mamba_ssm (K = {' / '.join(map(str, ks[b]))})" for b in budgets]
    out = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for case in cases:
        base = get(case, "mamba_ssm").get("graph_ms")
        cells = [f"{case[0]}×{case[1]}", _f(base)] + ([_f(get(case, "transformers").get("graph_ms"))] if hf else [])
        for be in backends:
            ms = get(case, "ours-dense", be).get("graph_ms")
            cells.append(f"{_f(ms)} ({_f(base / ms if base and ms else None, '{:.2f}×')})")
        cells += [_f(best(case, k)) for k in kinds]
        cells.append(_f(get(case, "ours-pruned-0.6").get("flops_ratio"), "{:.3f}"))
        for b in budgets:
            cells.append(" / ".join(f"**{base / ms:.2f}×**" if base and ms else "-"
                                    for ms in (best(case, (b, k)) for k in ks[b])))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n\nSources:\n" + _sources(runs)


def vs_mamba_kernels(runs: list[dict]) -> str:
    krows = [k for run in runs for k in run.get("kernels", [])]
    if not krows:
        return "(no kernel rows in the results files)"
    out = ["| B×L | kernel (one 1.4B layer) | ours ms | mamba_ssm / causal_conv1d ms | ours / theirs | floor ms | "
           "ours / floor |", "|---|---|---|---|---|---|---|"]
    for k in krows:
        o, t, fl = k.get("ours_ms"), k.get("mamba_ms"), k["floor_ms"]
        out.append(f"| {k['B']}×{k['L']} | {k['kernel']} | {_f(o, '{:.3f}')} | {_f(t, '{:.3f}')} | "
                   f"{_f(o / t if o and t else None, '{:.2f}×')} | {fl:.3f} | {_f(o / fl if o else None, '{:.1f}×')} |")
    return "\n".join(out)


def vs_mamba_generation(runs: list[dict]) -> str:
    grows = [g for run in runs for g in run.get("generation", [])]
    if not grows:
        return "(no generation rows in the results files)"
    out = ["| B×L | impl | backend | time to first token ms | decode tokens/s |", "|---|---|---|---|---|"]
    for g in grows:
        out.append(f"| {g['B']}×{g['L']} | {g['impl']} | {g['backend']} | {_f(g.get('ttft_ms'))} | "
                   f"{_f(g.get('decode_tok_s'), '{:.0f}')} |")
    return "\n".join(out)


def stage_profile(names=("kernel_profile_h200.json",)) -> str:
    runs = _load(names)
    if not runs:
        return "(no kernel profile results)"
    from kernel_profile import table

    return table(runs[0]["rows"]) + "\n\nSource:\n" + "\n".join(
        f"- `benchmarks/kernel_profile.py` — {r['meta']['date']}, {r['meta']['device']}, torch {r['meta']['torch']}, "
        f"commit {r['meta'].get('commit')}" for r in runs)


def vs_mamba_every(runs: list[dict]) -> str:
    """Stepped schedules (--prune-every K): graph ms of each pruned row against mamba_ssm and our dense, same run."""
    out = ["| B×L | backend | budget | K | prune points | graph ms | vs mamba_ssm | vs our dense | FLOPs ratio |",
           "|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        for r in run["rows"]:
            if not r["impl"].startswith("ours-pruned") or "graph_ms" not in r:
                continue
            k = int(r["impl"].split("-every")[1]) if "-every" in r["impl"] else 1
            out.append(f"| {r['B']}×{r['L']} | {r['backend']} | {r['budget']:g} | {k} | {r.get('prune_points', '-')} | "
                       f"{r['graph_ms']:.1f} | {_f(r.get('graph_vs_mamba_ssm'), '{:.2f}×')} | "
                       f"{_f(r.get('graph_vs_ours_dense'), '{:.2f}×')} | {_f(r.get('flops_ratio'), '{:.3f}')} |")
    return "\n".join(out) + "\n\nSources:\n" + _sources(runs) if len(out) > 2 else "(no results file yet)"


def prune_every_quality(runs: list[dict]) -> str:
    """Held-out KL and perplexity of stepped schedules at budget 0.6, one row per model and schedule, K across."""
    rows = [r for run in runs for r in run["rows"] if r["budget"] == 0.6]
    ks = sorted({r["every"] for r in rows})
    out = ["| model | schedule | " + " | ".join(f"K = {k}: KL / ppl" for k in ks) + " | dense ppl |",
           "|---" * (len(ks) + 3) + "|"]
    for model in dict.fromkeys(r["model"] for r in rows):
        dense = next(r for run in runs for r in run["rows"] if r["model"] == model and r["schedule"] == "dense")
        for sched in ("linear", "calibrated"):
            got = {r["every"]: r for r in rows if r["model"] == model and r["schedule"] == sched}
            cells = [f"{got[k]['kl']:.4f} / {got[k]['ppl']:.2f}" if k in got else "-" for k in ks]
            out.append(f"| {model} | {sched} | " + " | ".join(cells) + f" | {dense['ppl']:.2f} |")
    return "\n".join(out) + "\n\nSources:\n" + "\n".join(
        f"- `{r['meta']['command']}` — {r['meta']['date']}, {r['meta']['device']}, torch {r['meta']['torch']}, commit "
        f"{r['meta'].get('commit')}" for r in runs) if rows else "(no results file yet)"


def vs_mamba2(runs: list[dict]) -> str:
    """Mamba-2 prefill: graph-replay ms per case of mamba_ssm (when it ran), our dense and our pruned models, and
    each pruned kind (budget, K) against our dense (per backend) and against mamba_ssm (best backend)."""
    rows = [r for run in runs for r in run["rows"]]
    keys = [(r["impl"], r["backend"]) for r in rows if "graph_ms" in r]
    cols = list(dict.fromkeys(keys))
    kinds = sorted({k for r in rows if (k := _pruned_kind(r["impl"]))}, key=lambda k: (-k[0], k[1]))
    names = " / ".join(f"{b:g} K={k}" for b, k in kinds)
    out = ["| B×L | " + " | ".join(f"{i} ({b})" if b != "-" else i for i, b in cols)
           + f" | FLOPs ratio at 0.6 | pruned {names} vs our dense | best pruned {names} vs mamba_ssm |",
           "|---" * (len(cols) + 4) + "|"]
    for case in dict.fromkeys((r["B"], r["L"]) for r in rows):
        got = [r for r in rows if (r["B"], r["L"]) == case]
        cells = [_f(next((r.get("graph_ms") for r in got if (r["impl"], r["backend"]) == c), None)) for c in cols]
        p6 = next((r for r in got if (_pruned_kind(r["impl"]) or (0,))[0] == 0.6), {})
        ratios = "; ".join(f"{be}: " + " / ".join(
            _f(next((r.get("graph_vs_ours_dense") for r in got if r["backend"] == be and _pruned_kind(r["impl"]) == k),
                    None), "{:.2f}×") for k in kinds)
            for be in dict.fromkeys(r["backend"] for r in got if _pruned_kind(r["impl"])))
        best = " / ".join(_f(max((r.get("graph_vs_mamba_ssm") or 0 for r in got if _pruned_kind(r["impl"]) == k),
                                 default=0) or None, "**{:.2f}×**") for k in kinds)
        out.append(f"| {case[0]}×{case[1]} | " + " | ".join(cells) + f" | {_f(p6.get('flops_ratio'), '{:.3f}')} | "
                   f"{ratios} | {best} |")
    skipped = sorted({r["skipped"] for r in rows if "skipped" in r})
    return "\n".join(out) + ("\n\nNot run: " + "; ".join(skipped) if skipped else "") + "\n\nSources:\n" + _sources(runs)


def ssd_kernels(runs: list[dict]) -> str:
    from bench_vs_mamba2 import ssd_table

    rows = [r for run in runs for r in run.get("ssd", [])]
    return ssd_table(rows) + "\n\nSources:\n" + _sources(runs) if rows else "(no SSD rows in the results files)"


def mamba2_profile(runs: list[dict]) -> str:
    from kernel_profile import table

    rows = [r for run in runs for r in run.get("profile", [])]
    return table(rows) + "\n\nSources:\n" + _sources(runs) if rows else "(no profile rows in the results files)"


def regions() -> dict[str, str]:
    runs = _load(VS_MAMBA_FILES)
    m2 = _load(VS_MAMBA2_FILES)
    m2_ssd = _load(VS_MAMBA2_SSD_FILES)
    return {
        "vs_mamba_prefill": vs_mamba_prefill(runs),
        "vs_mamba_kernels": vs_mamba_kernels(runs),
        "vs_mamba_generation": vs_mamba_generation(runs),
        "vs_mamba_every": vs_mamba_every(runs),
        "prune_every_quality": prune_every_quality(_load(("prune_every_cpu.json",))),
        "vs_mamba2": vs_mamba2(m2),
        "vs_mamba2_earlier": vs_mamba2(_load(VS_MAMBA2_EARLIER_FILES)),
        "vs_mamba2_ssd": ssd_kernels(m2_ssd),
        "ssd_sweep": ssd_kernels(_load(SSD_SWEEP_FILES)),
        "vs_mamba2_profile": mamba2_profile(_load(VS_MAMBA2_PROFILE_FILES)),
        "stage_profile": stage_profile(),
        **other_regions(),
        **scaling_regions(),
        **library_regions(),
    }


def render(doc: str, tables: dict[str, str]) -> str:
    for name, body in tables.items():
        pat = re.compile(rf"(<!-- generated:{name} -->\n)(?:.*?\n)?(<!-- /generated:{name} -->)", re.S)
        doc = pat.sub(lambda m: m.group(1) + body + "\n" + m.group(2), doc)
    return doc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, str(HERE))
    doc = DOC.read_text()
    new = render(doc, regions())
    if args.check:
        if new != doc:
            print("BENCHMARKS.md's generated tables are out of date: run python3 benchmarks/tables.py")
            return 1
        return 0
    DOC.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
