"""bench_onnx.py's choices: the stepped sparse files it exports and how it scores kept-set agreement."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
bench_onnx = pytest.importorskip("bench_onnx")


@pytest.mark.parametrize("every", [1, 8])
def test_sparse_files_meet_the_budget_with_one_prune_point_per_step(every):
    from simba_convert.model.config import MambaConfig
    from simba_convert.pruning.schedules import prune_points

    cfg = MambaConfig(d_model=768, n_layer=24, vocab_size=50280)
    ratios, flops = bench_onnx.budget_ratios(cfg, 0.6, 2048, 64, every)
    assert 0.6 - 0.005 <= flops <= 0.6
    assert prune_points(ratios) == -(-(cfg.n_layer - 1) // every)
    assert ratios[0] == 1.0 and all(b <= a for a, b in zip(ratios, ratios[1:]))


def test_variant_names_and_folders_keep_the_per_layer_file_where_it_was():
    assert bench_onnx.sparse_name(1) == "sparse" and bench_onnx.sparse_name(8) == "sparse-every8"
    assert bench_onnx.tag("dense", None) == "dense"
    assert bench_onnx.tag("sparse", 2048) == "sparse2048"
    assert bench_onnx.tag("sparse-every8", 2048) == "sparse-every8-2048"


def test_kept_overlap_is_the_share_of_the_reference_kept_set():
    ref = np.zeros((2, 1, 10), dtype=bool)
    ref[:, :, 6:] = True  # 8 kept entries
    got = ref.copy()
    assert bench_onnx.kept_overlap(got, ref) == 1.0
    got[1, 0, 6], got[1, 0, 2] = False, True  # one kept token swapped for another: 7 of 8 still shared
    assert bench_onnx.kept_overlap(got, ref) == pytest.approx(7 / 8)
    row = {"kept_match": False, "kept_overlap": 7 / 8}
    assert bench_onnx.kept_cell(row) == "False (0.8750 of kept)"
    assert bench_onnx.kept_cell({"kept_match": True, "kept_overlap": 1.0}) == "True"
