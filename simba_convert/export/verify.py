"""Checking an exported prefill file against PyTorch: same kept tokens, protected logits within tolerance.

Each onnxruntime path (portable: stock runtime, Scan functions; library: libsimba_ort_ops kernels) is run
with profiling on, so the report also says whether the `simba` kernels actually ran.
"""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np
import torch

# Agreement with PyTorch on the protected logits: fp32 max |diff| / max |ref| (both compute in fp32, but
# matmul summation orders differ); fp16 relative RMS, looser than tests/tolerance.py's kernel contract
# because every fp16 matmul and norm output of a whole model rounds differently in the two runtimes.
TOLERANCE = {torch.float32: ("max_rel", 1e-4), torch.float16: ("rel_rms", 1e-2)}


def reference_outputs(model, ids: torch.Tensor, *, dtype: torch.dtype, protect: int):
    """PyTorch's (logits [B, P', V], kept_mask [n_layer, B, L]) for `ids`, as the exported file defines them."""
    P = max(1, protect)
    pruned = getattr(model, "is_pruned", False)
    dense = model.dense if pruned else model
    if dense.dtype != dtype:
        import copy

        dense = copy.deepcopy(dense).to(dtype)
        if pruned:
            model = type(model)(dense, model.spec, score_backend=model.score_backend)
    bsz, L = ids.shape
    with torch.no_grad():
        if pruned:
            logits, info = model(ids, protect=protect, return_info=True)
            masks = []
            for kept in info.kept:
                m = torch.zeros(bsz, L + 1, dtype=torch.bool, device=ids.device)
                masks.append(m.scatter(1, torch.where(kept >= 0, kept, L), True)[:, :L])
            mask = torch.stack(masks)
        else:
            logits = dense(ids)
            mask = torch.ones(dense.config.n_layer, bsz, L, dtype=torch.bool, device=ids.device)
    return logits[:, -P:].float().cpu().numpy(), mask.cpu().numpy()


def compare(out: np.ndarray, ref: np.ndarray) -> dict:
    o, r = out.astype(np.float64), ref.astype(np.float64)
    err = np.abs(o - r)
    scale = float(np.abs(r).max()) or 1e-30
    return {
        "max_abs": float(err.max()),
        "max_rel": float(err.max()) / scale,
        "rel_rms": float(np.linalg.norm(o - r) / max(np.linalg.norm(r), 1e-30)),
    }


def run_profiled(path, ids: np.ndarray, library) -> tuple[dict, bool]:
    """Outputs of one onnxruntime run and whether a `simba` kernel (not its Scan function) executed."""
    from .runtime import session_options

    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        so = session_options(library)
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(tmp, "prof")
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        outs = dict(zip(names, sess.run(None, {"input_ids": ids})))
        with open(sess.end_profiling()) as f:
            events = json.load(f)
    ops = {e.get("args", {}).get("op_name") for e in events if e.get("cat") == "Node"}
    return outs, bool(ops & {"SelectiveScan", "ImpactScore"})


def verify_export(model, path, *, dtype: torch.dtype, protect: int, library=None, seq: int | None = None) -> dict:
    """Compare onnxruntime (portable, and library when available) with PyTorch on a random batch of 2."""
    from .runtime import resolve_library

    P = max(1, protect)
    L = seq or P + 23
    vocab = (model.dense if getattr(model, "is_pruned", False) else model).config.vocab_size
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (2, L), generator=g)
    ref_logits, ref_mask = reference_outputs(model, ids.to(model.device), dtype=dtype, protect=protect)
    metric, tol = TOLERANCE[dtype]
    result = {"batch": 2, "seq": L, "metric": metric, "tolerance": tol}
    lib_path = resolve_library("auto" if library is None else library)
    paths = {"portable": False, "library": lib_path}
    ok = True
    for name, lib in paths.items():
        if name == "library" and lib is None:
            result[name] = {"skipped": "libsimba_ort_ops.so not found (kernels/build.sh builds it)"}
            continue
        outs, kernels = run_profiled(path, ids.numpy(), lib)
        r = compare(outs["logits"], ref_logits)
        r["kept_match"] = bool(outs["logits"].shape == ref_logits.shape and (outs["kept_mask"] == ref_mask).all())
        r["simba_kernels_ran"] = kernels
        r["passed"] = r["kept_match"] and r[metric] <= tol and kernels == (name == "library")
        if name == "library":
            r["library"] = str(lib)
        result[name] = r
        ok = ok and r["passed"]
    result["passed"] = ok
    return result
