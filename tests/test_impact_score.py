"""Impact score (SIMBA.md §3): reference vs float64 brute force, Triton kernel vs reference, masks, dispatch.

Triton kernels run compiled on CUDA and interpreted on the CPU (TRITON_INTERPRET=1, tiny shapes).
"""

from __future__ import annotations

import importlib
import math
import subprocess
import sys

import pytest
import torch

from simba_convert.errors import BackendError, ConfigError
from simba_convert.ops.score import naive as isc
from simba_convert.ops.score import impact_score, impact_score_ref
from tolerance import FP32_RTOL, assert_matches, poison_like
from triton_helpers import kernel_module, no_launch

KERNEL_MODULE = "simba_convert.ops.score.triton"
SHAPES = [(1, 1, 5, 4), (3, 7, 9, 16), (1, 63, 33, 4), (3, 100, 17, 16)]  # (B, L, D, N)


@pytest.fixture(scope="module")
def kernels():
    """(the Triton module, device): compiled on CUDA, interpreted on the CPU."""
    return kernel_module(KERNEL_MODULE), "cuda" if torch.cuda.is_available() else "cpu"


def make_inputs(bsz, L, D, N, dtype=torch.float32, device="cpu", seed=0):
    """Mamba-like inputs: delta = softplus(·) in (0, ~3], A = -exp(·) in [-16, -0.1]."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(bsz, L, D, generator=g)
    delta = torch.nn.functional.softplus(torch.randn(bsz, L, D, generator=g) - 1.0)
    A = -torch.exp(torch.empty(D, N).uniform_(math.log(0.1), math.log(16.0), generator=g))
    B = torch.randn(bsz, L, N, generator=g)
    C = torch.randn(bsz, L, N, generator=g)
    return [t.to(device=device, dtype=dtype) for t in (u, delta)] + [A.to(device)] + [
        t.to(device=device, dtype=dtype) for t in (B, C)
    ]


def random_mask(bsz, L, seed=1, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    m = torch.rand(bsz, L, generator=g) > 0.3
    m[:, 0] = True  # every sample keeps a real token
    return m.to(device)


def assert_scores_match(out, ref, dtype=torch.float32):
    """-inf exactly where the reference has it; finite scores within the tolerance contract."""
    out, ref = out.cpu(), ref.cpu()
    fin = torch.isfinite(ref)
    assert torch.equal(torch.isneginf(ref), torch.isneginf(out)), "-inf pattern differs"
    assert_matches(out[fin], ref[fin], dtype)


# ---- float64 brute force: the definition of a token's contribution ------------------------------------

def brute_outputs(u, delta, A, B, C, drop=None):
    """y [L, D] of one sample by the recurrence h_t = exp(δ_t A) h_{t-1} + δ_t u_t B_t, y_t = h_t·C_t,
    with token `drop`'s input term zeroed (its decay δ_t still applies)."""
    L, D = u.shape
    h = torch.zeros(D, A.shape[1], dtype=torch.float64)
    ys = []
    for t in range(L):
        h = torch.exp(delta[t, :, None] * A) * h
        if t != drop:
            h = h + (delta[t] * u[t])[:, None] * B[t][None, :]
        ys.append(h @ C[t])
    return torch.stack(ys)


def brute_scores(u, delta, A, B, C, criterion, signed=False):
    """[B, L] scores from differences of recurrences: y_T (last) or Σ_{s≥t} y_s (global)."""
    u, delta, A, B, C = (t.double() for t in (u, delta, A, B, C))
    bsz, L, _ = u.shape
    out = torch.empty(bsz, L, dtype=torch.float64)
    for b in range(bsz):
        full = brute_outputs(u[b], delta[b], A, B[b], C[b])
        for t in range(L):
            diff = full - brute_outputs(u[b], delta[b], A, B[b], C[b], drop=t)  # [L, D]
            dy = diff[-1] if criterion == "last" else diff[t:].sum(0)
            out[b, t] = (dy if signed else dy.abs()).max()
    return out


@pytest.mark.parametrize("criterion", ["last", "global"])
@pytest.mark.parametrize("signed", [False, True])
def test_reference_equals_unrolled_recurrence(criterion, signed):
    x = make_inputs(2, 7, 3, 4)
    assert_matches(impact_score_ref(*x, criterion=criterion, signed=signed), brute_scores(*x, criterion, signed).float())


@pytest.mark.parametrize("criterion", ["last", "global"])
def test_kernel_equals_unrolled_recurrence(kernels, criterion):
    mod, dev = kernels
    x = make_inputs(2, 7, 3, 4, device=dev)
    out = mod.impact_score_triton(*x, criterion=criterion)
    assert_matches(out.cpu(), brute_scores(*[t.cpu() for t in x], criterion).float())


def test_reference_chunking_does_not_change_scores(monkeypatch):
    x = make_inputs(3, 100, 17, 16)
    whole = {c: impact_score_ref(*x, criterion=c) for c in ("last", "global")}
    monkeypatch.setattr(isc, "_CHUNK_ELEMS", 3 * 17 * 16 * 7)  # chunks of 7 tokens: boundaries everywhere
    for c, ref in whole.items():
        assert_matches(impact_score_ref(*x, criterion=c), ref)


# ---- kernel vs reference -----------------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}L{}D{}N{}".format(*s))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("criterion", ["last", "global"])
def test_kernel_matches_reference(kernels, shape, dtype, criterion):
    mod, dev = kernels
    x = make_inputs(*shape, dtype=dtype, device=dev)
    mask = random_mask(shape[0], shape[1], device=dev) if shape[1] > 1 else None
    out = poison_like(torch.empty(shape[0], shape[1], device=dev))
    res = mod.impact_score_triton(*x, criterion=criterion, mask=mask, out=out)
    assert res is out
    ref = impact_score_ref(*[t.cpu() for t in x], criterion=criterion, mask=None if mask is None else mask.cpu())
    # Both sides upcast the same low-precision inputs and compute in fp32, so the fp32 contract applies.
    assert_scores_match(out, ref, torch.float32)


ALL_KERNELS = ("_last_kernel", "_global_kernel", "_delta_chunk_sums_kernel")


@pytest.mark.parametrize("criterion,config,silenced", [
    ("last", None, ALL_KERNELS),
    ("global", None, ALL_KERNELS),
    ("last", dict(block_t=8, block_d=16, chunks=4), ALL_KERNELS),
    ("last", dict(block_t=8, block_d=16, chunks=4), ("_delta_chunk_sums_kernel",)),  # only `sums` unwritten
], ids=["last", "global", "chunked", "chunk-sums-only"])
@pytest.mark.filterwarnings("ignore:All-NaN slice")  # the interpreter's max over NaN carries: what is tested
def test_a_kernel_that_writes_nothing_is_caught(kernels, monkeypatch, criterion, config, silenced):
    """The kernels write `part` (and `sums`), never the scores: torch.amax fills those, so poisoning `out` guards
    nothing. After a real call (its right answers may be left in freed memory) and with an unpoisoned `out`,
    launches that write nothing must still give NaN scores, which the comparison rejects."""
    mod, dev = kernels
    x = make_inputs(2, 20, 17, 4, device=dev)
    ref = impact_score_ref(*[t.cpu() for t in x], criterion=criterion)
    assert_scores_match(mod.impact_score_triton(*x, criterion=criterion, config=config), ref)
    stub = no_launch(monkeypatch, mod, *silenced)
    out = torch.zeros(2, 20, device=dev)
    mod.impact_score_triton(*x, criterion=criterion, out=out, config=config)
    assert stub.launches >= 1
    assert torch.isnan(out).any()
    with pytest.raises(AssertionError, match="NaN"):
        assert_scores_match(out, ref)


@pytest.mark.parametrize("config", [dict(block_t=8, block_d=16, chunks=4, num_warps=2), dict(block_t=32, chunks=2)])
def test_chunked_last_layout_matches_reference(kernels, config):
    mod, dev = kernels
    x = make_inputs(2, 70, 17, 16, dtype=torch.bfloat16, device=dev)
    mask = random_mask(2, 70, device=dev)
    out = poison_like(torch.empty(2, 70, device=dev))
    mod.impact_score_triton(*x, criterion="last", mask=mask, out=out, config=config)
    assert_scores_match(out, impact_score_ref(*[t.cpu() for t in x], criterion="last", mask=mask.cpu()))


@pytest.mark.parametrize("criterion", ["last", "global"])
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
def test_kernel_forms_softplus_of_raw_delta(kernels, criterion, bias, masked):
    """delta_softplus / delta_bias: the kernel reads the raw step (bf16, like dt_proj's output) and forms
    softplus(dt + bias) itself; the scores equal the reference's on the materialised delta."""
    mod, dev = kernels
    g = torch.Generator().manual_seed(3)
    bsz, L, D, N = 2, 45, 19, 16
    u, _, A, B, C = make_inputs(bsz, L, D, N, device=dev)
    raw = (torch.randn(bsz, L, D, generator=g) * 2 - 1).to(device=dev, dtype=torch.bfloat16)
    b = (torch.randn(D, generator=g) * 0.5).to(dev) if bias else None
    mask = random_mask(bsz, L, device=dev) if masked else None
    delta = torch.nn.functional.softplus(raw.float() + (b if bias else 0.0))
    configs = [None, dict(chunks=3)] if criterion == "last" else [None]
    for cfg in configs:
        out = poison_like(torch.empty(bsz, L, device=dev))
        mod.impact_score_triton(u, raw, A, B, C, criterion=criterion, mask=mask, out=out, config=cfg,
                                delta_bias=b, delta_softplus=True)
        ref = impact_score_ref(*[t.cpu() for t in (u, delta, A, B, C)], criterion=criterion,
                               mask=None if mask is None else mask.cpu())
        assert_scores_match(out, ref)
    same = impact_score_ref(u.cpu(), raw.cpu(), A.cpu(), B.cpu(), C.cpu(), criterion=criterion,
                            mask=None if mask is None else mask.cpu(), delta_bias=None if b is None else b.cpu(),
                            delta_softplus=True)
    assert torch.equal(same, ref)


def test_delta_bias_shape_is_checked():
    x = make_inputs(1, 4, 6, 2)
    with pytest.raises(ValueError, match="delta_bias"):
        impact_score(*x, delta_bias=torch.zeros(5), delta_softplus=True)


def test_kernel_reads_strided_inputs(kernels):
    """B and C are views into x_proj's output in the model: non-contiguous, last stride 1."""
    mod, dev = kernels
    u, delta, A, _, _ = make_inputs(2, 63, 9, 4, device=dev)
    xproj = torch.randn(2, 63, 3 + 2 * 4, device=dev)
    B, C = xproj[..., 3:7], xproj[..., 7:]
    ut = u.transpose(1, 2).contiguous().transpose(1, 2)  # channel stride L, not 1
    for c in ("last", "global"):
        out = mod.impact_score_triton(ut, delta, A, B, C, criterion=c)
        assert_scores_match(out, impact_score_ref(*[t.cpu() for t in (u, delta, A, B, C)], criterion=c))


@pytest.mark.parametrize("criterion", ["last", "global"])
def test_topk_keep_sets_agree(kernels, criterion):
    mod, dev = kernels
    x = make_inputs(2, 100, 9, 16, dtype=torch.bfloat16, device=dev)
    out = mod.impact_score_triton(*x, criterion=criterion).cpu()
    ref = impact_score_ref(*[t.cpu() for t in x], criterion=criterion)
    k = 40
    for b in range(2):
        mine, theirs = set(out[b].topk(k).indices.tolist()), set(ref[b].topk(k).indices.tolist())
        kth = ref[b].topk(k).values[-1]
        band = 2 * FP32_RTOL * float(ref[b].abs().max())  # a swap is only allowed between near-ties
        for t in mine ^ theirs:
            assert abs(float(ref[b, t] - kth)) <= band, f"sample {b}: token {t} swapped outside the tie band"


@pytest.mark.parametrize("criterion", ["last", "global"])
def test_kernel_is_deterministic(kernels, criterion):
    mod, dev = kernels
    x = make_inputs(2, 33, 17, 8, dtype=torch.bfloat16, device=dev)
    a = mod.impact_score_triton(*x, criterion=criterion, config=dict(chunks=3) if criterion == "last" else None)
    b = mod.impact_score_triton(*x, criterion=criterion, config=dict(chunks=3) if criterion == "last" else None)
    assert torch.equal(a, b)


@pytest.mark.parametrize("criterion", ["last", "global"])
def test_signed_is_the_max_of_both_signs(kernels, criterion):
    """|·| score = max(signed score of u, signed score of -u): negating u negates every contribution."""
    mod, dev = kernels
    u, *rest = make_inputs(2, 30, 9, 16, device=dev)
    for fn in (impact_score_ref, mod.impact_score_triton):
        pos, neg = fn(u, *rest, criterion=criterion, signed=True), fn(-u, *rest, criterion=criterion, signed=True)
        assert_matches(torch.maximum(pos, neg).cpu(), fn(u, *rest, criterion=criterion).cpu())
    signed = impact_score_ref(u, *rest, criterion=criterion, signed=True)
    assert not torch.equal(signed, impact_score_ref(u, *rest, criterion=criterion))  # the variant is not |·|


# ---- masks -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("criterion", ["last", "global"])
def test_padding_never_affects_real_tokens(kernels, criterion):
    """Right-padded batch (garbage in the padding) scores each sample as if it stood alone."""
    mod, dev = kernels
    lengths = [50, 23, 1]
    x = make_inputs(3, 50, 9, 16, device=dev)
    mask = (torch.arange(50)[None, :] < torch.tensor(lengths)[:, None]).to(dev)
    for fn in (impact_score_ref, mod.impact_score_triton):
        got = fn(*x, criterion=criterion, mask=mask).cpu()
        for b, n in enumerate(lengths):
            alone = impact_score_ref(*[t[b:b + 1, :n].cpu() if t.dim() == 3 else t.cpu() for t in x], criterion=criterion)
            assert_matches(got[b:b + 1, :n], alone)
            assert torch.isneginf(got[b, n:]).all()


@pytest.mark.parametrize("criterion", ["last", "global"])
def test_masked_tokens_are_absent(kernels, criterion):
    """With interior masks, real tokens score as on the compacted sequence; masked ones score -inf."""
    mod, dev = kernels
    x = make_inputs(2, 63, 9, 4, device=dev)
    mask = random_mask(2, 63, seed=5, device=dev)
    for fn in (impact_score_ref, mod.impact_score_triton):
        got = fn(*x, criterion=criterion, mask=mask).cpu()
        for b in range(2):
            keep = mask[b].cpu()
            compact = [t[b:b + 1, keep].cpu() if t.dim() == 3 else t.cpu() for t in x]
            assert_matches(got[b, keep][None], impact_score_ref(*compact, criterion=criterion))
            assert torch.isneginf(got[b, ~keep]).all()


def test_all_masked_sample_scores_minus_inf(kernels):
    mod, dev = kernels
    x = make_inputs(2, 7, 5, 4, device=dev)
    mask = torch.tensor([[True] * 7, [False] * 7], device=dev)
    for c in ("last", "global"):
        for fn in (impact_score_ref, mod.impact_score_triton):
            s = fn(*x, criterion=c, mask=mask).cpu()
            assert torch.isneginf(s[1]).all() and torch.isfinite(s[0]).all()


# ---- baselines: delta, output, random ----------------------------------------------------------------

def test_delta_output_random_criteria():
    u, delta, A, B, C = make_inputs(3, 7, 5, 4)
    mask = random_mask(3, 7)
    s = impact_score_ref(u, delta, A, B, C, criterion="delta", mask=mask)
    assert_matches(s[mask], delta.norm(dim=-1)[mask])
    y = torch.randn(3, 7, 6)
    s = impact_score_ref(None, None, None, None, None, criterion="output", y=y, mask=mask)
    assert_matches(s[mask], y.clamp_min(0).sum(-1)[mask])
    assert torch.isneginf(s[~mask]).all()
    with pytest.raises(ValueError, match="y="):
        impact_score_ref(u, delta, A, B, C, criterion="output")


def test_random_criterion_reproducible_from_seed():
    u = torch.randn(3, 50, 4)
    draw = lambda seed: impact_score_ref(  # noqa: E731
        u, None, None, None, None, criterion="random", generator=torch.Generator().manual_seed(seed))
    a, b, c = draw(7), draw(7), draw(8)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.dtype == torch.float32 and a.shape == (3, 50) and ((a >= 0) & (a < 1)).all()


# ---- dispatch and errors -----------------------------------------------------------------------------

def test_auto_on_cpu_is_the_reference(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x = make_inputs(3, 63, 9, 4)
    for c in ("last", "global"):
        assert torch.equal(impact_score(*x, criterion=c), impact_score_ref(*x, criterion=c))
        assert torch.equal(impact_score(*x, criterion=c, backend="reference"), impact_score_ref(*x, criterion=c))
    if importlib.util.find_spec("triton") is not None:
        with pytest.raises(BackendError):
            impact_score(*x, backend="triton")


def test_triton_backend_dispatches_to_kernel(kernels, monkeypatch):
    mod, dev = kernels
    calls = []
    real = mod.impact_score_triton
    monkeypatch.setattr(mod, "impact_score_triton", lambda *a, **k: calls.append(k["criterion"]) or real(*a, **k))
    x = make_inputs(1, 7, 5, 4, device=dev)
    impact_score(*x, criterion="global", backend="triton")
    impact_score(*x, criterion="delta", backend="triton")  # no kernel: a single PyTorch op anywhere
    assert calls == ["global"]


def test_bad_arguments():
    x = make_inputs(1, 7, 5, 4)
    with pytest.raises(ConfigError):
        impact_score_ref(*x, criterion="first")
    with pytest.raises(BackendError):
        impact_score(*x, backend="cuda")
    with pytest.raises(ValueError, match="mask"):
        impact_score_ref(*x, mask=torch.ones(1, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match="shapes"):
        impact_score_ref(x[0], x[1], x[2][:, :2], x[3], x[4])


def test_import_does_not_load_triton():
    code = "import sys, simba_convert.ops.score; sys.exit('triton' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# ---- GPU: a layer-sized problem ----------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("criterion", ["last", "global"])
def test_gpu_layer_shape(criterion):
    x = make_inputs(2, 2048, 1536, 16, dtype=torch.bfloat16, device="cuda")
    mask = random_mask(2, 2048, device="cuda")
    out = poison_like(torch.empty(2, 2048, device="cuda"))
    impact_score(*x, criterion=criterion, mask=mask, out=out)
    again = impact_score(*x, criterion=criterion, mask=mask)
    assert torch.equal(out, again)
    assert_scores_match(out, impact_score_ref(*x, criterion=criterion, mask=mask))


@pytest.mark.parametrize("criterion", ["last", "global"])
def test_reference_ignores_whatever_padding_holds(criterion):
    """NaN or huge values in masked slots change no real token's score (the mask is a `where`, not a product)."""
    from simba_convert.ops.score import impact_score_ref

    g = torch.Generator().manual_seed(7)
    bsz, L, D, N = 2, 23, 5, 3
    u, delta = torch.randn(bsz, L, D, generator=g), torch.rand(bsz, L, D, generator=g) + 0.1
    A = -torch.rand(D, N, generator=g) - 0.5
    B, C = torch.randn(bsz, L, N, generator=g), torch.randn(bsz, L, N, generator=g)
    mask = torch.ones(bsz, L, dtype=torch.bool)
    mask[0, :4] = False
    mask[1, 17:] = False
    clean = impact_score_ref(u, delta, A, B, C, criterion=criterion, mask=mask)
    dirty = [t.clone() for t in (u, delta, B, C)]
    for t in dirty:
        t[~mask] = float("nan")
    dirty[1][0, 2] = 1e30 if mask[0, 2] else float("nan")
    got = impact_score_ref(dirty[0], dirty[1], A, dirty[2], dirty[3], criterion=criterion, mask=mask)
    assert torch.equal(got[mask], clean[mask])
    assert torch.isfinite(got[mask]).all()
