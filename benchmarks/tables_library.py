"""BENCHMARKS.md's tables of the ONNX Runtime library on the GPU (issue 18): its CUDA kernels against our Triton
kernels (results/cuda_lib_kernels_aot_h200.json, benchmarks/investigations/cuda_lib_kernels.py), and the exported
files inside onnxruntime-gpu, pruned against dense (results/bench_onnx_cuda_h200_*.json, bench_onnx.py --cuda).
"""

from __future__ import annotations

from tables_render import load, ms, sources, table, times

LIBRARY = "cuda_lib_kernels_aot_h200.json"
# (file, precision label): one bench_onnx.py --cuda run each; dense and every sparse file timed in the same rounds
ORT_CUDA = (("bench_onnx_cuda_h200_mamba-130m.json", "fp32 (TF32)"), ("bench_onnx_cuda_h200_mamba-1.4b.json", "fp32 (TF32)"),
            ("bench_onnx_cuda_h200_mamba-130m_notf32.json", "fp32, TF32 off"),
            ("bench_onnx_cuda_h200_mamba-130m_fp16.json", "fp16"), ("bench_onnx_cuda_h200_mamba-1.4b_fp16.json", "fp16"))
ORT_CUDA_HAND = ("bench_onnx_cuda_h200_mamba-130m_hand.json", "bench_onnx_cuda_h200_mamba-1.4b_hand.json")


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


def _row(rows, variant, path, B):
    return next((r for r in rows if r["variant"] == variant and r["path"] == path and r["batch"] == B), None)


def _kept(r) -> str:
    if r is None or "kept_match" not in r:
        return "-"
    return "yes" if r["kept_match"] else f"no ({r['kept_overlap']:.4f})" if "kept_overlap" in r else "no"


def ort_cuda() -> str:
    """Per model, precision and batch: the dense file and the sparse files (every layer, every 8 layers) through
    onnxruntime-gpu with the library, IO binding where the run had it, and pruned / dense from the same rounds."""
    rows = []
    for name, prec in ORT_CUDA:
        run = load(name)
        path = "library+iobinding" if any(r["path"] == "library+iobinding" for r in run["rows"]) else "library"
        for B in run["batches"]:
            d, s1, s8 = (_row(run["rows"], v, path, B) for v in ("dense", "sparse", "sparse-every8"))
            plain = [_row(run["rows"], v, "library", B) for v in ("sparse", "sparse-every8")]
            torch_dense = _row(run["rows"], "dense", "auto", B)
            rows.append([run["model"], prec, str(B), path, ms(d["median_ms"]), ms(s1["median_ms"]),
                         times(s1["speedup_vs_dense"]), ms(s8["median_ms"]),
                         times(s8["speedup_vs_dense"], bold=s8["speedup_vs_dense"] >= 1.4),
                         " / ".join(times(r["speedup_vs_dense"]) if r else "-" for r in plain),
                         ms(torch_dense["median_ms"]) if torch_dense else "-",
                         f"{_kept(s1)} / {_kept(s8)}", f"{max(r['rel_rms_vs_pytorch'] for r in (d, s1, s8)):.1e}"])
    head = ["model", "precision", "B", "ORT path", "dense ms", "pruned K=1 ms", "K=1 vs dense", "pruned K=8 ms",
            "K=8 vs dense", "K=1 / K=8 vs dense without IO binding", "PyTorch dense ms (eager)",
            "kept sets equal PyTorch (K=1 / K=8; else share kept)", "max logits rel RMS vs PyTorch"]
    return table(head, rows) + "\n\n" + sources(*(n for n, _ in ORT_CUDA))


def ort_cuda_hand() -> str:
    """The same files with the hand-written CUDA kernels (--no-aot build) against the AOT ones, one run each."""
    rows = []
    for name in ORT_CUDA_HAND:
        run = load(name)
        for B in run["batches"]:
            for v in ("dense", "sparse"):
                a, h = _row(run["rows"], v, "library+iobinding", B), _row(run["rows"], v, "library hand+iobinding", B)
                rows.append([run["model"], str(B), v, ms(a["median_ms"]), ms(h["median_ms"]),
                             times(h["median_ms"] / a["median_ms"])])
    head = ["model", "B", "file", "Triton AOT kernels ms", "hand-written CUDA kernels ms", "hand / AOT"]
    return table(head, rows) + "\n\n" + sources(*ORT_CUDA_HAND)


STAGES = ("scan", "matmul", "memcpy", "score", "gather/index", "selection", "conv", "copy/elementwise", "other")


def ort_cuda_profile() -> str:
    """GPU kernel time per stage of one session run (CUPTI through torch.profiler; outputs copied to the host, so
    memcpy includes the logits and kept masks), for the runs that recorded it, fp32 then fp16."""
    rows, profiled = [], []
    for name, prec in ORT_CUDA:
        run = load(name)
        if run.get("gpu_profile"):
            profiled.append(name)
        for key, prof in run.get("gpu_profile", {}).items():
            B, variant = key.split()[1], key.split()[2]
            st = prof["stages"]
            rows.append([run["model"], prec, B.split("=")[1], variant, f"{prof['wall_ms']:.1f}", f"{prof['kernel_ms']:.2f}",
                         *(f"{st.get(k, 0.0):.2f}" for k in STAGES)])
    head = ["model", "precision", "B", "file", "wall ms (profiled)", "kernels ms", *STAGES]
    return table(head, rows) + "\n\n" + sources(*profiled)


def regions() -> dict[str, str]:
    return {"library_kernels": library_kernels(), "ort_cuda": ort_cuda(), "ort_cuda_hand": ort_cuda_hand(),
            "ort_cuda_profile": ort_cuda_profile()}
