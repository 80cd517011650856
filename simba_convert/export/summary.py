"""The one-line verdict of an export check (`verify.verify_export`'s dict) for the CLI and report.txt; torch-free."""

from __future__ import annotations


def summary_line(verify: dict) -> str:
    """One line for the CLI: the verdict, what was compared, and each path's worst error (or why it was skipped)."""
    if not verify:
        return "not checked"
    metric = verify.get("metric", "max_rel")
    parts = []
    for k in ("portable", "library"):
        r = verify.get(k)
        if not isinstance(r, dict):
            continue
        if "skipped" in r:
            parts.append(f"{k} skipped: {r['skipped']}")
            continue
        if not isinstance(r.get(metric), (int, float)):
            continue
        bits = [f"{metric.replace('_', ' ')} {r[metric]:.1e}", "kept sets equal" if r.get("kept_match") else
                "KEPT SETS DIFFER"]
        if isinstance(r.get("states_" + metric), (int, float)):
            bits.append(f"states {r['states_' + metric]:.1e}")
        d = r.get("decode")
        if d:
            bits.append(f"{d['steps']} decode steps " + ("same tokens" if d.get("tokens_match") else "OTHER TOKENS"))
        if k == "library" and not r.get("simba_kernels_ran"):
            bits.append("KERNELS DID NOT RUN")
        parts.append(f"{k} " + ", ".join(bits))
    n = len(verify.get("shapes", []))
    verdict = "passed" if verify.get("passed") else "FAILED"
    where = f" on {n} batch/length shapes" if n else ""
    return f"{verdict}{where} ({'; '.join(parts) or 'not run'})"
