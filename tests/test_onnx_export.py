"""ONNX export with the `simba` custom ops: reference functions (stock onnxruntime) and the C++ library.

The library is built once per session by kernels/build.sh (g++ and the Debian ORT headers, which it
downloads); where that is impossible the library tests skip and say why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
ort = pytest.importorskip("onnxruntime")
import numpy as np  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

from simba_convert.errors import BackendError, MissingExtraError  # noqa: E402
from simba_convert.export import export_onnx, run_onnx  # noqa: E402
from simba_convert.export.functions import attach_reference_functions  # noqa: E402
from simba_convert.export.graph import PrefillGraph  # noqa: E402
from simba_convert.export.runtime import ENV_VAR, session_options  # noqa: E402
from simba_convert.model.config import MambaConfig  # noqa: E402
from simba_convert.model.mamba import MambaLM  # noqa: E402
from simba_convert.ops.impact_score import impact_score_ref  # noqa: E402
from simba_convert.ops.selective_scan import selective_scan_ref  # noqa: E402
from simba_convert.pruning.model import PrunedMambaLM  # noqa: E402
from simba_convert.pruning.spec import PruningSpec, keep_counts  # noqa: E402
from tolerance import assert_matches  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OPSET = 18


# ---- the custom-op library ------------------------------------------------------------------------
@pytest.fixture(scope="session")
def ops_library(tmp_path_factory):
    """Path of a freshly built libsimba_ort_ops.so (CPU kernels), or a skip with the reason."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    if shutil.which("g++") is None:
        pytest.skip("no g++ to build kernels/")
    out = tmp_path_factory.mktemp("ortlib")
    r = subprocess.run(["bash", str(ROOT / "kernels" / "build.sh"), "--no-cuda", "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        pytest.skip(f"kernels/build.sh failed (headers need the Debian archive): {r.stderr.strip()[-300:]}")
    return out / "libsimba_ort_ops.so"


def paths(lib):
    """The two onnxruntime paths under test: portable (no library) and library."""
    return [("portable", False), ("library", lib)]


# ---- op-level models, built by hand (no exporter) -------------------------------------------------
def _op_model(node, inputs, outputs):
    graph = helper.make_graph([node], "ops", inputs, outputs)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("simba", 1)])
    attach_reference_functions(m)
    onnx.checker.check_model(m, full_check=True)
    return m.SerializeToString()


def _vi(name, elem, rank):
    return helper.make_tensor_value_info(name, elem, [None] * rank)


def scan_model(half: bool) -> bytes:
    T = TensorProto.FLOAT16 if half else TensorProto.FLOAT
    F32 = TensorProto.FLOAT
    ins = [_vi("u", T, 3), _vi("delta", T, 3), _vi("A", F32, 2), _vi("B", T, 3), _vi("C", T, 3),
           _vi("D", F32, 1), _vi("z", T, 3), _vi("delta_bias", F32, 1)]
    node = helper.make_node("SelectiveScan", [i.name for i in ins], ["y", "last_state"], domain="simba")
    return _op_model(node, ins, [_vi("y", T, 3), _vi("last_state", F32, 3)])


def score_model(half: bool, criterion: str, signed: bool) -> bytes:
    T = TensorProto.FLOAT16 if half else TensorProto.FLOAT
    F32 = TensorProto.FLOAT
    ins = [_vi("u", T, 3), _vi("delta", F32, 3), _vi("A", F32, 2), _vi("B", T, 3), _vi("C", T, 3)]
    node = helper.make_node("ImpactScore", [i.name for i in ins], ["score"], domain="simba",
                            criterion=criterion, signed=int(signed))
    return _op_model(node, ins, [_vi("score", F32, 2)])


def _session(model, lib):
    return ort.InferenceSession(model, session_options(lib), providers=["CPUExecutionProvider"])


def scan_inputs(bsz, L, D, N, dtype):
    return {
        "u": torch.randn(bsz, L, D).to(dtype), "delta": (torch.randn(bsz, L, D) - 1).to(dtype),
        "A": -torch.rand(D, N) * 4 - 0.1, "B": torch.randn(bsz, L, N).to(dtype), "C": torch.randn(bsz, L, N).to(dtype),
        "D": torch.randn(D), "z": torch.randn(bsz, L, D).to(dtype), "delta_bias": torch.randn(D) * 0.5,
    }


SHAPES = [(1, 1, 5, 3), (2, 37, 19, 16), (3, 64, 33, 4)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_selective_scan_op_matches_reference(dtype, ops_library):
    model = scan_model(dtype == torch.float16)
    for name, lib in paths(ops_library):
        sess = _session(model, lib)
        for shape in SHAPES:
            x = scan_inputs(*shape, dtype)
            y, h = sess.run(None, {k: v.numpy() for k, v in x.items()})
            f = {k: v.float() for k, v in x.items()}
            y_ref, h_ref = selective_scan_ref(f["u"], f["delta"], f["A"], f["B"], f["C"], f["D"], f["z"],
                                              f["delta_bias"], True, return_last_state=True)
            assert y.dtype == (np.float16 if dtype == torch.float16 else np.float32), name
            assert_matches(torch.from_numpy(y), y_ref, dtype)
            assert_matches(torch.from_numpy(h), h_ref, torch.float32)


@pytest.mark.parametrize("criterion,signed", [("last", False), ("global", False), ("last", True)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_impact_score_op_matches_reference(criterion, signed, dtype, ops_library):
    model = score_model(dtype == torch.float16, criterion, signed)
    for name, lib in paths(ops_library):
        sess = _session(model, lib)
        for shape in SHAPES:
            x = scan_inputs(*shape, dtype)
            delta = F.softplus(x["delta"].float() + x["delta_bias"])
            feed = {"u": x["u"], "delta": delta, "A": x["A"], "B": x["B"], "C": x["C"]}
            (score,) = sess.run(None, {k: v.numpy() for k, v in feed.items()})
            ref = impact_score_ref(x["u"], delta, x["A"], x["B"], x["C"], criterion=criterion, signed=signed)
            # both compute in fp32 from the same (fp16-rounded) inputs: the fp32 contract applies
            assert_matches(torch.from_numpy(score), ref, torch.float32)


@pytest.mark.skipif(os.environ.get("SIMBA_OPS_ISA") == "base", reason="already running the baseline kernels")
def test_baseline_cpu_kernels_match_reference(ops_library):
    """The library picks AVX2+FMA kernels where it can; the SSE2 baseline build must agree as well."""
    import sys

    env = dict(os.environ, SIMBA_OPS_ISA="base", SIMBA_OPS_TRACE="1", **{ENV_VAR: str(ops_library)})
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
                        "-k", "op_matches_reference"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:]
    assert "passed" in r.stdout


def test_library_path_runs_the_kernels_and_portable_path_the_functions(ops_library):
    import json

    tmp = ops_library.parent / "scan.onnx"
    tmp.write_bytes(scan_model(False))
    x = {k: v.numpy() for k, v in scan_inputs(1, 9, 4, 2, torch.float32).items()}
    sess_ops = []
    for lib in (False, ops_library):
        so = session_options(lib)
        so.enable_profiling = True
        so.profile_file_prefix = str(ops_library.parent / "prof")
        s = ort.InferenceSession(str(tmp), so, providers=["CPUExecutionProvider"])
        s.run(None, x)
        with open(s.end_profiling()) as f:
            sess_ops.append({e["args"].get("op_name") for e in json.load(f) if e.get("cat") == "Node"})
    assert "Scan" in sess_ops[0] and "SelectiveScan" not in sess_ops[0]
    assert "SelectiveScan" in sess_ops[1] and "Scan" not in sess_ops[1]


# ---- whole-model export -------------------------------------------------------------------------------
def tiny_dense(seed=0):
    torch.manual_seed(seed)
    model = MambaLM(MambaConfig(d_model=32, n_layer=3, vocab_size=100)).eval()
    with torch.no_grad():  # spread dt and A like a trained model so that scores differ between tokens
        for layer in model.backbone.layers:
            layer.mixer.dt_proj.bias.uniform_(-4, -1)
            layer.mixer.A_log.add_(torch.randn_like(layer.mixer.A_log) * 0.5)
    return model


def reference(model, ids, protect):
    """(logits at the protected suffix, kept_mask [n_layer, B, L]) from PyTorch."""
    with torch.no_grad():
        if isinstance(model, PrunedMambaLM):
            logits, info = model(ids, protect=protect, return_info=True)
            bsz, L = ids.shape
            mask = torch.stack([torch.zeros(bsz, L + 1, dtype=torch.bool).scatter(1, torch.where(k >= 0, k, L), True)[:, :L]
                                for k in info.kept])
        else:
            logits = model(ids)
            mask = torch.ones(model.config.n_layer, *ids.shape, dtype=torch.bool)
    return logits[:, -max(1, protect):].float(), mask


@pytest.fixture(scope="module")
def exported(tmp_path_factory, ops_library):
    """Three exports of the tiny model: sparse fp32 (`last`), sparse fp16 (`global`), dense fp32."""
    out = tmp_path_factory.mktemp("onnx")
    cases = {
        "sparse32": (PrunedMambaLM(tiny_dense(), PruningSpec((1.0, 0.6, 0.3), criterion="last", protect=4)), "float32"),
        "sparse16": (PrunedMambaLM(tiny_dense().half(), PruningSpec((1.0, 0.5, 0.5), criterion="global", protect=3)),
                     "float16"),
        "dense32": (tiny_dense(), "float32"),
    }
    result = {}
    for name, (model, dtype) in cases.items():
        path = out / name / "model.onnx"
        report = export_onnx(model, path, protect=None, dtype=dtype, library=ops_library)
        result[name] = (model, path, report)
    return result


@pytest.mark.parametrize("name", ["sparse32", "sparse16", "dense32"])
def test_export_report_and_file(name, exported):
    model, path, report = exported[name]
    import json

    json.dumps(report)  # the CLI writes it as JSON
    assert report["checker"] == "passed" and report["passed"], report["verify"]
    for p in ("portable", "library"):
        assert report["verify"][p]["kept_match"] and report["verify"][p]["passed"]
    m = onnx.load(str(path))
    onnx.checker.check_model(m, full_check=True)
    n_layer = 3
    custom = [n for n in m.graph.node if n.domain == "simba"]
    assert sum(n.op_type == "SelectiveScan" for n in custom) == n_layer  # bare nodes, not inlined
    n_scores = {"sparse32": 2, "sparse16": 1, "dense32": 0}[name]  # equal ratios need no scores
    assert sum(n.op_type == "ImpactScore" for n in custom) == n_scores
    assert {f.name for f in m.functions} == ({"SelectiveScan", "ImpactScore"} if n_scores else {"SelectiveScan"})
    dims = [d.dim_param or d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "seq"]  # symbolic, not specialised to the example input
    assert [o.name for o in m.graph.output] == ["logits", "kept_mask"]


@pytest.mark.parametrize("name", ["sparse32", "sparse16", "dense32"])
def test_export_matches_pytorch_at_other_shapes(name, exported, ops_library):
    model, path, report = exported[name]
    P = report["protect"]
    g = torch.Generator().manual_seed(1)
    for bsz, L in [(1, 37), (3, 64), (2, 2)]:
        ids = torch.randint(0, 100, (bsz, L), generator=g)
        ref_logits, ref_mask = reference(model, ids, P)
        for _, lib in paths(ops_library):
            out = run_onnx(path, ids, library=lib)
            assert out["logits"].shape == (bsz, min(P, L), 104)
            assert np.array_equal(out["kept_mask"], ref_mask.numpy())
            if report["dtype"] == "float16":
                assert_matches(torch.from_numpy(out["logits"]).half(), ref_logits, torch.float16, scale=2.0)
                # scale 2: a whole fp16 model, not one kernel: matmul roundings differ between runtimes
            else:
                # fp32 end to end, but onnxruntime's matmuls sum in another order than PyTorch's
                assert_matches(torch.from_numpy(out["logits"]), ref_logits, torch.float32, scale=10.0)


def test_kept_counts_follow_the_spec(exported):
    """The graph computes ceil(r·L) from the dynamic L exactly as PruningSpec.keep_counts does."""
    model, path, _ = exported["sparse32"]
    for L in (1, 3, 10, 37, 50, 101):
        out = run_onnx(path, torch.zeros(1, L, dtype=torch.long), library=False)
        got = out["kept_mask"].sum(axis=2)[:, 0].tolist()
        assert got == keep_counts(model.spec.keep_ratios, L, model.spec.protect)


def test_count_formula_at_float_boundaries():
    graph = PrefillGraph(tiny_dense(), (1.0, 0.3, 0.1), protect=2)
    for L in range(1, 300):
        n = torch.scalar_tensor(L, dtype=torch.float64)
        got = [int(graph._count(r, n, n.long())) for r in graph.ratios]
        assert got == keep_counts(graph.ratios, L, 2), L


def test_bundled_tiny_model_exports(tmp_path):
    from simba_convert.errors import CheckpointError
    from simba_convert.io.load import load

    try:
        model = load("mamba-tiny", offline=True)
    except CheckpointError as e:
        pytest.skip(f"bundled mamba-tiny not available: {e}")
    report = export_onnx(model, tmp_path / "model.onnx", protect=2, library=False)
    assert report["passed"], report["verify"]


def test_external_data_export(tmp_path, monkeypatch, ops_library):
    """Models over 2 GB go to external data; forced here on the tiny dense model."""
    from simba_convert.export import exporter

    monkeypatch.setattr(exporter, "EXTERNAL_DATA_BYTES", 0)
    path = tmp_path / "dense" / "model.onnx"
    report = export_onnx(tiny_dense(), path, protect=2, library=ops_library)
    assert report["external_data"] and report["passed"], report
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.onnx", "model.onnx.data"]
    assert path.stat().st_size < 100_000 < report["size_bytes"]


# ---- errors ---------------------------------------------------------------------------------------------------------
@pytest.mark.gpu
def test_export_of_a_cuda_model(tmp_path):
    """A model on the GPU exports too: tracing runs on a CPU copy (CUDA's fake conv1d guards on the data-dependent
    pruned length), and the export still matches the PyTorch model where it lives (portable path: no library)."""
    model = PrunedMambaLM(tiny_dense().cuda(), PruningSpec((1.0, 0.6, 0.3), criterion="last", protect=4))
    report = export_onnx(model, tmp_path / "m.onnx", dtype="float32", library=False)
    assert report["passed"], report["verify"]
    assert next(model.dense.parameters()).is_cuda


def test_missing_onnx_extra_is_named(monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "onnxscript", None)  # makes `import onnxscript` fail
    with pytest.raises(MissingExtraError, match=r"simba-convert\[onnx\]"):
        export_onnx(tiny_dense(), tmp_path / "m.onnx")


def test_library_env_var_must_name_a_file(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "/nonexistent/libsimba_ort_ops.so")
    with pytest.raises(BackendError, match=ENV_VAR):
        session_options("auto")


def test_bf16_export_is_refused(tmp_path):
    from simba_convert.errors import ConfigError

    with pytest.raises(ConfigError, match="float32 and float16"):
        export_onnx(tiny_dense(), tmp_path / "m.onnx", dtype="bfloat16")


def test_unexportable_criterion_is_refused():
    from simba_convert.errors import ConfigError

    with pytest.raises(ConfigError, match="random"):
        PrefillGraph(tiny_dense(), (1.0, 0.5, 0.5), criterion="random")
