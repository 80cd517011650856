"""ONNX decoding after the pruned prefill: the prefill file's recurrent states and the step file, against PyTorch's
`PrunedMambaLM.prefill` / `step` / `generate` (greedy), in stock onnxruntime and with libsimba_ort_ops.
Also the one-line verdict the convert CLI prints."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")
import numpy as np  # noqa: E402

from onnx_helpers import build_ops_library, paths, tiny_dense  # noqa: E402
from simba_convert.export import export_onnx, generate_onnx, run_onnx  # noqa: E402
from simba_convert.export.runtime import decode, make_session  # noqa: E402
from simba_convert.export.summary import summary_line  # noqa: E402
from simba_convert.pruning.model import PrunedMambaLM  # noqa: E402
from simba_convert.pruning.spec import PruningSpec  # noqa: E402
from tolerance import assert_matches  # noqa: E402

STEPS = 5


@pytest.fixture(scope="module")
def ops_library(tmp_path_factory):
    return build_ops_library(tmp_path_factory)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A pruned tiny model (two scored layers, protect 4) and its prefill and step files (no export check: the
    tests below are the check)."""
    model = PrunedMambaLM(tiny_dense(seed=3), PruningSpec((1.0, 0.6, 0.3), criterion="last", protect=4))
    path = tmp_path_factory.mktemp("decode") / "model.onnx"
    report = export_onnx(model, path, check=False)
    return model, path, report


@pytest.mark.parametrize("bsz,L", [(1, 3), (3, 40)])
def test_prefill_states_match_pytorch(bsz, L, exported, ops_library):
    """conv_states / ssm_states are each layer's state after its own compacted sequence, as prefill returns them
    (L=3: fewer tokens than the conv window, zero-padded on the left)."""
    model, path, _ = exported
    ids = torch.randint(0, 100, (bsz, L), generator=torch.Generator().manual_seed(L))
    with torch.no_grad():
        logits, states = model.prefill(ids)
    for name, lib in paths(ops_library):
        out = run_onnx(path, ids, library=lib)
        for j, key in enumerate(("conv_states", "ssm_states")):
            ref = torch.stack([s[j] for s in states])
            # fp32 end to end; onnxruntime's matmuls sum in another order than PyTorch's (as for the logits)
            assert_matches(torch.from_numpy(out[key]), ref.float(), torch.float32, scale=10.0)
        assert_matches(torch.from_numpy(out["logits"][:, -1]), logits.float(), torch.float32, scale=10.0)


def test_greedy_generation_matches_pytorch(exported, ops_library):
    model, path, _ = exported
    ids = torch.randint(0, 100, (2, 21), generator=torch.Generator().manual_seed(0))
    ref = model.generate(ids, STEPS).numpy()
    assert ref.shape == (2, 21 + STEPS)
    for name, lib in paths(ops_library):
        got = generate_onnx(path, ids, STEPS, library=lib)
        assert np.array_equal(got, ref), name


def test_step_logits_match_pytorch(exported):
    """Each step's logits, fed the same tokens PyTorch chose, within the fp32 contract (scaled as the prefill's)."""
    model, path, report = exported
    ids = torch.randint(0, 100, (3, 17), generator=torch.Generator().manual_seed(1))
    tokens, logits = decode(make_session(path, False), make_session(report["step"]["path"], False), ids.numpy(), STEPS)
    with torch.no_grad():
        ref_logits, states = model.prefill(ids)
        for i in range(STEPS):
            assert np.array_equal(tokens[:, i], ref_logits.argmax(-1).numpy()), i
            assert_matches(torch.from_numpy(logits[i]), ref_logits.float(), torch.float32, scale=10.0)
            ref_logits, states = model.step(ref_logits.argmax(-1), states)


def test_step_file_takes_any_batch_and_keeps_its_inputs(exported):
    """One token for each of B rows; the states passed in are not modified (ONNX has no in-place inputs, but the
    step must not alias them either: the caller may keep them, e.g. for beam search)."""
    _, _, report = exported
    sess = make_session(report["step"]["path"], False)
    for bsz in (1, 4):
        conv = np.random.default_rng(bsz).standard_normal((3, bsz, 64, 3)).astype(np.float32)
        ssm = np.random.default_rng(bsz + 1).standard_normal((3, bsz, 64, 16)).astype(np.float32)
        before = conv.copy(), ssm.copy()
        logits, c2, s2 = sess.run(None, {"token": np.arange(bsz, dtype=np.int64), "conv_states": conv,
                                         "ssm_states": ssm})
        assert logits.shape == (bsz, 104) and c2.shape == conv.shape and s2.shape == ssm.shape
        assert np.array_equal(conv, before[0]) and np.array_equal(ssm, before[1])
        assert np.array_equal(c2[:, :, :, :2], conv[:, :, :, 1:])  # the window moved by one token


def test_summary_line_says_what_was_compared():
    verify = {
        "shapes": [[2, 27], [1, 2], [3, 17]], "metric": "max_rel", "passed": True,
        "portable": {"max_rel": 1.6e-7, "kept_match": True, "states_max_rel": 3e-7, "simba_kernels_ran": False,
                     "decode": {"steps": 4, "tokens_match": True}, "passed": True},
        "library": {"skipped": "libsimba_ort_ops.so not found (kernels/build.sh builds it)"},
    }
    line = summary_line(verify)
    assert line.startswith("passed on 3 batch/length shapes (portable max rel 1.6e-07, kept sets equal, ")
    assert "4 decode steps same tokens" in line and "library skipped: libsimba_ort_ops.so not found" in line
    assert "\n" not in line
    bad = dict(verify, passed=False, library={"max_rel": 2e-7, "kept_match": False, "simba_kernels_ran": False,
                                              "passed": False})
    line = summary_line(bad)
    assert line.startswith("FAILED") and "KEPT SETS DIFFER" in line and "KERNELS DID NOT RUN" in line
    assert summary_line({}) == "not checked"
