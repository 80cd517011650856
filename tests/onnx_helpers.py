"""Shared by the ONNX tests: the custom-op library built once per session, the two onnxruntime paths, single-op models
built by hand, and the tiny model they export."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from simba_convert.export.functions import attach_reference_functions
from simba_convert.export.runtime import ENV_VAR, session_options
from simba_convert.model.config import MambaConfig
from simba_convert.model.mamba import MambaLM

ROOT = Path(__file__).resolve().parents[1]
OPSET = 18
_built: dict[str, Path] = {}


def paths(lib):
    """The two onnxruntime paths under test: portable (no library: the reference functions) and library."""
    return [("portable", False), ("library", lib)]


def op_model(node, inputs, outputs) -> bytes:
    """A model of one `simba` node with its reference function attached, checked."""
    import onnx
    from onnx import helper

    graph = helper.make_graph([node], "ops", inputs, outputs)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("simba", 1)])
    attach_reference_functions(m)
    onnx.checker.check_model(m, full_check=True)
    return m.SerializeToString()


def vi(name, elem, rank):
    """A value info of element type `elem` and `rank` unnamed dims."""
    from onnx import helper

    return helper.make_tensor_value_info(name, elem, [None] * rank)


def ort_session(model, lib):
    import onnxruntime as ort

    return ort.InferenceSession(model, session_options(lib), providers=["CPUExecutionProvider"])


def build_ops_library(tmp_path_factory) -> Path:
    """Path of a freshly built libsimba_ort_ops.so (CPU kernels; built once per session), or a skip with the reason."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    if "lib" in _built:
        return _built["lib"]
    if shutil.which("g++") is None:
        pytest.skip("no g++ to build kernels/")
    out = tmp_path_factory.mktemp("ortlib")
    r = subprocess.run(["bash", str(ROOT / "kernels" / "build.sh"), "--no-cuda", "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        pytest.skip(f"kernels/build.sh failed (headers need the Debian archive): {r.stderr.strip()[-300:]}")
    _built["lib"] = out / "libsimba_ort_ops.so"
    return _built["lib"]


def tiny_dense(seed=0):
    torch.manual_seed(seed)
    model = MambaLM(MambaConfig(d_model=32, n_layer=3, vocab_size=100)).eval()
    with torch.no_grad():  # spread dt and A like a trained model so that scores differ between tokens
        for layer in model.backbone.layers:
            layer.mixer.dt_proj.bias.uniform_(-4, -1)
            layer.mixer.A_log.add_(torch.randn_like(layer.mixer.A_log) * 0.5)
    return model
