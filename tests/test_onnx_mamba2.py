"""ONNX export of Mamba-2: the SsdScan / SsdScanScore ops (reference functions and library kernels) against the
PyTorch references, and dense and pruned Mamba-2 models exported and run in stock onnxruntime and with
libsimba_ort_ops: logits, kept sets, states and greedy decoding equal to PyTorch's.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")
import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

from ckpt_helpers import randomize_weights  # noqa: E402
from onnx_helpers import build_ops_library, op_model, ort_session, paths, vi  # noqa: E402
from simba_convert.arch.mamba2 import Mamba2Config, Mamba2LM  # noqa: E402
from simba_convert.export import export_onnx, generate_onnx, run_onnx  # noqa: E402
from simba_convert.ops.score_ssd import impact_score_ssd_ref  # noqa: E402
from simba_convert.ops.ssd import ssd_scan_ref  # noqa: E402
from simba_convert.pruning.model import PrunedMambaLM  # noqa: E402
from simba_convert.pruning.spec import PruningSpec  # noqa: E402
from tolerance import assert_matches  # noqa: E402


@pytest.fixture(scope="module")
def ops_library(tmp_path_factory):
    return build_ops_library(tmp_path_factory)


# ---- the ops ------------------------------------------------------------------------------------------------------
def ssd_model(half: bool, score: tuple | None, dt_softplus: bool) -> bytes:
    """SsdScan, or SsdScanScore with score = (criterion, signed, protect)."""
    T = TensorProto.FLOAT16 if half else TensorProto.FLOAT
    F32 = TensorProto.FLOAT
    ins = [vi("x", T, 4), vi("dt", F32, 3), vi("A", F32, 1), vi("B", T, 4), vi("C", T, 4), vi("D", F32, 1),
           vi("dt_bias", F32, 1)]
    outs = [vi("y", T, 4), vi("final_state", F32, 4)]
    attrs = dict(dt_softplus=int(dt_softplus))
    if score:
        outs.append(vi("score", F32, 2))
        attrs.update(criterion=score[0], signed=int(score[1]), protect=score[2])
    node = helper.make_node("SsdScanScore" if score else "SsdScan", [i.name for i in ins], [o.name for o in outs],
                            domain="simba", **attrs)
    return op_model(node, ins, outs)


def ssd_inputs(bsz, L, H, P, G, N, dtype, seed=0, dt_softplus=True):
    """Random op inputs; without the softplus, dt and dt_bias >= 0 (delta = dt + dt_bias is a step size)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    dt, bias = (r(bsz, L, H) - 1, r(H) * 0.5) if dt_softplus else (torch.rand(bsz, L, H, generator=g),
                                                                   torch.rand(H, generator=g) * 0.1)
    return {"x": r(bsz, L, H, P).to(dtype), "dt": dt, "A": -torch.rand(H, generator=g) * 4 - 0.1,
            "B": r(bsz, L, G, N).to(dtype), "C": r(bsz, L, G, N).to(dtype), "D": r(H), "dt_bias": bias}


# (B, L, H, P, G, N): one token; odd sizes with several groups and channels off the kernels' 16-channel blocks
# (P = 5, 19); a head of several blocks with a partial one (P = 37); lengths across the kernels' vector of positions
SSD_SHAPES = [(1, 1, 2, 3, 1, 4), (2, 37, 6, 5, 3, 7), (3, 50, 4, 19, 2, 16), (1, 23, 3, 37, 1, 5)]


@pytest.mark.parametrize("dt_softplus", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_ssd_scan_op_matches_reference(dtype, dt_softplus, ops_library):
    model = ssd_model(dtype == torch.float16, None, dt_softplus)
    for name, lib in paths(ops_library):
        sess = ort_session(model, lib)
        for shape in SSD_SHAPES:
            x = ssd_inputs(*shape, dtype, dt_softplus=dt_softplus)
            y, state = sess.run(None, {k: v.numpy() for k, v in x.items()})
            f = {k: v.float() for k, v in x.items()}
            y_ref, s_ref = ssd_scan_ref(f["x"], f["dt"], f["A"], f["B"], f["C"], D=f["D"], dt_bias=f["dt_bias"],
                                        dt_softplus=dt_softplus, return_final_state=True, chunk_size=16)
            assert y.dtype == (np.float16 if dtype == torch.float16 else np.float32), name
            assert_matches(torch.from_numpy(y), y_ref, dtype)
            assert_matches(torch.from_numpy(state), s_ref, torch.float32)


@pytest.mark.parametrize("criterion,signed,protect", [("last", False, 0), ("last", True, 5), ("global", False, 3),
                                                      ("global", True, 0)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_ssd_scan_score_op_matches_reference(criterion, signed, protect, dtype, ops_library):
    """The fused node: the scan's outputs as SsdScan's, the score as `impact_score_ssd_ref` of the same delta, +inf on
    the protected suffix."""
    model = ssd_model(dtype == torch.float16, (criterion, signed, protect), True)
    for name, lib in paths(ops_library):
        sess = ort_session(model, lib)
        for shape in SSD_SHAPES:
            x = ssd_inputs(*shape, dtype, seed=1)
            y, state, score = sess.run(None, {k: v.numpy() for k, v in x.items()})
            f = {k: v.float() for k, v in x.items()}
            y_ref, s_ref = ssd_scan_ref(f["x"], f["dt"], f["A"], f["B"], f["C"], D=f["D"], dt_bias=f["dt_bias"],
                                        dt_softplus=True, return_final_state=True)
            ref = impact_score_ssd_ref(x["x"], x["dt"], x["A"], x["B"], x["C"], criterion=criterion, signed=signed,
                                       dt_bias=x["dt_bias"], dt_softplus=True)
            assert_matches(torch.from_numpy(y), y_ref, dtype)
            assert_matches(torch.from_numpy(state), s_ref, torch.float32)
            L = shape[1]
            tail = max(0, L - protect)
            assert np.isinf(score[:, tail:]).all() and (score[:, tail:] > 0).all(), name
            if tail:  # both compute the score in fp32 from the same (fp16-rounded) inputs: the fp32 contract applies
                assert_matches(torch.from_numpy(score[:, :tail]), ref[:, :tail], torch.float32)


# ---- whole models ---------------------------------------------------------------------------------------------------
# Odd sizes throughout (d_model 20, d_state 5, conv 3, vocab 53); chunk 16 so that PyTorch's chunked scan spans chunks.
BASE = dict(d_model=20, vocab_size=53, d_state=5, d_conv=3, chunk_size=16)
CASES = {  # config (None: the bundled mamba2-tiny), keep ratios (None: dense), criterion, protect, dtype
    # 5 heads of 8 channels in 5 groups, no gated norm (y·silu(z)), biases but no conv bias; two scored layers
    "last": (dict(n_layer=3, headdim=8, ngroups=5, gated_rmsnorm=False, bias=True, conv_bias=False),
             (1.0, 0.6, 0.3), "last", 4, "float32"),
    # 8 heads of 5 in 4 groups, norm before the gate, a step-size limit (delta clamped in the graph), per-channel D,
    # LayerNorm blocks; `delta` scores tie wherever a token repeats (dt is a projection of the token alone)
    "delta": (dict(n_layer=2, headdim=5, ngroups=4, norm_before_gate=True, dt_limit=(0.05, 0.5), D_has_hdim=True,
                   rms_norm=False), (1.0, 0.5), "delta", 3, "float32"),
    # the bundled trained model, dense, in fp16: heads of 64 channels (4 kernel blocks), gate before the norm
    "tiny16": (None, None, None, 3, "float16"),
}


def tiny_mamba2(case: str, seed: int = 7):
    cfg, ratios, criterion, protect, dtype = CASES[case]
    if cfg is None:
        import simba_convert
        from simba_convert.errors import CheckpointError

        try:
            return simba_convert.load("mamba2-tiny", offline=True, dtype=dtype).eval()
        except CheckpointError as e:
            pytest.skip(f"bundled mamba2-tiny not available: {e}")
    torch.manual_seed(seed)
    # A spread over -(0.5 .. 4.5) and step sizes over (0, 1), so that token scores differ
    dense = randomize_weights(Mamba2LM(Mamba2Config(**BASE, **cfg)), seed, spread_a=True, dt_bias=(0.5, -1.0)).eval()
    return PrunedMambaLM(dense.to(getattr(torch, dtype)), PruningSpec(ratios, criterion=criterion, protect=protect))


@pytest.fixture(scope="module")
def exported(tmp_path_factory, ops_library):
    """Each case exported with the full check (onnx.checker, both onnxruntime paths against PyTorch at three batch
    sizes and lengths: logits, kept sets, states, 4 decoding steps)."""
    out = tmp_path_factory.mktemp("onnx_m2")
    result = {}
    for case in CASES:
        model = tiny_mamba2(case)
        path = out / case / "model.onnx"
        report = export_onnx(model, path, protect=CASES[case][3], dtype=CASES[case][4], library=ops_library)
        result[case] = (model, path, report)
    return result


@pytest.mark.parametrize("case", list(CASES))
def test_export_report_and_file(case, exported):
    model, path, report = exported[case]
    cfg = (model.dense if isinstance(model, PrunedMambaLM) else model).config
    assert report["checker"] == "passed" and report["passed"], report["verify"]
    for p in ("portable", "library"):
        v = report["verify"][p]
        assert v["passed"] and v["kept_match"] and v["decode"]["tokens_match"], (p, v)
        assert v["simba_kernels_ran"] == (p == "library")
    H, P, N = cfg.nheads, cfg.headdim, cfg.d_state
    conv = [cfg.n_layer, "batch", cfg.d_inner + 2 * cfg.ngroups * N, cfg.d_conv - 1]
    assert report["outputs"]["conv_states"] == conv
    assert report["outputs"]["ssm_states"] == [cfg.n_layer, "batch", H, P, N]
    m = onnx.load(str(path))
    custom = [n for n in m.graph.node if n.domain == "simba"]
    pruned = {"last": 2, "delta": 1, "tiny16": 0}[case]  # layers whose ratio differs from the next one's
    n_scored = pruned if case == "last" else 0  # `delta` is scored in standard ops
    assert sum(n.op_type == "SsdScanScore" for n in custom) == n_scored
    assert sum(n.op_type == "SsdScan" for n in custom) == cfg.n_layer - n_scored
    assert sum(n.op_type == "SelectKept" for n in custom) == pruned  # the kept tokens, one node a pruned layer
    assert sum(n.op_type == "CausalConv1d" for n in custom) == cfg.n_layer
    assert len(custom) == 2 * cfg.n_layer + pruned
    assert {f.name for f in m.functions} == ({"CausalConv1d", "SsdScan"} | ({"SsdScanScore"} if n_scored else set())
                                             | ({"SelectKept"} if pruned else set()))
    softplus = {a.i for n in custom if n.op_type.startswith("Ssd") for a in n.attribute if a.name == "dt_softplus"}
    assert softplus == {int(not cfg.has_dt_limit)}  # with a limit the graph forms delta itself
    ops = [n.op_type for n in m.graph.node]
    assert "Conv" not in ops and "TopK" not in ops
    dims = [d.dim_param or d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "seq"]  # symbolic, not specialised to the example input
    step = onnx.load(report["step"]["path"])
    assert not [n for n in step.graph.node if n.domain == "simba"]  # standard ONNX only
    assert [o.name for o in step.graph.output] == ["logits", "next_conv_states", "next_ssm_states"]


def reference(model, ids, protect):
    """(logits at the protected suffix, kept_mask [n_layer, B, L], states) from PyTorch."""
    from simba_convert.export.verify import reference_decode, reference_outputs

    logits, mask = reference_outputs(model, ids, dtype=model.dtype, protect=protect)
    states, _, _ = reference_decode(model, ids, dtype=model.dtype, steps=1, protect=protect)
    return logits, mask, states


@pytest.mark.parametrize("case", list(CASES))
def test_export_matches_pytorch_at_other_shapes(case, exported, ops_library):
    model, path, report = exported[case]
    P = report["protect"]
    g = torch.Generator().manual_seed(1)
    for bsz, L in [(1, 37), (3, 50), (2, 1)]:
        ids = torch.randint(0, 53, (bsz, L), generator=g)
        ref_logits, ref_mask, ref_states = reference(model, ids, P)
        for name, lib in paths(ops_library):
            out = run_onnx(path, ids, library=lib)
            assert np.array_equal(out["kept_mask"], ref_mask), (name, L)
            got = [torch.from_numpy(out[k]).float() for k in ("logits", "conv_states", "ssm_states")]
            for o, r in zip(got, [ref_logits, *ref_states]):
                if report["dtype"] == "float16":
                    # scale 2: a whole fp16 model, not one kernel: matmul roundings differ between runtimes
                    assert_matches(o.half(), torch.from_numpy(r), torch.float16, scale=2.0)
                else:
                    # fp32 end to end; the scan is sequential here and chunked in PyTorch, and onnxruntime's
                    # matmuls sum in another order than PyTorch's: the model-level scale Mamba-1's tests use
                    assert_matches(o, torch.from_numpy(r), torch.float32, scale=10.0)


def test_greedy_generation_matches_pytorch(exported, ops_library):
    """The pruned prefill's states continue in the step file as PyTorch's `generate` continues them."""
    model, path, _ = exported["last"]
    ids = torch.randint(0, 53, (2, 21), generator=torch.Generator().manual_seed(0))
    ref = model.generate(ids, 6).numpy()
    for name, lib in paths(ops_library):
        assert np.array_equal(generate_onnx(path, ids, 6, library=lib), ref), name


def test_tied_scores_keep_the_same_tokens(exported):
    """Mamba-2's `delta` scores of repeated tokens tie exactly (dt is a projection of the token alone) in PyTorch and
    in onnxruntime alike; both keep the lowest positions among tied ones (ONNX TopK's rule, the reference's)."""
    model, path, report = exported["delta"]
    ids = torch.randint(0, 3, (3, 40), generator=torch.Generator().manual_seed(2))  # three distinct tokens
    _, ref_mask, _ = reference(model, ids, report["protect"])
    assert np.array_equal(run_onnx(path, ids, library=False)["kept_mask"], ref_mask)
