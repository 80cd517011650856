"""Choosing the kept tokens of dense rows: the Triton kernel against the reference (kept sets), its tie, NaN and
+inf rules against a pure-Python reference, its output contract, and the dispatcher.

Triton kernels run compiled on CUDA and interpreted on the CPU (TRITON_INTERPRET=1, set by conftest.py; tiny shapes).
"""

from __future__ import annotations

import math

import pytest
import torch

from simba_convert.errors import BackendError
from simba_convert.pruning import select
from simba_convert.pruning.select import select_kept_dense_rows, select_kept_dense_rows_ref
from triton_helpers import kernel_module, no_launch

KERNEL_MODULE = "simba_convert.pruning.select_triton"
DEV = "cuda" if torch.cuda.is_available() else "cpu"
LENGTHS = [1, 2, 7, 63, 100, 257, 1000]


@pytest.fixture(scope="module")
def kernels():
    """The Triton module: compiled on CUDA, interpreted on the CPU."""
    return kernel_module(KERNEL_MODULE)


def counts(L):
    """(k_next, n_protected) pairs: keep all, keep half, k == n_protected, a single protected slot, none protected."""
    half = max(1, L // 2)
    third = max(1, L // 3)
    cases = {(L, 1), (L, 0), (half, 1), (half, half), (third, min(3, third)), (1, 1), (max(1, L - 1), 0)}
    return sorted(cases)


def distinct_scores(bsz, L, device=DEV):
    """Fresh normal scores, no ties within a row (so topk's unspecified tie rule cannot matter)."""
    s = torch.randn(bsz, L, device=device)
    for row in s:
        assert row.unique().numel() == L, "draw has ties: pick another seed"
    return s


def py_select(row, n_prot, k):
    """The kernel's documented rule, written plainly: protected first, then larger score (NaN as -inf), then the
    lower position; the k best, ascending. -0.0 and +0.0 compare equal, as in Python."""
    L = len(row)

    def rank(i):
        if i >= L - n_prot:
            return (0, 0.0, i)
        v = -math.inf if math.isnan(row[i]) else row[i]
        return (1, -v, i)

    return sorted(sorted(range(L), key=rank)[:k])


def check_output(slots, bsz, k, L, n_prot):
    assert slots.dtype == torch.int64 and slots.shape == (bsz, k)
    assert (slots[:, 1:] > slots[:, :-1]).all(), "ascending, no repeats"
    assert ((slots >= 0) & (slots < L)).all()
    if n_prot:
        assert (slots[:, k - n_prot:] == torch.arange(L - n_prot, L, device=slots.device)).all(), "protected kept"


@pytest.mark.parametrize("bsz", [1, 3])
@pytest.mark.parametrize("L", LENGTHS)
def test_kernel_keeps_reference_set(kernels, bsz, L):
    for k, P in counts(L):
        scores = distinct_scores(bsz, L)
        ref = select_kept_dense_rows_ref(scores.clone(), P, k)
        out = torch.full((bsz, k), -1, dtype=torch.int64, device=DEV)  # sentinel: an unwritten slot fails
        got = kernels.select_kept_dense_rows_triton(scores, P, k, out=out)
        assert got.data_ptr() == out.data_ptr()
        check_output(got, bsz, k, L, P)
        # both ascending, so equal tensors <=> equal kept sets
        assert torch.equal(got, ref), f"k={k} P={P}"


def test_a_kernel_that_writes_nothing_is_caught(kernels, monkeypatch):
    """After a real call, a launch that writes nothing leaves the fresh slots at the int64 minimum (conftest.py):
    never a valid slot, so the output check rejects it."""
    scores = distinct_scores(3, 63)
    ref = select_kept_dense_rows_ref(scores.clone(), 5, 20)
    assert torch.equal(kernels.select_kept_dense_rows_triton(scores, 5, 20), ref)
    stub = no_launch(monkeypatch, kernels, "_select_kept_rows_kernel")
    got = kernels.select_kept_dense_rows_triton(scores, 5, 20)
    assert stub.launches == 1 and (got == torch.iinfo(torch.int64).min).all()
    with pytest.raises(AssertionError):
        check_output(got, 3, 20, 63, 5)


@pytest.mark.parametrize("L", [7, 100, 257])
def test_ties_keep_lowest_positions(kernels, L):
    """Many duplicates (4 distinct values): among equal scores at the threshold the lowest positions are kept."""
    bsz = 3
    for k, P in counts(L):
        scores = torch.randint(0, 4, (bsz, L), device=DEV).float()
        got = kernels.select_kept_dense_rows_triton(scores, P, k)
        check_output(got, bsz, k, L, P)
        for b in range(bsz):
            assert got[b].tolist() == py_select(scores[b].tolist(), P, k), f"k={k} P={P} row {b}"


@pytest.mark.parametrize("L", [7, 100, 257])
def test_reference_ties_keep_lowest_positions(L):
    """The reference keeps the same tokens at ties as the kernel (and as ONNX's TopK in the exported graph): Mamba-2's
    `delta` scores tie wherever a token repeats."""
    for k, P in counts(L):
        scores = torch.randint(0, 4, (3, L)).float()
        got = select_kept_dense_rows_ref(scores.clone(), P, k)
        check_output(got, 3, k, L, P)
        for b in range(3):
            assert got[b].tolist() == py_select(scores[b].tolist(), P, k), f"k={k} P={P} row {b}"


@pytest.mark.parametrize("L", [2, 63, 100])
def test_special_values_follow_the_documented_rule(kernels, L):
    """-inf, ±0 (equal), NaN (ranked as -inf), +inf, negatives; rows that need -inf and NaN to fill k."""
    bsz = 3
    pool = torch.tensor([-math.inf, -3.5, -1.0, -0.0, 0.0, 2.0, math.nan, math.inf])
    for k, P in counts(L):
        scores = pool[torch.randint(0, len(pool), (bsz, L))].to(DEV)
        scores[1, : L // 2] = math.nan  # the first half of row 1 is NaN: kept only when needed to fill k
        got = kernels.select_kept_dense_rows_triton(scores, P, k)
        check_output(got, bsz, k, L, P)
        for b in range(bsz):
            assert got[b].tolist() == py_select(scores[b].tolist(), P, k), f"k={k} P={P} row {b}"


def test_negative_scores_match_reference(kernels):
    bsz, L = 3, 100
    scores = -distinct_scores(bsz, L).abs() - 1.0
    scores[:, ::7] = -math.inf  # a tied tail below the threshold at k=40 (at most 15 -inf per row)
    for k, P in [(40, 1), (40, 5), (85, 2)]:
        ref = select_kept_dense_rows_ref(scores.clone(), P, k)
        got = kernels.select_kept_dense_rows_triton(scores, P, k)
        if k == 40:
            assert torch.equal(got, ref), f"k={k} P={P}"
        check_output(got, bsz, k, L, P)
        for b in range(bsz):  # k=85 reaches into the -inf ties: the rule decides which
            assert got[b].tolist() == py_select(scores[b].tolist(), P, k)


def test_nan_is_never_kept_unless_needed(kernels):
    L, P = 63, 2
    scores = distinct_scores(2, L)
    nan_pos = torch.tensor([0, 5, 30, 40])
    scores[:, nan_pos] = math.nan
    k = L - len(nan_pos)
    got = kernels.select_kept_dense_rows_triton(scores, P, k)
    assert not torch.isin(got.cpu(), nan_pos).any()
    got = kernels.select_kept_dense_rows_triton(scores, P, k + 2)  # two NaN slots needed: the lowest two
    assert torch.isin(got.cpu(), nan_pos).sum(1).tolist() == [2, 2]
    assert torch.isin(torch.tensor([0, 5]), got[0].cpu()).all()


def test_protected_slots_beat_real_inf(kernels):
    L, P = 20, 4
    scores = distinct_scores(2, L)
    scores[:, :3] = math.inf
    got = kernels.select_kept_dense_rows_triton(scores, P, P)
    assert (got == torch.arange(L - P, L, device=DEV)).all()
    got = kernels.select_kept_dense_rows_triton(scores, P, P + 2)
    assert got[0].tolist() == [0, 1] + list(range(L - P, L))


def test_kernel_does_not_write_scores_and_takes_strided_rows(kernels):
    bsz, L, k, P = 3, 63, 20, 4
    wide = distinct_scores(bsz, 2 * L)
    scores = wide[:, 5 : 5 + L]  # row stride 2L
    before = wide.clone()
    got = kernels.select_kept_dense_rows_triton(scores, P, k)
    assert torch.equal(wide, before), "scores are only read"
    assert torch.equal(got, select_kept_dense_rows_ref(scores.clone(), P, k))
    cols = distinct_scores(L, bsz).t()  # unit stride along the batch: copied to rows first
    assert torch.equal(kernels.select_kept_dense_rows_triton(cols, P, k), select_kept_dense_rows_ref(cols.clone(), P, k))


def test_empty_and_invalid_counts(kernels):
    scores = distinct_scores(2, 10)
    assert kernels.select_kept_dense_rows_triton(scores, 0, 0).shape == (2, 0)
    assert kernels.select_kept_dense_rows_triton(scores[:0], 1, 3).shape == (0, 3)
    for P, k in [(4, 3), (1, 11), (-1, 2)]:
        with pytest.raises(ValueError, match="n_protected"):
            kernels.select_kept_dense_rows_triton(scores, P, k)
        for backend in ("reference", "auto"):
            with pytest.raises(ValueError, match="n_protected"):
                select_kept_dense_rows(scores, P, k, backend=backend)
    with pytest.raises(ValueError, match="out must be"):
        kernels.select_kept_dense_rows_triton(scores, 1, 3, out=torch.empty(2, 4, dtype=torch.int64, device=DEV))
    with pytest.raises(ValueError, match="out must be"):
        kernels.select_kept_dense_rows_triton(scores, 1, 3, out=torch.empty(2, 3, dtype=torch.int32, device=DEV))


@pytest.mark.parametrize("backend", ["auto", "triton", "reference"])
def test_dispatcher_choice(kernels, monkeypatch, backend):
    calls = []
    real = kernels.select_kept_dense_rows_triton

    def spy(*a, **kw):
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(kernels, "select_kept_dense_rows_triton", spy)
    scores = distinct_scores(3, 63)
    expect = select_kept_dense_rows_ref(scores.clone(), 4, 30)
    got = select_kept_dense_rows(scores, 4, 30, backend=backend)
    assert torch.equal(got, expect)
    assert len(calls) == int(backend == "triton" or (backend == "auto" and DEV == "cuda"))
    # the reference marks the protected slots +inf in place; the kernel only reads
    assert bool(torch.isinf(scores[:, -4:]).all()) == (not calls)


def test_dispatcher_rejects_unknown_backend():
    with pytest.raises(BackendError):
        select_kept_dense_rows(torch.randn(1, 5), 1, 2, backend="cuda")


def test_default_call_as_the_model_makes_it():
    """model.py calls select_kept_dense_rows(scores, n_protected, k_next) positionally: auto is the default."""
    scores = distinct_scores(2, 33)
    assert torch.equal(select.select_kept_dense_rows(scores.clone(), 3, 12), select_kept_dense_rows_ref(scores, 3, 12))


@pytest.mark.gpu
def test_kernel_realistic_shape_gpu(kernels):
    bsz, L = 16, 8192
    # a random permutation per row, shifted and scaled: tie-free by construction, negatives included
    scores = (torch.argsort(torch.rand(bsz, L, device="cuda"), dim=1).float() - L / 3) * 1e-3
    for k, P in [(int(0.9 * L), 64), (L // 2, 1), (L, 64), (64, 64)]:
        ref = select_kept_dense_rows_ref(scores.clone(), P, k)
        out = torch.full((bsz, k), -1, dtype=torch.int64, device="cuda")
        got = select_kept_dense_rows(scores, P, k)  # auto takes the kernel on CUDA, which leaves scores unwritten
        assert torch.isfinite(scores).all()
        check_output(got, bsz, k, L, P)
        assert torch.equal(kernels.select_kept_dense_rows_triton(scores, P, k, out=out), ref)
        assert torch.equal(got, ref)
