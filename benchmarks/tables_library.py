"""BENCHMARKS.md's table of the ONNX Runtime library's CUDA kernels against our Triton kernels (issue 18, item 2).

Rendered from results/cuda_lib_kernels_aot_h200.json (benchmarks/investigations/cuda_lib_kernels.py).
"""

from __future__ import annotations

from tables_render import load, sources, table

LIBRARY = "cuda_lib_kernels_aot_h200.json"


def library_kernels() -> str:
    """Per layer shape: hand-written CUDA, the Triton kernels compiled ahead of time (two triton versions) and the
    JIT-compiled Triton op the PyTorch model runs; times and parity against that op."""
    run = load(LIBRARY)
    labels = list(run["meta"]["aot_triton"])  # "lib" (the --lib build) and the --aot-lib builds
    versions = run["meta"]["aot_triton"]
    rows = []
    for r in run["rows"]:
        for op in ("scan", "score", "conv"):  # runs before the conv had an AOT kernel have no conv_aot_* keys
            aot = [f"{r[f'{op}_aot_{k}_ms']:.3f} ({r[f'{op}_aot_{k}_over_triton']:.2f}×)" if f"{op}_aot_{k}_ms" in r
                   else "—" for k in labels]
            errs = [r[f"{op}_aot_{k}_rel_rms"] for k in labels if f"{op}_aot_{k}_rel_rms" in r]
            rows.append([r["shape"], f"{r['B']}×{r['L']}", r["dtype"], op, f"{r[f'{op}_triton_ms']:.3f}",
                         f"{r[f'{op}_lib_ms']:.3f} ({r[f'{op}_lib_over_triton']:.1f}×)", *aot,
                         f"{max(errs):.0e}" if errs else "—"])
    head = ["shape", "B×L", "dtype", "op", "Triton JIT (PyTorch) ms", "hand CUDA ms (× JIT)",
            *(f"Triton AOT, triton {versions[k]} ms (× JIT)" for k in labels), "AOT max rel RMS vs JIT"]
    return table(head, rows) + "\n\n" + sources(LIBRARY)


def regions() -> dict[str, str]:
    return {"library_kernels": library_kernels()}
