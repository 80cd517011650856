"""SelectKept, the pruned graph's choice of the kept tokens: its reference body (stock onnxruntime) and the library's
CPU kernel against `select_kept_dense_rows_ref`, the PyTorch model's choice: kept sets on odd lengths, ties, NaN,
protected suffixes longer than the row, and clear errors for counts out of range."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

from simba_convert.pruning.select import select_kept_dense_rows_ref  # noqa: E402
from onnx_helpers import build_ops_library, op_model, ort_session, paths, vi  # noqa: E402


@pytest.fixture(scope="module")
def ops_library(tmp_path_factory):
    return build_ops_library(tmp_path_factory)


def select_model(protect: int) -> bytes:
    node = helper.make_node("SelectKept", ["score", "k"], ["slots"], domain="simba", protect=protect)
    return op_model(node, [vi("score", TensorProto.FLOAT, 2), vi("k", TensorProto.INT64, 1)],
                    [vi("slots", TensorProto.INT64, 2)])


def expected(score: torch.Tensor, protect: int, k: int) -> np.ndarray:
    return select_kept_dense_rows_ref(score.clone(), min(protect, score.shape[1]), k).numpy()


@pytest.mark.parametrize("protect", [0, 5, 64])
def test_select_kept_matches_the_pytorch_choice(protect, ops_library):
    g = torch.Generator().manual_seed(protect)
    for name, lib in paths(ops_library):
        sess = ort_session(select_model(protect), lib)
        for bsz, L in [(1, 1), (2, 63), (3, 100), (1, 2048)]:
            score = torch.randn(bsz, L, generator=g)
            for k in sorted({min(L, max(1, protect)), (L + 1) // 2, L}):
                k = max(k, min(protect, L))
                (slots,) = sess.run(None, {"score": score.numpy(), "k": np.array([k], dtype=np.int64)})
                assert slots.dtype == np.int64 and slots.shape == (bsz, k), name
                np.testing.assert_array_equal(slots, expected(score, protect, k), err_msg=f"{name} B={bsz} L={L} k={k}")


def test_library_breaks_ties_to_the_lowest_positions_and_ranks_nan_last(ops_library):
    """Ties at the threshold (repeated tokens give equal `delta` scores) and NaN: the kernels' rule, which the
    reference body (TopK) shares for ties; NaN ranks as -inf in the kernels only (select_triton.py)."""
    score = torch.tensor([[1.0, 3.0, 3.0, 0.0, 3.0, -0.0, float("nan"), 2.0, 3.0, -1.0]])
    sess = ort_session(select_model(2), ops_library)
    for k in (2, 3, 4, 6, 8, 10):
        (slots,) = sess.run(None, {"score": score.numpy(), "k": np.array([k], dtype=np.int64)})
        want = expected(torch.nan_to_num(score, nan=float("-inf")), 2, k)
        np.testing.assert_array_equal(slots, want, err_msg=f"k={k}")
    (slots,) = sess.run(None, {"score": score.numpy(), "k": np.array([4], dtype=np.int64)})
    assert slots.tolist() == [[1, 2, 8, 9]]  # two 3.0s of four by position, then the protected 8 and 9
    ties = torch.zeros(1, 9)
    portable = ort_session(select_model(0), False)
    (slots,) = portable.run(None, {"score": ties.numpy(), "k": np.array([4], dtype=np.int64)})
    assert slots.tolist() == [[0, 1, 2, 3]]  # the reference body: TopK keeps the lower index of a tie too


@pytest.mark.parametrize("k", [0, 4, 11])
def test_counts_out_of_range_are_refused(k, ops_library):
    sess = ort_session(select_model(5), ops_library)
    with pytest.raises(Exception, match="SelectKept: need min"):
        sess.run(None, {"score": np.zeros((1, 10), np.float32), "k": np.array([k], dtype=np.int64)})


def test_a_negative_protect_is_refused(ops_library):
    sess = ort_session(select_model(-1), ops_library)
    with pytest.raises(Exception, match="SelectKept: protect must be >= 0, got -1"):
        sess.run(None, {"score": np.zeros((1, 10), np.float32), "k": np.array([4], dtype=np.int64)})
