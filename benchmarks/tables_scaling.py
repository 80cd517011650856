"""BENCHMARKS.md's tables of the scaling families (issue 17): their training, and the paper benchmark on each.

Rendered from results/scaling_families_h200.json (family_scaling.py's models) and
results/paper_scaling_{mamba1,mamba2}_h200.json (benchmarks/paper.py on the m and l model of each family).
"""

from __future__ import annotations

from tables_render import (load, paper_context, paper_criteria, paper_dense, paper_equal_flops, paper_schedules,
                           sources, table)

SCALING = "scaling_families_h200.json"
PAPERS = {"mamba1": "paper_scaling_mamba1_h200.json", "mamba2": "paper_scaling_mamba2_h200.json"}


def scaling_train() -> str:
    """One row a model: size, training, held-out perplexity; each size against the next smaller one."""
    run = load(SCALING)
    rows, prev = [], {}
    for name, m in run["models"].items():
        fam = m["architecture"]
        c = m["config"]
        ppl = m["valid_ppl"]
        vs = "—" if fam not in prev else f"{100 * (ppl / prev[fam] - 1):+.1f} %".replace("-", "−")
        prev[fam] = ppl
        rows.append([name, f"{c['d_model']} × {c['n_layer']}", f"{m['parameters'] / 1e6:.1f} M", f"{m['steps']}",
                     f"{m['tokens_seen'] / 1e6:.1f} M", f"{m['final_train_loss']:.3f}", f"**{ppl:.2f}**", vs,
                     f"{m['probe_s_per_step_alone'] * 1e3:.0f} ms", f"{m['train_time_s']:.0f} s"])
    head = ["model", "d_model × layers", "params", "steps", "tokens", "train loss", "valid ppl", "vs next smaller",
            "step alone", "train time (shared GPU)"]
    return table(head, rows) + "\n\n" + sources(SCALING)


def scaling_paper(family: str) -> str:
    """Sections A–E of benchmarks/paper.py for one family (its m and l models)."""
    name = PAPERS[family]
    run = load(name)
    small, large = run["meta"]["names"]
    equal = run["equal_flops"]["budget"]
    parts = [
        ("A. Dense models", paper_dense(name)),
        (f"B. {large}, schedules (criterion `last`) — valid / ood perplexity", paper_schedules(name)),
        (f"C. {large}, criteria (`linear` schedule) — valid / ood perplexity", paper_criteria(name)),
        (f"D. Equal FLOPs ({large} pruned to {equal:.3f} of its FLOPs = {small}'s FLOPs)", paper_equal_flops(name)),
        ("E. Context length — ppl of the last 64 positions on ood text, 16 windows per length",
         paper_context(name)),
    ]
    return "\n\n".join(f"**{title}**\n\n{body}" for title, body in parts)


def regions() -> dict[str, str]:
    return {"scaling_train": scaling_train(),
            **{f"paper_scaling_{fam}": scaling_paper(fam) for fam in PAPERS}}
