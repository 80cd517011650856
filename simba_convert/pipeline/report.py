"""The conversion report: a JSON document, a human-readable summary table and a PNG plot."""

from __future__ import annotations

import math
import platform
from pathlib import Path


def versions() -> dict:
    import torch

    from .._version import __version__

    out = {"simba_convert": __version__, "torch": torch.__version__, "python": platform.python_version()}
    for mod in ("triton", "safetensors", "tokenizers", "onnx", "onnxruntime"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # absent or broken optional packages are simply not reported
            pass
    return out


def _holdout(h: dict | None) -> str:
    if not h:
        return "not made (a closed-form schedule, the search chose linear, or fewer than 4 windows)"
    verdict = "fell back to linear" if h["fell_back"] else "kept"
    return f"KL {h['best_kl']:.5f} vs linear {h['linear_kl']:.5f} on {h['windows']} held-out windows: {verdict}"


def strict_json(obj):
    """The report with non-finite floats as null, so that it is standard JSON (json.dumps writes Infinity)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


def ppl_from_nll(nll: float) -> float:
    """exp(nll), infinite past the float range (random models can have NLLs in the thousands)."""
    return math.exp(nll) if nll < 700 else float("inf")


def _finetune_lines(ft: dict | None) -> list[str]:
    if not ft:
        return []
    c = ft.get("calibration", {})
    return [f"  fine-tune               {ft.get('steps')} steps; calibration KL "
            f"{c.get('kl_before', float('nan')):.5f} -> {c.get('kl_after', float('nan')):.5f}"]


def summary_text(report: dict) -> str:
    """The final summary table printed by the CLI and written to report.txt."""
    s = report["simba"]
    cal = report["calibration"]
    lines = [
        f"simba-convert {report['versions']['simba_convert']}: {report['input']} -> {report['output']}",
        "",
        f"  budget asked            {s['budget']:.4f}",
        f"  FLOPs ratio achieved    {s['achieved_flops_ratio']:.4f}  (backbone only {s['backbone_flops_ratio']:.4f};"
        f" L={s['flops_reference']['seq_len']}, P={s['protect']}, criterion {s['criterion']})",
        f"  schedule                {s['schedule']} ({cal['best']['label']}, {cal['evaluations']} candidates)",
        f"  calibration KL          {cal['best']['kl']:.5f}   (linear {cal['linear']['kl']:.5f}, uniform {cal['uniform']['kl']:.5f})",
        f"  held-out check          {_holdout(cal.get('holdout'))}",
        f"  calibration perplexity  dense {report['dense_ppl']:.3f}  sparse {ppl_from_nll(cal['best']['nll']):.3f}",
        *_finetune_lines(report.get("finetune")),
        "",
        "  layer  keep   tokens@L  score top-25% share",
    ]
    for i, (r, k, prof) in enumerate(zip(s["keep_ratios"], report["flops"]["tokens_per_layer"], report["score_profile"])):
        lines.append(f"  {i:5d}  {r:5.3f}  {k:8d}  {prof:6.3f}")
    lines += ["", "  stage        seconds"]
    for name, sec in report["timings"].items():
        lines.append(f"  {name:<12} {sec:8.2f}")
    if report.get("onnx"):
        o = report["onnx"]
        v = o.get("verify") or {}
        paths = ", ".join(f"{k} max rel {v[k]['max_rel']:.1e}" for k in ("portable", "library") if isinstance(v.get(k), dict))
        verdict = "passed" if o.get("passed") else "FAILED"
        lines.append(f"\n  onnx: {o.get('path')}  checker {o.get('checker')}; onnxruntime vs PyTorch {verdict} ({paths or 'not run'})")
    return "\n".join(lines) + "\n"


def write_plot(report: dict, path: Path) -> str | None:
    """keep ratios per layer (linear and uniform for comparison) and the calibration curve; None if no matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "plot skipped: matplotlib is not installed (pip install 'simba-convert[plot]')"
    cal = report["calibration"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    n = len(report["simba"]["keep_ratios"])
    a.plot(range(n), report["simba"]["keep_ratios"], "o-", label=f"chosen ({cal['best']['label']})")
    a.plot(range(n), cal["linear"]["keep_ratios"], "--", label="linear")
    a.plot(range(n), cal["uniform"]["keep_ratios"], ":", label="uniform")
    a.set(xlabel="layer", ylabel="keep ratio", ylim=(0, 1.05), title=f"budget {report['simba']['budget']:g}")
    a.legend(fontsize=8)
    b.plot(range(1, len(cal["curve"]) + 1), cal["curve"], "o-", ms=3)
    b.set(xlabel="candidate", ylabel="best KL so far (nats)", title="calibration")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
