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

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DOC = HERE.parent / "BENCHMARKS.md"

# A case measured in several files is taken from the first that has it: re-runs come first.
VS_MAMBA_FILES = ("vs_mamba_h200_2048.json", "vs_mamba_h200_8192.json")
EVERY_FILES = ("vs_mamba_h200_every.json", "vs_mamba_h200_every_triton.json")
VS_MAMBA2_FILES = ("vs_mamba2_h200_2048.json", "vs_mamba2_h200_8192.json")
VS_MAMBA2_SSD_FILES = ("vs_mamba2_h200_triton.json",)
VS_MAMBA2_PROFILE_FILES = ("vs_mamba2_h200_profile.json",)
SSD_SWEEP_FILES = ("ssd_sweep_h200.json",)
BUDGETS = (0.8, 0.6, 0.4)


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


def vs_mamba_prefill(runs: list[dict]) -> str:
    """One row per B×L: graph-replay ms of every implementation, and pruned against dense mamba_ssm."""
    rows = [r for run in runs for r in run["rows"]]
    cases = sorted({(r["B"], r["L"]) for r in rows}, key=lambda c: (c[1], c[0]))

    def get(case, impl, backend=None):
        for r in rows:
            if (r["B"], r["L"]) == case and r["impl"] == impl and (backend is None or r["backend"] == backend):
                return r
        return {}

    backends = sorted({r["backend"] for r in rows if r["backend"] != "-"})
    head = ["B×L", "mamba_ssm dense", "transformers"] + [f"ours dense ({b})" for b in backends]
    head += [f"pruned {b} ({be})" for be in backends for b in BUDGETS]
    head += ["FLOPs ratio at 0.6", "best pruned 0.6 vs mamba_ssm", "best pruned 0.4 vs mamba_ssm"]
    out = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for case in cases:
        base = get(case, "mamba_ssm").get("graph_ms")
        cells = [f"{case[0]}×{case[1]}", _f(base), _f(get(case, "transformers").get("graph_ms"))]
        for be in backends:
            ms = get(case, "ours-dense", be).get("graph_ms")
            cells.append(f"{_f(ms)} ({_f(base / ms if base and ms else None, '{:.2f}×')})")
        for be in backends:
            for b in BUDGETS:
                cells.append(_f(get(case, f"ours-pruned-{b}", be).get("graph_ms")))
        cells.append(_f(get(case, "ours-pruned-0.6", backends[0]).get("flops_ratio"), "{:.3f}"))
        for b in (0.6, 0.4):
            best = min((get(case, f"ours-pruned-{b}", be).get("graph_ms") or float("inf") for be in backends))
            cells.append(f"**{_f(base / best, '{:.2f}×')}**" if base and best < float("inf") else "-")
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


KERNELS_GRAPH_FILE, PROFILE_FILE = "kernels_graph_h200.json", "kernel_profile_h200.json"


def vs_mamba_estimate(runs: list[dict]) -> str:
    """An estimate, not a measurement: the profiled pruned-0.6 forward with its scan at mamba_ssm's per-layer speed
    (the kernel table's ratio at the full length) and its score at the score's floor (the score timed in the
    profile's run), against dense mamba_ssm of the prefill table."""
    prof, kern = _load((PROFILE_FILE,)), _load((KERNELS_GRAPH_FILE,))
    if not prof or not kern:
        return "(no profile or kernel results)"
    krows = [k for run in runs for k in run.get("kernels", [])]
    rows = [r for run in runs for r in run["rows"]]

    def first(seq, **match):
        return next((x for x in seq if all(x.get(k) == v for k, v in match.items())), {})

    out = ["| B×L | pruned 0.6 forward ms (profile, graph) | scan ms → at mamba_ssm's speed (theirs / ours) | "
           "score ms → at its floor (floor / ours) | estimate ms | mamba_ssm dense ms | mamba_ssm / estimate |",
           "|---|---|---|---|---|---|---|"]
    for p in prof[0]["rows"]:
        if p["model"] != "pruned-0.6" or p["mode"] != "graph":
            continue
        case = dict(B=p["B"], L=p["L"])
        scan_k, score_k = first(krows, kernel="scan", **case), first(kern[0]["kernels"], kernel="score", **case)
        base = first(rows, impl="mamba_ssm", **case).get("graph_ms")
        if not (scan_k.get("mamba_ms") and score_k and base):
            continue
        scan_r, score_r = scan_k["mamba_ms"] / scan_k["ours_ms"], score_k["floor_ms"] / score_k["ours_ms"]
        scan, score = p["stages"]["scan"], p["stages"]["score"]
        est = p["wall_ms"] - scan * (1 - scan_r) - score * (1 - score_r)
        out.append(f"| {p['B']}×{p['L']} | {p['wall_ms']:.2f} | {scan:.2f} → {scan * scan_r:.2f} ({scan_r:.2f}) | "
                   f"{score:.2f} → {score * score_r:.2f} ({score_r:.2f}) | {est:.2f} | {base:.1f} | "
                   f"**~{base / est:.2f}×** |")
    return "\n".join(out) + (f"\n\nInputs: `results/{PROFILE_FILE}` (stage times, commit "
                             f"{prof[0]['meta'].get('commit')}), `results/{KERNELS_GRAPH_FILE}` (score and its floor, commit "
                             f"{kern[0]['meta'].get('commit')}), the scan rows of the kernel table and the mamba_ssm "
                             "column of the prefill table (their files are listed under those tables).")


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
    """Mamba-2 prefill: graph-replay ms per case of mamba_ssm (when it ran), our dense and our pruned models."""
    rows = [r for run in runs for r in run["rows"]]
    keys = [(r["impl"], r["backend"]) for r in rows if "graph_ms" in r]
    cols = list(dict.fromkeys(keys))
    out = ["| B×L | " + " | ".join(f"{i} ({b})" if b != "-" else i for i, b in cols)
           + " | FLOPs ratio at 0.6 | pruned 0.6 / 0.4 vs our dense | best pruned 0.6 / 0.4 vs mamba_ssm |",
           "|---" * (len(cols) + 4) + "|"]
    for case in dict.fromkeys((r["B"], r["L"]) for r in rows):
        got = {(r["impl"], r["backend"]): r for r in rows if (r["B"], r["L"]) == case}
        cells = [_f(got.get(c, {}).get("graph_ms")) for c in cols]
        p6 = next((r for k, r in got.items() if k[0] == "ours-pruned-0.6"), {})
        ratios = "; ".join(f"{b}: " + " / ".join(_f(got.get((i, b), {}).get("graph_vs_ours_dense"), "{:.2f}×")
                                                 for i in ("ours-pruned-0.6", "ours-pruned-0.4"))
                           for b in dict.fromkeys(k[1] for k in got if k[0] == "ours-pruned-0.6"))
        best = " / ".join(_f(max((r.get("graph_vs_mamba_ssm") or 0 for k, r in got.items() if k[0] == impl),
                                 default=None) or None, "**{:.2f}×**") for impl in ("ours-pruned-0.6", "ours-pruned-0.4"))
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
        "vs_mamba_estimate": vs_mamba_estimate(runs),
        "vs_mamba_every": vs_mamba_every(_load(EVERY_FILES)),
        "prune_every_quality": prune_every_quality(_load(("prune_every_cpu.json",))),
        "vs_mamba2": vs_mamba2(m2),
        "vs_mamba2_ssd": ssd_kernels(m2_ssd),
        "ssd_sweep": ssd_kernels(_load(SSD_SWEEP_FILES)),
        "vs_mamba2_profile": mamba2_profile(_load(VS_MAMBA2_PROFILE_FILES)),
        "stage_profile": stage_profile(),
        **other_regions(),
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
