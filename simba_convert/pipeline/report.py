"""The conversion report: a JSON document, a human-readable summary table and a PNG plot."""

from __future__ import annotations

import math
import platform
from pathlib import Path


SCHEMA_VERSION = 1  # of simba_report.json; raised when a field changes meaning or goes away (README.md)
# Reported in simba_report.json whether installed or not (null when absent), so its keys never vary.
OPTIONAL_PACKAGES = ("triton", "onnx", "onnxscript", "onnxruntime", "matplotlib", "transformers")
REQUIRED_PACKAGES = ("safetensors", "tokenizers", "huggingface_hub")


def versions() -> dict:
    """Versions of Python and of every package the conversion may have used (None: not installed)."""
    import torch

    from .._version import __version__

    out = {"simba_convert": __version__, "torch": torch.__version__, "python": platform.python_version()}
    for name in REQUIRED_PACKAGES + OPTIONAL_PACKAGES:
        out[name] = _package_version(name)
    return out


def provenance(versions: dict) -> dict:
    """The versions recorded in config.json: the tool and torch only, so that the file does not change with
    which optional packages happen to be installed (the full list is in simba_report.json)."""
    return {k: versions[k] for k in ("simba_convert", "torch")}


# distributions that install the same module under another name
_DISTRIBUTIONS = {"onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
                  "triton": ("triton", "pytorch-triton", "pytorch-triton-rocm")}


def _package_version(name: str) -> str | None:
    """The installed version of `name`, read from package metadata (nothing is imported)."""
    from importlib import metadata

    for dist in _DISTRIBUTIONS.get(name, (name,)):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


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
    verdict = ("saved" if ft.get("applied", True)
               else "worse: not saved, the pre-fine-tune weights were kept")
    return [f"  fine-tune               {ft.get('steps')} steps; calibration KL "
            f"{c.get('kl_before', float('nan')):.5f} -> {c.get('kl_after', float('nan')):.5f} ({verdict})"]


def summary_text(report: dict) -> str:
    """The final summary table printed by the CLI and written to report.txt."""
    from ..format import SimbaSection
    from ..pruning.schedules import prune_points

    s = SimbaSection.from_dict(report["simba"])
    cal = report["calibration"]
    lines = [
        f"simba-convert {report['versions']['simba_convert']}: {report['input']} -> {report['output']}",
        "",
        f"  budget asked            {s.budget:.4f}",
        f"  FLOPs ratio achieved    {s.achieved_flops_ratio:.4f}  (backbone only {s.backbone_flops_ratio:.4f};"
        f" L={s.flops_seq_len}, P={s.spec.protect}, criterion {s.spec.criterion})",
        f"  schedule                {s.schedule} ({cal['best']['label']}, {cal['evaluations']} candidates)",
        f"  prune points            {prune_points(s.spec.keep_ratios)} of {len(s.spec.keep_ratios) - 1} layers score and "
        f"select (prune every {report.get('config', {}).get('prune_every', 1)}; fewer is faster at small batch)",
        f"  calibration KL          {cal['best']['kl']:.5f}   (linear {cal['linear']['kl']:.5f}, uniform {cal['uniform']['kl']:.5f})",
        f"  held-out check          {_holdout(cal.get('holdout'))}",
        f"  calibration perplexity  dense {report['dense_ppl']:.3f}  sparse {ppl_from_nll(cal['best']['nll']):.3f}",
        *_finetune_lines(report.get("finetune")),
        "",
        "  layer  keep   tokens@L  score top-25% share",
    ]
    for i, (r, k, prof) in enumerate(zip(s.spec.keep_ratios, report["flops"]["tokens_per_layer"], report["score_profile"])):
        lines.append(f"  {i:5d}  {r:5.3f}  {k:8d}  {prof:6.3f}")
    lines += ["", "  stage        seconds"]
    for name, sec in report["timings"].items():
        lines.append(f"  {name:<12} {sec:8.2f}")
    if report.get("onnx"):
        from ..export.summary import summary_line

        o = report["onnx"]
        step = f" + {Path(o['step']['path']).name}" if o.get("step") else ""
        lines.append(f"\n  onnx: {o.get('path')}{step}  checker {o.get('checker')}; onnxruntime vs PyTorch "
                     f"{summary_line(o.get('verify') or {})}")
    return "\n".join(lines) + "\n"


def write_plot(report: dict, path: Path) -> str | None:
    """keep ratios per layer (linear and uniform for comparison) and the calibration curve; None if no matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "plot skipped: matplotlib is not installed (pip install 'simba-convert[plot]')"
    from ..format import SimbaSection

    s = SimbaSection.from_dict(report["simba"])
    cal = report["calibration"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    n = s.spec.n_layer
    a.plot(range(n), s.spec.keep_ratios, "o-", label=f"chosen ({cal['best']['label']})")
    a.plot(range(n), cal["linear"]["keep_ratios"], "--", label="linear")
    a.plot(range(n), cal["uniform"]["keep_ratios"], ":", label="uniform")
    a.set(xlabel="layer", ylabel="keep ratio", ylim=(0, 1.05), title=f"budget {s.budget:g}")
    a.legend(fontsize=8)
    b.plot(range(1, len(cal["curve"]) + 1), cal["curve"], "o-", ms=3)
    b.set(xlabel="candidate", ylabel="best KL so far (nats)", title="calibration")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
