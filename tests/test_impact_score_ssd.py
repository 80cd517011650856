"""Mamba-2 (SSD) impact score: reference and Triton kernels against a float64 brute force (the recurrence run with
one token's input zeroed), masks, decisions (top-k kept sets), launch layouts, dispatch and errors.

Triton kernels run compiled on CUDA and interpreted on the CPU (TRITON_INTERPRET=1, tiny shapes).
"""

from __future__ import annotations

import importlib
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from simba_convert.errors import BackendError, ConfigError, ShapeError
from simba_convert.ops.score import impact_score_ref
from simba_convert.ops.score_ssd import impact_score_ssd, impact_score_ssd_ref
from simba_convert.ops._common import one_cpu_thread
from tolerance import FP32_RTOL, assert_matches, poison_like
from triton_helpers import kernel_module, no_launch

KERNEL_MODULE = "simba_convert.ops.score_ssd.triton"
CRITERIA = ["last", "global"]


@pytest.fixture(scope="module")
def kernels():
    """(the Triton module, device): compiled on CUDA, interpreted on the CPU."""
    return kernel_module(KERNEL_MODULE), "cuda" if torch.cuda.is_available() else "cpu"


# ---- inputs -------------------------------------------------------------------------------------------

def make_mask(kind, bsz, L):
    """None; "pad": sample 0 right-padded, 1 left-padded, 2 all masked, others full; "holes": random interior
    holes, with sample 0's last token masked (so T is not L-1) and sample 1 all masked when bsz > 2."""
    if kind is None:
        return None
    m = torch.ones(bsz, L, dtype=torch.bool)
    if kind == "pad":
        m[0, math.ceil(2 * L / 3):] = False
        if bsz > 1:
            m[1, : L - L // 2] = False
        if bsz > 2:
            m[2] = False
        return m
    g = torch.Generator().manual_seed(11)
    m = torch.rand(bsz, L, generator=g) > 0.3
    m[:, 0] = True
    m[0, -1] = False
    if bsz > 2:
        m[1] = False
    return m


def make_inputs(bsz, L, H, P, G, N, *, mask=None, softplus=False, bias=False, dtype=torch.float32, seed=0):
    """(x, dt, A, B, C) and the keyword arguments (mask, dt_bias, dt_softplus) of a Mamba-2-like layer.

    With softplus, dt is the raw step (delta = softplus(dt + bias) in ~(0.05, 3)); without it dt is delta itself
    (> 0) and the bias a small positive shift. A = -exp(·) in [-8, -0.05]. Masked positions hold garbage: NaN in
    dt, B and C (any arithmetic leak through the mask gives NaN), and in x large values (x only meets max
    reductions, which may drop NaN), so a leak changes the scores visibly."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(bsz, L, H, P, generator=g)
    raw = torch.randn(bsz, L, H, generator=g) * 1.5 - 1.0
    dt = raw if softplus else F.softplus(raw)
    A = -torch.exp(torch.empty(H).uniform_(math.log(0.05), math.log(8.0), generator=g))
    B = torch.randn(bsz, L, G, N, generator=g)
    C = torch.randn(bsz, L, G, N, generator=g)
    dt_bias = None
    if bias:
        dt_bias = torch.randn(H, generator=g) * 0.5 if softplus else torch.rand(H, generator=g) * 0.2
    if mask is not None:
        gone = ~mask
        x[gone] = 1e3
        dt[gone], B[gone], C[gone] = float("nan"), float("nan"), float("nan")
    x, dt, B, C = (t.to(dtype) for t in (x, dt, B, C))
    return (x, dt, A, B, C), dict(mask=mask, dt_bias=dt_bias, dt_softplus=softplus)


def to(device, args, kw):
    args = tuple(t.to(device) for t in args)
    kw = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
    return args, kw


# ---- float64 brute force: the definition of a token's contribution ------------------------------------

def brute_force(x, dt, A, B, C, criterion, *, signed=False, mask=None, dt_bias=None, dt_softplus=False):
    """[B, L] float64 scores from differences of recurrences, per sample on its real tokens only (masked tokens
    are absent: -inf). The SSD recurrence per head h of group g = h // (H/G):
        h_t = exp(delta_t[h] A[h]) h_{t-1} + delta_t[h] x_t[h] ⊗ B_t[g],   y_t[h] = h_t C_t[g]
    is run once in full and once per token t with t's input term zeroed (its decay still applies); the
    difference is t's contribution Δy to every output. `last` scores Δy at the last real token, `global` the
    sum of Δy over y_t..y_T; both take the max over (h, p) of |Δy| (of Δy when signed)."""
    x, A, B, C = (t.double() for t in (x, A, B, C))
    delta = dt.double() + (dt_bias.double() if dt_bias is not None else 0.0)
    delta = F.softplus(delta) if dt_softplus else delta
    bsz, L, H, P = x.shape
    G, N = B.shape[2:]
    group = torch.tensor([h // (H // G) for h in range(H)])
    out = torch.full((bsz, L), float("-inf"), dtype=torch.float64)
    for b in range(bsz):
        idx = torch.arange(L) if mask is None else mask[b].nonzero().flatten()
        n = len(idx)
        if n == 0:
            continue
        xs, ds, Bs, Cs = x[b, idx], delta[b, idx], B[b, idx][:, group], C[b, idx][:, group]  # [n, H, (P|N)]
        keep_input = torch.ones(n + 1, n, dtype=torch.float64)  # run v > 0 drops token v-1's input
        keep_input[1:].fill_diagonal_(0.0)
        h = torch.zeros(n + 1, H, P, N, dtype=torch.float64)
        ys = []
        with one_cpu_thread(h.device):  # small steps: two threads on a busy machine cost ~10×
            for t in range(n):
                inp = (ds[t, :, None] * xs[t])[:, :, None] * Bs[t][:, None, :]  # [H, P, N]
                h = torch.exp(ds[t] * A)[None, :, None, None] * h + keep_input[:, t, None, None, None] * inp
                ys.append(torch.einsum("vhpn,hn->vhp", h, Cs[t]))
        y = torch.stack(ys, dim=1)  # [n+1, n, H, P]
        diff = y[:1] - y[1:]  # diff[t, s]: token t's contribution to y_s
        for t in range(n):
            dy = diff[t, -1] if criterion == "last" else diff[t, t:].sum(0)
            out[b, idx[t]] = (dy if signed else dy.abs()).max()
    return out


# ---- comparisons -------------------------------------------------------------------------------------

def assert_scores_match(out, ref, dtype=torch.float32):
    """-inf exactly where the reference has it; finite scores within the tolerance contract."""
    out, ref = out.cpu(), ref.cpu()
    fin = torch.isfinite(ref)
    assert torch.equal(torch.isneginf(ref), torch.isneginf(out)), "-inf pattern differs"
    assert_matches(out[fin].float(), ref[fin].float(), dtype)


def assert_same_decisions(out, brute, min_checked=1):
    """Per sample, the top-k kept set of `out` equals the brute force's, at a k whose k-th and (k+1)-th brute
    scores are far apart (no near-tie: 100× the fp32 tolerance); a k in the middle of the real tokens first."""
    checked = 0
    for b in range(brute.shape[0]):
        real = torch.isfinite(brute[b])
        n = int(real.sum())
        if n < 2:
            continue
        s = brute[b, real].sort(descending=True).values
        band = 100 * FP32_RTOL * float(s.abs().max())
        gaps = s[:-1] - s[1:]  # gaps[k-1]: between the k-th and (k+1)-th
        middle = [k for k in range(max(1, n // 4), max(2, 3 * n // 4)) if gaps[k - 1] > band]
        anywhere = [k for k in range(1, n) if gaps[k - 1] > band]
        ks = middle or anywhere
        if not ks:
            continue
        k = ks[len(ks) // 2]
        want = set(brute[b].topk(k).indices.tolist())
        got = set(out[b].cpu().topk(k).indices.tolist())
        assert got == want, f"sample {b}, k={k}: kept set differs from the brute force's"
        checked += 1
    assert checked >= min_checked, "no sample without near-ties: the decision check tested nothing"


# ---- cases: odd sizes, groups, masks, signed, softplus / bias ----------------------------------------

CASES = [  # (B, L, H, P, G, N), mask kind, softplus, bias, signed
    ((2, 1, 3, 5, 1, 7), None, False, False, False),
    ((2, 1, 6, 5, 3, 7), "pad", True, True, True),
    ((2, 63, 6, 5, 3, 7), None, True, True, False),
    ((3, 63, 3, 5, 1, 7), "pad", True, False, True),
    ((2, 100, 6, 5, 3, 7), "holes", False, True, True),
    ((3, 100, 3, 5, 1, 7), "pad", True, True, False),
]


def case_id(c):
    (bsz, L, H, P, G, N), mask, sp, bias, signed = c
    return f"B{bsz}L{L}H{H}G{G}-{mask or 'nomask'}{'-softplus' if sp else ''}{'-bias' if bias else ''}" + (
        "-signed" if signed else "")


def case_inputs(case, dtype=torch.float32, seed=0):
    (bsz, L, H, P, G, N), mask_kind, sp, bias, signed = case
    args, kw = make_inputs(bsz, L, H, P, G, N, mask=make_mask(mask_kind, bsz, L), softplus=sp, bias=bias,
                           dtype=dtype, seed=seed)
    return args, kw, signed


@pytest.mark.parametrize("criterion", CRITERIA)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_reference_equals_brute_force(case, criterion):
    args, kw, _ = case_inputs(case)
    for signed in (False, True):
        ref = impact_score_ssd_ref(*args, criterion=criterion, signed=signed, **kw)
        brute = brute_force(*args, criterion, signed=signed, **kw)
        assert ref.dtype == torch.float32 and ref.shape == brute.shape
        assert_scores_match(ref, brute)


@pytest.mark.parametrize("criterion", CRITERIA)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_kernel_equals_reference_and_brute_force(kernels, case, criterion):
    """Poisoned `out`, fp32 contract against both; and the kept sets are the brute force's."""
    mod, dev = kernels
    args, kw, signed = case_inputs(case)
    bsz, L = args[0].shape[:2]
    dargs, dkw = to(dev, args, kw)
    out = poison_like(torch.empty(bsz, L, device=dev))
    res = mod.impact_score_ssd_triton(*dargs, criterion=criterion, signed=signed, out=out, **dkw)
    assert res is out
    assert_scores_match(out, impact_score_ssd_ref(*args, criterion=criterion, signed=signed, **kw))
    brute = brute_force(*args, criterion, signed=signed, **kw)
    assert_scores_match(out, brute)
    if L > 1:
        assert_same_decisions(out, brute)


@pytest.mark.parametrize("criterion", CRITERIA)
def test_bf16_inputs(kernels, criterion):
    """bf16 x, dt, B, C (raw dt through softplus, as the model passes them): on the same rounded values the kernel
    meets the fp32 contract and keeps the brute force's sets; against the unrounded fp32 layer it meets the bf16
    contract (relative RMS ≤ 5e-3)."""
    mod, dev = kernels
    case = ((2, 63, 6, 5, 3, 7), "holes", True, True, False)
    args32, kw, _ = case_inputs(case, seed=4)
    args16 = tuple(t.to(torch.bfloat16) if t.dim() > 1 else t for t in args32)
    dargs, dkw = to(dev, args16, kw)
    out = mod.impact_score_ssd_triton(*dargs, criterion=criterion, **dkw).cpu()
    assert_scores_match(out, impact_score_ssd_ref(*args16, criterion=criterion, **kw))
    brute16 = brute_force(*args16, criterion, **kw)
    assert_scores_match(out, brute16)
    assert_same_decisions(out, brute16)
    assert_scores_match(out, brute_force(*args32, criterion, **kw), torch.bfloat16)


# ---- launch layouts ----------------------------------------------------------------------------------

@pytest.mark.parametrize("criterion,config", [
    ("last", dict(block_t=8, block_h=2, block_p=2, block_n=4, chunks=4)),  # chunked, partial blocks everywhere
    ("last", dict(block_t=32, block_h=4, chunks=2, num_warps=2)),
    ("global", dict(block_t=8, block_h=2, block_p=2)),  # H/G = 3 heads in blocks of 2; L not a multiple of 8
], ids=["last-chunked-small-blocks", "last-2-chunks", "global-small-blocks"])
def test_launch_configs_match_reference(kernels, criterion, config):
    mod, dev = kernels
    args, kw = make_inputs(2, 37, 6, 5, 2, 7, mask=make_mask("holes", 2, 37), softplus=True, bias=True,
                           dtype=torch.bfloat16, seed=5)
    dargs, dkw = to(dev, args, kw)
    out = poison_like(torch.empty(2, 37, device=dev))
    mod.impact_score_ssd_triton(*dargs, criterion=criterion, signed=True, out=out, config=config, **dkw)
    assert_scores_match(out, impact_score_ssd_ref(*args, criterion=criterion, signed=True, **kw))


ALL_KERNELS = ("_ssd_last_kernel", "_ssd_global_kernel", "_ssd_delta_chunk_sums_kernel")


@pytest.mark.parametrize("criterion,config,silenced", [
    ("last", dict(chunks=1), ALL_KERNELS),
    ("global", None, ALL_KERNELS),
    ("last", dict(block_t=8, chunks=3), ("_ssd_delta_chunk_sums_kernel",)),  # only the chunk sums unwritten
], ids=["last", "global", "chunk-sums-only"])
@pytest.mark.filterwarnings("ignore:All-NaN slice")  # the interpreter's max over NaN carries: what is tested
def test_a_kernel_that_writes_nothing_is_caught(kernels, monkeypatch, criterion, config, silenced):
    """The kernels write the partial buffer (and the chunk sums), never the scores: torch.amax fills those, so
    poisoning `out` guards nothing. With the launches stubbed out the scores must come out NaN."""
    mod, dev = kernels
    args, kw = make_inputs(2, 20, 3, 5, 1, 7)
    dargs, dkw = to(dev, args, kw)
    ref = impact_score_ssd_ref(*args, criterion=criterion, **kw)
    assert_scores_match(mod.impact_score_ssd_triton(*dargs, criterion=criterion, config=config, **dkw), ref)
    stub = no_launch(monkeypatch, mod, *silenced)
    out = torch.zeros(2, 20, device=dev)
    mod.impact_score_ssd_triton(*dargs, criterion=criterion, out=out, config=config, **dkw)
    assert stub.launches >= 1
    assert torch.isnan(out).any()
    with pytest.raises(AssertionError, match="NaN"):
        assert_scores_match(out, ref)


def test_kernel_reads_strided_views(kernels):
    """In a Mamba-2 layer x, B and C are views into the conv output xBC [B, L, H·P + 2·G·N] and dt a slice of
    in_proj's output: non-contiguous, with a time stride larger than the row."""
    mod, dev = kernels
    bsz, L, H, P, G, N = 2, 30, 6, 5, 2, 7
    g = torch.Generator().manual_seed(6)
    xbc = torch.randn(bsz, L, H * P + 2 * G * N, generator=g).to(dev)
    x = xbc[..., : H * P].view(bsz, L, H, P)
    B = xbc[..., H * P: H * P + G * N].view(bsz, L, G, N)
    C = xbc[..., H * P + G * N:].view(bsz, L, G, N)
    zdt = torch.randn(bsz, L, 3 + H, generator=g).to(device=dev, dtype=torch.bfloat16)
    dt = zdt[..., 3:]
    A = -torch.rand(H, generator=g).to(dev) * 4 - 0.1
    for c in CRITERIA:
        out = mod.impact_score_ssd_triton(x, dt, A, B, C, criterion=c, dt_softplus=True, config=dict(block_h=4))
        ref = impact_score_ssd_ref(*[t.contiguous().cpu() for t in (x, dt, A, B, C)], criterion=c, dt_softplus=True)
        assert_scores_match(out, ref)


# ---- meaning: the same definitions as Mamba-1 --------------------------------------------------------

@pytest.mark.parametrize("criterion", CRITERIA)
def test_mamba1_is_the_case_one_channel_per_head(kernels, criterion):
    """Mamba-1 with A[d, n] = A[d] is Mamba-2 with H = D heads of P = 1 channel and G = 1: the two scores agree,
    with masks and signs (the Mamba-1 reference is ops/score's, computed independently)."""
    mod, dev = kernels
    bsz, L, D, N = 3, 40, 9, 6
    args, kw = make_inputs(bsz, L, D, 1, 1, N, mask=make_mask("pad", bsz, L), softplus=True, bias=True, seed=7)
    args = tuple(t.nan_to_num(1e3) for t in args)  # finite garbage: Mamba-1's reference masks by a product with 0
    x, dt, A, B, C = args
    for signed in (False, True):
        m1 = impact_score_ref(x[..., 0], dt, A[:, None].expand(D, N), B[:, :, 0], C[:, :, 0], criterion=criterion,
                              signed=signed, mask=kw["mask"], delta_bias=kw["dt_bias"], delta_softplus=True)
        assert_scores_match(impact_score_ssd_ref(*args, criterion=criterion, signed=signed, **kw), m1)
    dargs, dkw = to(dev, args, kw)
    one_block = dict(block_h=16)  # all 9 heads in one program: a third of the interpreter's time
    assert_scores_match(mod.impact_score_ssd_triton(*dargs, criterion=criterion, config=one_block, **dkw),
                        impact_score_ref(x[..., 0], dt, A[:, None].expand(D, N), B[:, :, 0], C[:, :, 0],
                                         criterion=criterion, mask=kw["mask"], delta_bias=kw["dt_bias"],
                                         delta_softplus=True))


@pytest.mark.parametrize("criterion", CRITERIA)
def test_signed_is_the_max_of_both_signs(criterion):
    """|·| score = max(signed score of x, signed score of -x): negating x negates every contribution."""
    args, kw = make_inputs(2, 30, 6, 5, 3, 7, softplus=True)
    x, *rest = args
    pos = impact_score_ssd_ref(x, *rest, criterion=criterion, signed=True, **kw)
    neg = impact_score_ssd_ref(-x, *rest, criterion=criterion, signed=True, **kw)
    assert_matches(torch.maximum(pos, neg), impact_score_ssd_ref(*args, criterion=criterion, **kw))
    assert not torch.equal(pos, impact_score_ssd_ref(*args, criterion=criterion, **kw))


@pytest.mark.parametrize("criterion", CRITERIA)
def test_heads_read_their_own_group(criterion):
    """Changing group 1's B and C changes the scores only through heads 2 and 3 (H = 6, G = 3): with x of every
    other head zeroed, only those heads' contributions remain and they must move; with x of heads 2, 3 zeroed
    nothing moves."""
    args, kw = make_inputs(2, 25, 6, 5, 3, 7, softplus=True, seed=8)
    x, dt, A, B, C = args
    B2, C2 = B.clone(), C.clone()
    B2[:, :, 1] += 1.0
    C2[:, :, 1] -= 1.0
    others = x.clone()
    others[:, :, 2:4] = 0
    assert torch.equal(impact_score_ssd_ref(others, dt, A, B, C, criterion=criterion, **kw),
                       impact_score_ssd_ref(others, dt, A, B2, C2, criterion=criterion, **kw))
    mine = torch.zeros_like(x)
    mine[:, :, 2:4] = x[:, :, 2:4]
    assert not torch.allclose(impact_score_ssd_ref(mine, dt, A, B, C, criterion=criterion, **kw),
                              impact_score_ssd_ref(mine, dt, A, B2, C2, criterion=criterion, **kw))


def test_empty_batch_and_sequence(kernels):
    mod, dev = kernels
    for bsz, L in ((0, 5), (2, 0)):
        args, kw = make_inputs(bsz, L, 3, 5, 1, 7)
        for c in CRITERIA:
            assert impact_score_ssd_ref(*args, criterion=c, **kw).shape == (bsz, L)
            dargs, dkw = to(dev, args, kw)
            assert mod.impact_score_ssd_triton(*dargs, criterion=c, **dkw).shape == (bsz, L)


# ---- baselines and dispatch --------------------------------------------------------------------------

def test_baseline_criteria_reuse_the_generic_code():
    args, kw = make_inputs(3, 7, 6, 5, 3, 4, mask=make_mask("holes", 3, 7), softplus=True, bias=True)
    x, dt, A, B, C = args
    mask = kw["mask"]
    s = impact_score_ssd(*args, criterion="delta", **kw)
    assert_matches(s[mask], F.softplus(dt + kw["dt_bias"]).norm(dim=-1)[mask])  # ‖delta_t‖ over heads
    assert torch.isneginf(s[~mask]).all()
    y = torch.randn(3, 7, 8)
    s = impact_score_ssd(None, None, None, None, None, criterion="output", y=y, mask=mask)
    assert_matches(s[mask], y.clamp_min(0).sum(-1)[mask])
    with pytest.raises(ShapeError, match="y="):
        impact_score_ssd(*args, criterion="output")
    draw = lambda seed: impact_score_ssd(  # noqa: E731
        x, None, None, None, None, criterion="random", generator=torch.Generator().manual_seed(seed))
    assert torch.equal(draw(3), draw(3)) and not torch.equal(draw(3), draw(4)) and draw(3).shape == (3, 7)


def test_auto_on_cpu_is_the_reference(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    args, kw = make_inputs(2, 20, 6, 5, 3, 7, mask=make_mask("pad", 2, 20), softplus=True, bias=True)
    for c in CRITERIA:
        ref = impact_score_ssd_ref(*args, criterion=c, **kw)
        assert torch.equal(impact_score_ssd(*args, criterion=c, **kw), ref)
        assert torch.equal(impact_score_ssd(*args, criterion=c, backend="reference", **kw), ref)
    if importlib.util.find_spec("triton") is not None:
        with pytest.raises(BackendError):
            impact_score_ssd(*args, backend="triton", **kw)


def test_triton_backend_dispatches_to_kernel(kernels, monkeypatch):
    mod, dev = kernels
    calls = []
    real = mod.impact_score_ssd_triton
    monkeypatch.setattr(mod, "impact_score_ssd_triton", lambda *a, **k: calls.append(k["criterion"]) or real(*a, **k))
    args, kw = make_inputs(1, 7, 3, 5, 1, 4, softplus=True)
    dargs, dkw = to(dev, args, kw)
    out = impact_score_ssd(*dargs, criterion="global", backend="triton", **dkw)
    assert_scores_match(out, impact_score_ssd_ref(*args, criterion="global", **kw))
    impact_score_ssd(*dargs, criterion="delta", backend="triton", **dkw)  # no kernel: one PyTorch op anywhere
    assert calls == ["global"]


def test_bad_arguments_name_the_parameter():
    (x, dt, A, B, C), _ = make_inputs(2, 7, 6, 5, 3, 4)
    ok = dict(x=x, dt=dt, A=A, B=B, C=C)
    bad = [
        ("x", x[..., 0], r"^x must be \[B, L, H, P\]"),
        ("dt", dt[:, :, :5], r"^dt must be \[B, L, H\] = \[2, 7, 6\]"),
        ("A", A[None].expand(4, 6), r"^A must be \[H\] = \[6\]"),
        ("B", B[:, :6], r"^B must be \[B, L, G, N\]"),
        ("C", C[..., :3], r"^C must be \[B, L, G, N\] = \[2, 7, 3, 4\]"),
        ("B", torch.cat([B, B[:, :, :1]], dim=2), r"^B has G = 4 groups, which must divide the H = 6 heads of x"),
    ]
    for name, value, msg in bad:
        kw = {**ok, name: value}
        if name == "B" and value.shape[2] == 4:
            kw["C"] = value
        for fn in (impact_score_ssd_ref, impact_score_ssd):
            with pytest.raises(ShapeError, match=msg) as e:
                fn(kw["x"], kw["dt"], kw["A"], kw["B"], kw["C"])
            assert "\n" not in str(e.value)
    with pytest.raises(ShapeError, match="^dt_bias must be"):
        impact_score_ssd(x, dt, A, B, C, dt_bias=torch.zeros(5), dt_softplus=True)
    with pytest.raises(ShapeError, match="^mask must be bool"):
        impact_score_ssd(x, dt, A, B, C, mask=torch.ones(2, 6, dtype=torch.bool))
    with pytest.raises(ShapeError, match="^out must be float32"):
        impact_score_ssd(x, dt, A, B, C, out=torch.empty(2, 7, dtype=torch.float64))
    with pytest.raises(ShapeError, match="need x, dt, A, B and C; B is None"):
        impact_score_ssd(x, dt, A, None, C)
    with pytest.raises(ConfigError, match="unknown impact-score criterion 'first'"):
        impact_score_ssd(x, dt, A, B, C, criterion="first")
    for criterion in ("last", "delta"):
        with pytest.raises(BackendError):
            impact_score_ssd(x, dt, A, B, C, criterion=criterion, backend="cuda")


def test_import_does_not_load_triton():
    code = "import sys, simba_convert.ops.score_ssd; sys.exit('triton' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# ---- GPU: a layer-sized problem ----------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("criterion", CRITERIA)
def test_gpu_layer_shape(criterion):
    """Mamba-2 2.7B layer shapes: H = 80 heads of P = 64, G = 1 group of N = 128 states; bf16, raw dt."""
    args, kw = make_inputs(2, 2048, 80, 64, 1, 128, mask=make_mask("holes", 2, 2048), softplus=True, bias=True,
                           dtype=torch.bfloat16)
    dargs, dkw = to("cuda", args, kw)
    out = poison_like(torch.empty(2, 2048, device="cuda"))
    impact_score_ssd(*dargs, criterion=criterion, out=out, **dkw)
    assert torch.equal(out, impact_score_ssd(*dargs, criterion=criterion, **dkw))
    assert_scores_match(out, impact_score_ssd_ref(*dargs, criterion=criterion, **dkw))
