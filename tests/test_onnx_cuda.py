"""The exported pruned file inside onnxruntime-gpu's CUDA provider with the library (GPU only; run with the device
tool, onnxruntime-gpu on PYTHONPATH and SIMBA_ORT_OPS_LIB naming a library built with --cuda): every `simba` node runs
on the CUDA provider, SelectKept's count is read on the host, and the kept sets and logits are PyTorch's."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from simba_convert.export import export_onnx  # noqa: E402
from simba_convert.export.runtime import ENV_VAR, session_options  # noqa: E402
from simba_convert.export.verify import reference_outputs  # noqa: E402
from simba_convert.pruning.model import PrunedMambaLM  # noqa: E402
from simba_convert.pruning.spec import PruningSpec  # noqa: E402
from onnx_helpers import tiny_dense  # noqa: E402

pytestmark = pytest.mark.gpu


def cuda_session(path, lib, profile_dir=None):
    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDAExecutionProvider (onnxruntime-gpu not installed)")
    so = session_options(lib)
    if profile_dir:
        so.enable_profiling = True
        so.profile_file_prefix = str(profile_dir / "prof")
    # TF32 off: ORT's CUDA MatMul would otherwise round its inputs to 10 mantissa bits, and near-tied scores flip.
    return ort.InferenceSession(str(path), so, providers=[("CUDAExecutionProvider", {"use_tf32": 0}),
                                                         "CPUExecutionProvider"])


def test_pruned_file_runs_every_simba_node_on_the_cuda_provider(tmp_path):
    lib = os.environ.get(ENV_VAR)
    if not lib:
        pytest.skip(f"{ENV_VAR} must name a libsimba_ort_ops.so built with --cuda")
    model = PrunedMambaLM(tiny_dense(), PruningSpec((1.0, 0.7, 0.45), criterion="last", protect=8)).eval()
    path = tmp_path / "sparse.onnx"
    export_onnx(model, path, check=False, step=False)
    sess = cuda_session(path, lib, tmp_path)
    for bsz, L in [(1, 63), (2, 100), (3, 257)]:
        ids = torch.randint(0, 100, (bsz, L), generator=torch.Generator().manual_seed(L))
        logits, kept = sess.run(None, {"input_ids": ids.numpy()})[:2]
        ref_logits, ref_kept = reference_outputs(model, ids, dtype=torch.float32, protect=8)
        np.testing.assert_array_equal(kept, np.asarray(ref_kept), err_msg=f"B={bsz} L={L}")
        ref = np.asarray(ref_logits, dtype=np.float64)
        assert np.linalg.norm(logits - ref) / np.linalg.norm(ref) < 1e-5, (bsz, L)
    with open(sess.end_profiling()) as f:
        events = [e["args"] for e in json.load(f) if e.get("cat") == "Node" and "provider" in e.get("args", {})]
    providers = {(a["op_name"], a["provider"]) for a in events}
    for op in ("SelectKept", "SelectiveScanScore", "SelectiveScan", "CausalConv1d"):
        assert (op, "CUDAExecutionProvider") in providers, (op, sorted(providers))
        assert (op, "CPUExecutionProvider") not in providers, op
