"""ONNX export with the `simba` custom ops: reference functions (stock onnxruntime) and the C++ library.

The library is built once per session by kernels/build.sh (g++ and the Debian ORT headers, which it
downloads); where that is impossible the library tests skip and say why.
"""

from __future__ import annotations

import os
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
from simba_convert.export.graph import PrefillGraph  # noqa: E402
from simba_convert.export.runtime import ENV_VAR, session_options  # noqa: E402
from simba_convert.ops.conv1d import causal_conv1d_ref  # noqa: E402
from simba_convert.ops.score import impact_score_ref  # noqa: E402
from simba_convert.ops.scan import selective_scan_ref  # noqa: E402
from simba_convert.pruning.model import PrunedMambaLM  # noqa: E402
from simba_convert.pruning.spec import PruningSpec, keep_counts  # noqa: E402
from onnx_helpers import build_ops_library, op_model, ort_session, paths, tiny_dense, vi  # noqa: E402
from tolerance import assert_matches  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


# ---- the custom-op library ------------------------------------------------------------------------
@pytest.fixture(scope="session")
def ops_library(tmp_path_factory):
    """Path of a freshly built libsimba_ort_ops.so (CPU kernels), or a skip with the reason."""
    return build_ops_library(tmp_path_factory)


# ---- op-level models, built by hand (no exporter) -------------------------------------------------
def scan_model(half: bool) -> bytes:
    T = TensorProto.FLOAT16 if half else TensorProto.FLOAT
    F32 = TensorProto.FLOAT
    ins = [vi("u", T, 3), vi("delta", T, 3), vi("A", F32, 2), vi("B", T, 3), vi("C", T, 3),
           vi("D", F32, 1), vi("z", T, 3), vi("delta_bias", F32, 1)]
    node = helper.make_node("SelectiveScan", [i.name for i in ins], ["y", "last_state"], domain="simba")
    return op_model(node, ins, [vi("y", T, 3), vi("last_state", F32, 3)])


def score_model(half: bool, criterion: str, signed: bool, raw: bool = False) -> bytes:
    """ImpactScore; raw: the 6-input form (raw delta and delta_bias, softplus fused)."""
    T = TensorProto.FLOAT16 if half else TensorProto.FLOAT
    F32 = TensorProto.FLOAT
    ins = [vi("u", T, 3), vi("delta", F32, 3), vi("A", F32, 2), vi("B", T, 3), vi("C", T, 3)]
    if raw:
        ins.append(vi("delta_bias", F32, 1))
    node = helper.make_node("ImpactScore", [i.name for i in ins], ["score"], domain="simba",
                            criterion=criterion, signed=int(signed))
    return op_model(node, ins, [vi("score", F32, 2)])


def scan_score_model(half: bool, criterion: str, signed: bool, protect: int) -> bytes:
    T = TensorProto.FLOAT16 if half else TensorProto.FLOAT
    F32 = TensorProto.FLOAT
    ins = [vi("u", T, 3), vi("delta", T, 3), vi("A", F32, 2), vi("B", T, 3), vi("C", T, 3),
           vi("D", F32, 1), vi("z", T, 3), vi("delta_bias", F32, 1)]
    node = helper.make_node("SelectiveScanScore", [i.name for i in ins], ["y", "last_state", "score"], domain="simba",
                            criterion=criterion, signed=int(signed), protect=protect)
    return op_model(node, ins, [vi("y", T, 3), vi("last_state", F32, 3), vi("score", F32, 2)])


def scan_inputs(bsz, L, D, N, dtype):
    return {
        "u": torch.randn(bsz, L, D).to(dtype), "delta": (torch.randn(bsz, L, D) - 1).to(dtype),
        "A": -torch.rand(D, N) * 4 - 0.1, "B": torch.randn(bsz, L, N).to(dtype), "C": torch.randn(bsz, L, N).to(dtype),
        "D": torch.randn(D), "z": torch.randn(bsz, L, D).to(dtype), "delta_bias": torch.randn(D) * 0.5,
    }


SHAPES = [(1, 1, 5, 3), (2, 37, 19, 16), (3, 64, 33, 4)]
# SelectiveScanScore chains the `last` decays over segments of 16 positions: lengths across several segments, with
# a partial one, and channel counts that leave a partial block of the kernels' 16 channels
SCAN_SCORE_SHAPES = [(1, 1, 5, 3), (2, 37, 19, 16), (1, 100, 33, 4)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_selective_scan_op_matches_reference(dtype, ops_library):
    model = scan_model(dtype == torch.float16)
    for name, lib in paths(ops_library):
        sess = ort_session(model, lib)
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
        sess = ort_session(model, lib)
        for shape in SHAPES:
            x = scan_inputs(*shape, dtype)
            delta = F.softplus(x["delta"].float() + x["delta_bias"])
            feed = {"u": x["u"], "delta": delta, "A": x["A"], "B": x["B"], "C": x["C"]}
            (score,) = sess.run(None, {k: v.numpy() for k, v in feed.items()})
            ref = impact_score_ref(x["u"], delta, x["A"], x["B"], x["C"], criterion=criterion, signed=signed)
            # both compute in fp32 from the same (fp16-rounded) inputs: the fp32 contract applies
            assert_matches(torch.from_numpy(score), ref, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_impact_score_with_raw_delta_matches_reference(dtype, ops_library):
    """The 6-input ImpactScore fuses softplus(delta + delta_bias), as `impact_score(..., delta_softplus=True)`."""
    model = score_model(dtype == torch.float16, "last", False, raw=True)
    for name, lib in paths(ops_library):
        sess = ort_session(model, lib)
        for shape in SHAPES:
            x = scan_inputs(*shape, dtype)
            feed = {"u": x["u"], "delta": x["delta"].float(), "A": x["A"], "B": x["B"], "C": x["C"],
                    "delta_bias": x["delta_bias"]}
            (score,) = sess.run(None, {k: v.numpy() for k, v in feed.items()})
            ref = impact_score_ref(x["u"], x["delta"], x["A"], x["B"], x["C"], criterion="last",
                                   delta_bias=x["delta_bias"], delta_softplus=True)
            assert_matches(torch.from_numpy(score), ref, torch.float32)


@pytest.mark.parametrize("criterion,signed,protect", [("last", False, 0), ("last", False, 7), ("global", False, 3),
                                                      ("last", True, 0)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_selective_scan_score_op_matches_reference(criterion, signed, protect, dtype, ops_library):
    """The fused node: the scan's outputs as SelectiveScan's, the score as ImpactScore's of the same delta (the
    kernel's `last` decays come from the scan's: the fp32 contract still holds), +inf on the protected suffix."""
    model = scan_score_model(dtype == torch.float16, criterion, signed, protect)
    for name, lib in paths(ops_library):
        sess = ort_session(model, lib)
        for shape in SCAN_SCORE_SHAPES:
            x = scan_inputs(*shape, dtype)
            y, h, score = sess.run(None, {k: v.numpy() for k, v in x.items()})
            f = {k: v.float() for k, v in x.items()}
            y_ref, h_ref = selective_scan_ref(f["u"], f["delta"], f["A"], f["B"], f["C"], f["D"], f["z"],
                                              f["delta_bias"], True, return_last_state=True)
            s_ref = impact_score_ref(x["u"], x["delta"], x["A"], x["B"], x["C"], criterion=criterion, signed=signed,
                                     delta_bias=x["delta_bias"], delta_softplus=True)
            L = shape[1]
            tail = slice(max(0, L - protect), L)
            assert np.isinf(score[:, tail]).all() and (score[:, tail] > 0).all(), name
            s_ref[:, tail] = float("inf")
            assert_matches(torch.from_numpy(y), y_ref, dtype)
            assert_matches(torch.from_numpy(h), h_ref, torch.float32)
            if L > protect:
                keep = slice(0, L - protect)
                assert_matches(torch.from_numpy(score[:, keep]), s_ref[:, keep], torch.float32)


def conv_model(half: bool, K: int) -> bytes:
    T = TensorProto.FLOAT16 if half else TensorProto.FLOAT
    F32 = TensorProto.FLOAT
    ins = [vi("x", T, 3), vi("weight", F32, 2), vi("bias", F32, 1)]
    node = helper.make_node("CausalConv1d", ["x", "weight", "bias"], ["u"], domain="simba", kernel_size=K, silu=1)
    return op_model(node, ins, [vi("u", T, 3)])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_causal_conv1d_op_matches_reference(dtype, ops_library):
    """The conv in the scan's [B, L, D] layout: lengths shorter than the window, channels off the vector width."""
    for K in (4, 2):
        model = conv_model(dtype == torch.float16, K)
        for name, lib in paths(ops_library):
            sess = ort_session(model, lib)
            for bsz, L, D in [(1, 1, 5), (2, 3, 19), (3, 70, 40)]:
                x, w, b = torch.randn(bsz, L, D).to(dtype), torch.randn(D, K), torch.randn(D)
                (u,) = sess.run(None, {"x": x.numpy(), "weight": w.numpy(), "bias": b.numpy()})
                ref = causal_conv1d_ref(x.float(), w, b, activation="silu")
                assert u.dtype == (np.float16 if dtype == torch.float16 else np.float32), name
                assert_matches(torch.from_numpy(u), ref, dtype)


def _isas():
    """The narrower kernel builds this CPU can run beside the one the library picks (base: SSE2; avx2)."""
    import platform

    if platform.machine() not in ("x86_64", "AMD64"):
        return []
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    return ["base"] + (["avx2"] if " avx512f" in flags and " avx2" in flags else [])


@pytest.mark.skipif(bool(os.environ.get("SIMBA_OPS_ISA")), reason="already running a capped kernel build")
@pytest.mark.parametrize("isa", _isas())
def test_narrower_cpu_kernels_match_reference(isa, ops_library):
    """The library picks the widest kernels the CPU runs (AVX-512, AVX2+FMA); the narrower builds must agree too."""
    import sys

    env = dict(os.environ, SIMBA_OPS_ISA=isa, **{ENV_VAR: str(ops_library)})
    mamba2 = str(Path(__file__).with_name("test_onnx_mamba2.py"))  # its op tests: Mamba-2's kernels
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, mamba2,
                        "-k", "op_matches_reference or raw_delta"], capture_output=True, text=True, env=env, cwd=ROOT,
                       timeout=300)
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
    assert report["verify"]["shapes"] == [[2, report["protect"] + 23], [1, max(2, report["protect"] // 2)],
                                          [3, 2 * report["protect"] + 9]]
    for p in ("portable", "library"):
        assert report["verify"][p]["decode"]["tokens_match"]  # the step file decodes as PyTorch does
    m = onnx.load(str(path))
    onnx.checker.check_model(m, full_check=True)
    n_layer = 3
    custom = [n for n in m.graph.node if n.domain == "simba"]
    n_scores = {"sparse32": 2, "sparse16": 1, "dense32": 0}[name]  # equal ratios need no scores
    # bare nodes, not inlined; a scored layer's scan and score are one node
    assert sum(n.op_type == "SelectiveScanScore" for n in custom) == n_scores
    assert sum(n.op_type == "SelectiveScan" for n in custom) == n_layer - n_scores
    assert not [n for n in custom if n.op_type == "ImpactScore"]
    assert sum(n.op_type == "CausalConv1d" for n in custom) == n_layer
    assert sum(n.op_type == "SelectKept" for n in custom) == n_scores  # the kept tokens: one node, no TopK left
    assert {f.name for f in m.functions} == ({"SelectiveScan", "SelectiveScanScore", "CausalConv1d", "SelectKept"}
                                             if n_scores else {"SelectiveScan", "CausalConv1d"})
    # what the profile removed (BENCHMARKS.md, "ONNX export"): no softplus of a [B, L, D] tensor for the scores,
    # no [B, L, 2D] in_proj output split in two, no transposes around a grouped Conv, no GatherElements of rows
    ops = [n.op_type for n in m.graph.node]
    assert "Softplus" not in ops and ops.count("Split") == n_layer  # x_proj's (dt, B, C) only
    assert "TopK" not in ops and "Reciprocal" not in ops  # RMSNorm as x / sqrt(..): onnxruntime fuses that form
    # no omitted optional input (a Clip without its min): onnxruntime's GPU providers leave such a node of the
    # kept-count arithmetic on the GPU, and the count then reaches SelectKept through a copy to the host (graph.py)
    assert not [n.op_type for n in m.graph.node if "" in n.input]
    inits = {i.name for i in m.graph.initializer}
    # no grouped Conv; the Transposes left are of weights (folded at load) and of the [B, K-1, D] conv windows
    assert "Conv" not in ops
    assert sum(n.op_type == "Transpose" and n.input[0] not in inits for n in m.graph.node) == n_layer
    assert ops.count("GatherND") == 2 * n_scores and ops.count("GatherElements") == n_scores  # rows; positions
    dims = [d.dim_param or d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "seq"]  # symbolic, not specialised to the example input
    assert [o.name for o in m.graph.output] == ["logits", "kept_mask", "conv_states", "ssm_states"]
    step = onnx.load(report["step"]["path"])
    onnx.checker.check_model(step, full_check=True)
    assert [i.name for i in step.graph.input] == ["token", "conv_states", "ssm_states"]
    assert [o.name for o in step.graph.output] == ["logits", "next_conv_states", "next_ssm_states"]
    assert not [n for n in step.graph.node if n.domain == "simba"]  # standard ONNX only


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
            assert out["conv_states"].shape == (3, bsz, 64, 3) and out["ssm_states"].shape == (3, bsz, 64, 16)
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
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.onnx", "model.onnx.data", "model_step.onnx",
                                                              "model_step.onnx.data"]
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
