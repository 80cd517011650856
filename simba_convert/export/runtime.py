"""Running exported models in onnxruntime, with or without our custom-op library.

The library (`libsimba_ort_ops.so`, built by kernels/build.sh) is looked for in this order:
  1. the environment variable SIMBA_ORT_OPS_LIB (a path; an error if it does not exist),
  2. next to this package (simba_convert/export/libsimba_ort_ops.so, where a wheel would put it),
  3. kernels/build/libsimba_ort_ops.so of a source checkout.
Without it, onnxruntime runs the model-local reference functions (Scan) instead.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..errors import BackendError, require

log = logging.getLogger("simba_convert.export")

LIB_NAME = "libsimba_ort_ops.so"
ENV_VAR = "SIMBA_ORT_OPS_LIB"


def find_library() -> Path | None:
    """Path of the built custom-op library, or None (see the module docstring for the search order)."""
    env = os.environ.get(ENV_VAR)
    if env:
        p = Path(env)
        if not p.is_file():
            raise BackendError(f"{ENV_VAR}={env} does not name a file; build it with kernels/build.sh")
        return p
    here = Path(__file__).resolve().parent
    for p in (here / LIB_NAME, here.parents[1] / "kernels" / "build" / LIB_NAME):
        if p.is_file():
            return p
    return None


def resolve_library(library) -> Path | None:
    """`library`: True (must be found), False (never), "auto" (if found) or a path -> the path to register."""
    if library is False or library is None:
        return None
    if library is True or library == "auto":
        path = find_library()
        if path is None and library is True:
            raise BackendError(f"{LIB_NAME} not found (set {ENV_VAR} or run kernels/build.sh)")
        return path
    path = Path(library)
    if not path.is_file():
        raise BackendError(f"custom-op library {path} does not exist")
    return path


def session_options(library="auto", *, threads: int | None = None):
    """onnxruntime.SessionOptions with the custom-op library registered when `library` resolves to one."""
    ort = require("onnxruntime", "onnx")
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    path = resolve_library(library)
    if path is not None:
        so.register_custom_ops_library(str(path))
        log.info("onnxruntime: registered custom-op library %s (simba kernels replace the Scan functions)", path)
    else:
        log.info("onnxruntime: no custom-op library; the simba ops run as their Scan reference functions")
    return so


def make_session(path, library="auto", *, providers=None, threads: int | None = None):
    ort = require("onnxruntime", "onnx")
    so = session_options(library, threads=threads)
    return ort.InferenceSession(str(path), so, providers=providers or ["CPUExecutionProvider"])


def run_onnx(path, input_ids, library="auto", *, providers=None, session=None) -> dict:
    """Run an exported prefill model on input_ids [batch, seq] (torch tensor or array of ints).

    Returns {output name: numpy array}: `logits` [batch, P, vocab], `kept_mask` [n_layer, batch, seq] and the
    recurrent states `conv_states` [n_layer, batch, D, K-1], `ssm_states` [n_layer, batch, D, N].
    """
    import numpy as np

    ids = input_ids.cpu().numpy() if hasattr(input_ids, "cpu") else np.asarray(input_ids)
    sess = session or make_session(path, library, providers=providers)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, {"input_ids": ids.astype(np.int64)})))


def decode(prefill, step, input_ids, max_new_tokens: int):
    """Greedy decoding with a prefill and a step session: (tokens [batch, max_new_tokens], logits [new, batch, V]).

    The pruned prefill gives the last position's logits and every layer's states; each step feeds the argmax token
    and the states back (what `generate()` does in PyTorch without sampling)."""
    import numpy as np

    ids = input_ids.cpu().numpy() if hasattr(input_ids, "cpu") else np.asarray(input_ids)
    out = dict(zip([o.name for o in prefill.get_outputs()], prefill.run(None, {"input_ids": ids.astype(np.int64)})))
    logits, conv, ssm = out["logits"][:, -1], out["conv_states"], out["ssm_states"]
    tokens, all_logits = [], []
    for i in range(max_new_tokens):
        all_logits.append(logits.astype(np.float32))
        tok = logits.argmax(-1).astype(np.int64)
        tokens.append(tok)
        if i + 1 < max_new_tokens:
            logits, conv, ssm = step.run(None, {"token": tok, "conv_states": conv, "ssm_states": ssm})
    if not tokens:
        return np.zeros((ids.shape[0], 0), dtype=np.int64), np.zeros((0,) + logits.shape, dtype=np.float32)
    return np.stack(tokens, 1), np.stack(all_logits)


def generate_onnx(path, input_ids, max_new_tokens: int, library="auto", *, step_file=None):
    """Greedy generation from an exported prefill file and its step file (`<stem>_step.onnx` beside it unless
    `step_file` is given): input_ids [batch, seq] -> [batch, seq + max_new_tokens] int64 numpy."""
    import numpy as np

    from .exporter import step_path

    ids = input_ids.cpu().numpy() if hasattr(input_ids, "cpu") else np.asarray(input_ids)
    prefill = make_session(path, library)
    step = make_session(step_file or step_path(path), False)  # standard ops only
    tokens, _ = decode(prefill, step, ids, max_new_tokens)
    return np.concatenate([ids.astype(np.int64), tokens], axis=1)
