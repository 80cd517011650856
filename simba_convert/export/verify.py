"""Checking exported files against PyTorch, as optimum's post-export validation does, on several inputs.

For each onnxruntime path (portable: stock runtime, Scan functions; library: libsimba_ort_ops kernels), on
three batch sizes and lengths (below, at and past the protected suffix): the protected logits within tolerance,
the kept-token sets equal to PyTorch's, the prefill's recurrent states within tolerance, and (with the step
file) a few greedy decoding steps: the same tokens as PyTorch's `prefill` + `step`, logits within tolerance.
Each path's first run is profiled, so the report also says whether the `simba` kernels actually ran.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile

import numpy as np
import torch

# Agreement with PyTorch: fp32 max |diff| / max |ref| (both compute in fp32, but matmul summation orders
# differ); fp16 relative RMS, looser than tests/tolerance.py's kernel contract because every fp16 matmul and norm
# output of a whole model rounds differently in the two runtimes.
TOLERANCE = {torch.float32: ("max_rel", 1e-4), torch.float16: ("rel_rms", 1e-2)}
DECODE_STEPS = 4


def torch_model(model, dtype: torch.dtype):
    """`model` (PrunedMambaLM or dense LM) with its weights in `dtype` (a copy when they are not)."""
    pruned = getattr(model, "is_pruned", False)
    dense = model.dense if pruned else model
    if dense.dtype == dtype:
        return model
    dense = copy.deepcopy(dense).to(dtype)
    return type(model)(dense, model.spec, score_backend=model.score_backend) if pruned else dense


def reference_outputs(model, ids: torch.Tensor, *, dtype: torch.dtype, protect: int):
    """PyTorch's (logits [B, P', V], kept_mask [n_layer, B, L]) for `ids`, as the exported file defines them."""
    P = max(1, protect)
    model = torch_model(model, dtype)
    pruned = getattr(model, "is_pruned", False)
    bsz, L = ids.shape
    with torch.no_grad():
        if pruned:
            logits, info = model(ids, protect=protect, num_last=min(P, L), return_info=True)
            masks = []
            for kept in info.kept:
                m = torch.zeros(bsz, L + 1, dtype=torch.bool, device=ids.device)
                masks.append(m.scatter(1, torch.where(kept >= 0, kept, L), True)[:, :L])
            mask = torch.stack(masks)
        else:
            logits = model(ids, num_last=min(P, L))
            mask = torch.ones(model.config.n_layer, bsz, L, dtype=torch.bool, device=ids.device)
    return logits[:, -P:].float().cpu().numpy(), mask.cpu().numpy()


def reference_decode(model, ids: torch.Tensor, *, dtype: torch.dtype, steps: int, protect: int | None = None):
    """PyTorch's greedy decoding: (states after the prefill as stacked numpy (conv, ssm), tokens [B, steps],
    logits [steps, B, V] fp32), from `model.prefill` and `model.step`."""
    model = torch_model(model, dtype)
    with torch.no_grad():
        if getattr(model, "is_pruned", False):
            logits, states = model.prefill(ids, protect=protect)
        else:
            logits, states = model.prefill(ids)
        stacked = tuple(torch.stack([s[j] for s in states]).float().cpu().numpy() for j in range(2))
        tokens, all_logits = [], []
        for i in range(steps):
            all_logits.append(logits.float().cpu().numpy())
            tok = logits.argmax(-1)
            tokens.append(tok)
            if i + 1 < steps:
                logits, states = model.step(tok, states)
    return stacked, torch.stack(tokens, 1).cpu().numpy(), np.stack(all_logits)


def compare(out: np.ndarray, ref: np.ndarray) -> dict:
    o, r = out.astype(np.float64), ref.astype(np.float64)
    if o.shape != r.shape:
        return {"max_abs": float("inf"), "max_rel": float("inf"), "rel_rms": float("inf")}
    err = np.abs(o - r)
    scale = float(np.abs(r).max()) or 1e-30
    return {
        "max_abs": float(err.max()),
        "max_rel": float(err.max()) / scale,
        "rel_rms": float(np.linalg.norm(o - r) / max(np.linalg.norm(r), 1e-30)),
    }


def _worst(a: dict | None, b: dict) -> dict:
    return dict(b) if a is None else {k: max(a[k], b[k]) for k in b}


def profiled_session(path, library, tmp: str):
    """An onnxruntime CPU session with profiling on (the caller ends it) for `path`."""
    from .runtime import session_options

    import onnxruntime as ort

    so = session_options(library)
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(tmp, "prof")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def kernels_ran(sess) -> bool:
    """Ends the session's profiling; True when a `simba` kernel (not its Scan function) executed."""
    with open(sess.end_profiling()) as f:
        events = json.load(f)
    ops = {e.get("args", {}).get("op_name") for e in events if e.get("cat") == "Node"}
    from .onnx_ops import OP_TYPES

    return bool(ops & set(OP_TYPES))


def run_profiled(path, ids: np.ndarray, library) -> tuple[dict, bool]:
    """Outputs of one onnxruntime run and whether a `simba` kernel (not its Scan function) executed."""
    with tempfile.TemporaryDirectory() as tmp:
        sess = profiled_session(path, library, tmp)
        names = [o.name for o in sess.get_outputs()]
        outs = dict(zip(names, sess.run(None, {"input_ids": ids})))
        return outs, kernels_ran(sess)


def shapes(protect: int, seq: int | None) -> list[tuple[int, int]]:
    """(batch, length) pairs checked: below, at and past the protected suffix, three batch sizes."""
    P = max(1, protect)
    if seq:
        return [(2, seq)]
    return [(2, P + 23), (1, max(2, P // 2)), (3, 2 * P + 9)]


def verify_export(model, path, *, dtype: torch.dtype, protect: int, library=None, seq: int | None = None,
                  step=None) -> dict:
    """Compare onnxruntime (portable, and library when available) with PyTorch; see the module docstring."""
    from .runtime import decode, make_session, resolve_library

    P = max(1, protect)
    vocab = (model.dense if getattr(model, "is_pruned", False) else model).config.vocab_size
    g = torch.Generator().manual_seed(0)
    cases = []
    for bsz, L in shapes(P, seq):
        ids = torch.randint(0, vocab, (bsz, L), generator=g)
        logits, mask = reference_outputs(model, ids.to(model.device), dtype=dtype, protect=protect)
        states, tokens, dec_logits = reference_decode(model, ids.to(model.device), dtype=dtype, steps=DECODE_STEPS,
                                                      protect=protect)
        cases.append(dict(ids=ids.numpy(), logits=logits, mask=mask, states=states, tokens=tokens,
                          dec_logits=dec_logits))
    metric, tol = TOLERANCE[dtype]
    result = {"shapes": [list(c["ids"].shape) for c in cases], "metric": metric, "tolerance": tol}
    step_sess = make_session(step, False) if step is not None else None
    lib_path = resolve_library("auto" if library is None else library)
    ok = True
    for name, lib in {"portable": False, "library": lib_path}.items():
        if name == "library" and lib is None:
            result[name] = {"skipped": "libsimba_ort_ops.so not found (kernels/build.sh builds it)"}
            continue
        r, states_err, kept = None, None, True
        dec = {"steps": DECODE_STEPS, "tokens_match": True}
        dec_err = None
        with tempfile.TemporaryDirectory() as tmp:
            sess = profiled_session(path, lib, tmp)
            names = [o.name for o in sess.get_outputs()]
            for c in cases:
                outs = dict(zip(names, sess.run(None, {"input_ids": c["ids"]})))
                r = _worst(r, compare(outs["logits"], c["logits"]))
                kept = kept and outs["logits"].shape == c["logits"].shape and bool((outs["kept_mask"] == c["mask"]).all())
                for got, ref in zip((outs["conv_states"], outs["ssm_states"]), c["states"]):
                    states_err = _worst(states_err, compare(got, ref))
                if step_sess is not None:
                    toks, dl = decode(sess, step_sess, c["ids"], DECODE_STEPS)
                    dec["tokens_match"] = dec["tokens_match"] and bool(np.array_equal(toks, c["tokens"]))
                    dec_err = _worst(dec_err, compare(dl, c["dec_logits"]))
            kernels = kernels_ran(sess)
        r["kept_match"] = kept
        r["states_" + metric] = states_err[metric]
        r["simba_kernels_ran"] = kernels
        r["passed"] = kept and r[metric] <= tol and states_err[metric] <= tol and kernels == (name == "library")
        if step_sess is not None:
            dec[metric] = dec_err[metric]
            dec["passed"] = dec["tokens_match"] and dec_err[metric] <= tol
            r["decode"] = dec
            r["passed"] = r["passed"] and dec["passed"]
        if name == "library":
            r["library"] = str(lib)
        result[name] = r
        ok = ok and r["passed"]
    result["passed"] = ok
    return result
