"""Residual add + RMSNorm: the reference against the model's RMSNorm, the Triton forward against the reference,
the dispatcher.

Triton kernels run compiled on CUDA and interpreted on the CPU (TRITON_INTERPRET=1, set by conftest.py; tiny shapes).
"""

from __future__ import annotations


import pytest
import torch

from simba_convert.errors import BackendError
from simba_convert.model.mamba import RMSNorm
from simba_convert.ops.rms_norm import add_rms_norm, add_rms_norm_ref, gated_rms_norm, gated_rms_norm_ref, rms_norm_ref
from tolerance import assert_matches, poison_like
from triton_helpers import kernel_module, no_launch

KERNEL_MODULE = "simba_convert.ops.rms_norm.triton"
SHAPES = [(1, 1, 1), (3, 2, 7), (1, 3, 33), (3, 63, 130), (1, 100, 33), (5, 1000)]  # [..., d]
DEV = "cuda" if torch.cuda.is_available() else "cpu"
EPS = 1e-5
# (hidden dtype, residual dtype or None, weight dtype, residual_in_fp32): the model's cases (fp32 model; bf16
# model with an fp32 or a bf16 residual stream) and mixed ones the contract allows.
DTYPES = [
    (torch.float32, None, torch.float32, False),
    (torch.float32, torch.float32, torch.float32, False),
    (torch.float32, torch.float32, torch.float32, True),
    (torch.bfloat16, None, torch.bfloat16, True),
    (torch.bfloat16, torch.float32, torch.bfloat16, True),
    (torch.bfloat16, None, torch.bfloat16, False),
    (torch.bfloat16, torch.bfloat16, torch.bfloat16, False),
    (torch.float16, torch.float16, torch.float32, False),
    (torch.float32, torch.bfloat16, torch.bfloat16, False),
]


def _dt_id(c):
    short = {torch.float32: "f32", torch.bfloat16: "bf16", torch.float16: "f16", None: "none"}
    return "h{}-r{}-w{}{}".format(short[c[0]], short[c[1]], short[c[2]], "-res32" if c[3] else "")


@pytest.fixture(scope="module")
def kernels():
    """The Triton module: compiled on CUDA, interpreted on the CPU."""
    return kernel_module(KERNEL_MODULE)


def make_inputs(shape, h_dtype=torch.float32, r_dtype=torch.float32, w_dtype=torch.float32, device=DEV, seed=0):
    """hidden, residual (or None), weight; the residual larger than hidden, as deep in a residual stream."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(shape, generator=g).to(device=device, dtype=h_dtype)
    r = None if r_dtype is None else (torch.randn(shape, generator=g) * 4).to(device=device, dtype=r_dtype)
    w = (1 + 0.3 * torch.randn(shape[-1], generator=g)).to(device=device, dtype=w_dtype)
    return h, r, w


def reference(h, r, w, res32):
    return add_rms_norm_ref(h.cpu(), None if r is None else r.cpu(), w.cpu(), EPS, res32)


# ---- the reference is the model's arithmetic --------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_reference_is_model_rmsnorm_bitwise(dtype):
    norm = RMSNorm(33, EPS).to(dtype)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(33))
    x = torch.randn(3, 5, 33, dtype=dtype)
    with torch.no_grad():
        assert torch.equal(rms_norm_ref(x, norm.weight, EPS), norm(x))


def test_reference_residual_semantics():
    """The residual is hidden itself without a previous one, hidden cast to the residual's dtype plus it
    otherwise, and fp32 when residual_in_fp32; normed is in weight's dtype."""
    h, r, w = make_inputs((2, 3, 8), torch.bfloat16, torch.float32, torch.bfloat16, device="cpu")
    normed, res = add_rms_norm_ref(h, None, w, EPS, False)
    assert res is h and normed.dtype == torch.bfloat16
    _, res = add_rms_norm_ref(h, None, w, EPS, True)
    assert res.dtype == torch.float32 and torch.equal(res, h.float())
    normed, res = add_rms_norm_ref(h, r, w, EPS, False)
    assert res.dtype == torch.float32 and torch.equal(res, h.float() + r)
    assert torch.equal(normed, rms_norm_ref(h.float() + r, w, EPS))
    _, res = add_rms_norm_ref(h, r.bfloat16(), w, EPS, False)
    assert res.dtype == torch.bfloat16 and torch.equal(res, h + r.bfloat16())


# ---- kernel vs reference -----------------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtypes", DTYPES, ids=_dt_id)
def test_kernel_matches_reference(kernels, shape, dtypes):
    """The new residual is bit-for-bit the reference's (same roundings: one add in fp32, one cast); normed is
    within the contract for its dtype. Outputs are NaN-poisoned buffers the kernel must fill."""
    h_dt, r_dt, w_dt, res32 = dtypes
    h, r, w = make_inputs(shape, h_dt, r_dt, w_dt)
    normed_ref, res_ref = reference(h, r, w, res32)
    writes_res = r is not None or res_ref.dtype != h.dtype
    out = poison_like(torch.empty(shape, dtype=w_dt, device=DEV))
    res_out = poison_like(torch.empty(shape, dtype=res_ref.dtype, device=DEV)) if writes_res else None
    normed, res = kernels.add_rms_norm_triton(h, r, w, EPS, res32, out=out, residual_out=res_out)
    assert normed is out and normed.dtype == normed_ref.dtype
    assert res is (res_out if writes_res else h)
    assert res.dtype == res_ref.dtype and torch.equal(res.cpu(), res_ref)
    assert_matches(normed.float().cpu(), normed_ref.float(), w_dt)


def test_a_kernel_that_writes_nothing_is_caught(kernels, monkeypatch):
    """After a real call, a launch that writes nothing leaves both fresh outputs poisoned (conftest.py)."""
    h, r, w = make_inputs((3, 5, 33))
    ref_out, ref_res = reference(h, r, w, True)
    out, res = kernels.add_rms_norm_triton(h, r, w, EPS, True)
    assert_matches(out.cpu(), ref_out)
    assert_matches(res.cpu(), ref_res)
    stub = no_launch(monkeypatch, kernels, "_add_rms_norm_fwd_kernel")
    out, res = kernels.add_rms_norm_triton(h, r, w, EPS, True)
    assert stub.launches == 1 and torch.isnan(out).all() and torch.isnan(res).all()
    for got, ref in ((out, ref_out), (res, ref_res)):
        with pytest.raises(AssertionError, match="NaN"):
            assert_matches(got.cpu(), ref)


@pytest.mark.parametrize("layout", ["row-strided", "transposed"])
def test_kernel_reads_strided_rows(kernels, layout):
    """hidden as the first half of a wider tensor (rows not adjacent, read in place) or with d not the
    innermost axis (copied by the wrapper), residual contiguous."""
    g = torch.Generator().manual_seed(1)
    if layout == "row-strided":
        h = torch.randn(3, 10, 66, generator=g)[..., :33]
    else:
        h = torch.randn(3, 33, 10, generator=g).transpose(1, 2)
    h = h.to(DEV)
    _, r, w = make_inputs((3, 10, 33), seed=2)
    normed, res = kernels.add_rms_norm_triton(h, r, w, EPS, True)
    normed_ref, res_ref = reference(h, r, w, True)
    assert torch.equal(res.cpu(), res_ref)
    assert_matches(normed.cpu(), normed_ref)


def test_kernel_bad_inputs(kernels):
    h, r, w = make_inputs((2, 3, 8))
    with pytest.raises(ValueError, match="residual"):
        kernels.add_rms_norm_triton(h, r[:, :2], w, EPS, False)
    with pytest.raises(ValueError, match="weight"):
        kernels.add_rms_norm_triton(h, r, w[:7], EPS, False)
    with pytest.raises(ValueError, match="out"):
        kernels.add_rms_norm_triton(h, r, w, EPS, False, out=torch.empty(2, 3, 8, dtype=torch.bfloat16, device=DEV))
    normed, res = kernels.add_rms_norm_triton(h[:, :0], r[:, :0], w, EPS, False)
    assert normed.shape == res.shape == (2, 0, 8)


# ---- dispatch --------------------------------------------------------------------------------------

@pytest.fixture
def kernel_calls(kernels, monkeypatch):
    """Counts calls of the Triton entry point that the dispatcher looks up at call time."""
    calls = []
    real = kernels.add_rms_norm_triton

    def spy(*a, **kw):
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(kernels, "add_rms_norm_triton", spy)
    return calls


@pytest.mark.parametrize("backend", ["auto", "triton", "reference"])
def test_dispatch_choice(kernel_calls, backend):
    """auto: Triton on CUDA, the reference elsewhere (also under the interpreter); triton: the kernel."""
    h, r, w = make_inputs((2, 5, 33), torch.bfloat16, torch.float32, torch.bfloat16)
    normed, res = add_rms_norm(h, r, w, EPS, True, backend=backend)
    assert len(kernel_calls) == int(backend == "triton" or (backend == "auto" and DEV == "cuda"))
    normed_ref, res_ref = reference(h, r, w, True)
    assert torch.equal(res.cpu(), res_ref)
    assert_matches(normed.float().cpu(), normed_ref.float(), torch.bfloat16)


def test_dispatch_errors(monkeypatch):
    h, r, w = make_inputs((2, 3, 8), device="cpu")
    with pytest.raises(BackendError, match="unknown backend"):
        add_rms_norm(h, r, w, EPS, False, backend="fast")
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # interpret_mode() reads the variable on each call
    with pytest.raises(BackendError, match="triton"):
        add_rms_norm(h, r, w, EPS, False, backend="triton")


def test_rows_wider_than_one_block_run_the_reference(kernels, kernel_calls, monkeypatch):
    monkeypatch.setattr(kernels, "MAX_D", 16)
    h, r, w = make_inputs((2, 3, 17))
    normed, res = add_rms_norm(h, r, w, EPS, False, backend="triton")
    assert kernel_calls == []
    normed_ref, res_ref = reference(h, r, w, False)
    assert torch.equal(normed.cpu(), normed_ref) and torch.equal(res.cpu(), res_ref)
    add_rms_norm(h[..., :16], r[..., :16], w[:16], EPS, False, backend="triton")
    assert kernel_calls == [1]


@pytest.mark.parametrize("which", ["hidden", "residual", "weight"])
def test_grad_falls_back_to_reference(kernel_calls, which):
    """With an input requiring grad the Triton backend runs the reference, and gradients reach it."""
    inputs = dict(zip(("hidden", "residual", "weight"), make_inputs((2, 7, 33))))
    inputs[which] = inputs[which].detach().clone().requires_grad_()
    normed, res = add_rms_norm(**inputs, eps=EPS, residual_in_fp32=True, backend="triton")
    assert kernel_calls == [] and normed.requires_grad
    dy, dr = torch.randn_like(normed), torch.randn_like(res)
    (g,) = torch.autograd.grad((normed * dy).sum() + (res * dr).sum(), inputs[which])
    ref_in = {k: v.detach().clone().requires_grad_(k == which) for k, v in inputs.items()}
    n_ref, r_ref = add_rms_norm_ref(**ref_in, eps=EPS, residual_in_fp32=True)
    (g_ref,) = torch.autograd.grad((n_ref * dy).sum() + (r_ref * dr).sum(), ref_in[which])
    assert_matches(g, g_ref)
    with torch.no_grad():
        add_rms_norm(**inputs, eps=EPS, residual_in_fp32=True, backend="triton")
    assert kernel_calls == [1]


# ---- GPU ----------------------------------------------------------------------------------------------

@pytest.mark.gpu
def test_kernel_realistic_shape_gpu(kernels):
    """A bf16 1.4B-style residual step at B=2, L=2048, d=4096 with an fp32 residual stream."""
    h, r, w = make_inputs((2, 2048, 4096), torch.bfloat16, torch.float32, torch.bfloat16, device="cuda")
    out = poison_like(torch.empty(h.shape, dtype=torch.bfloat16, device="cuda"))
    res_out = poison_like(torch.empty(h.shape, dtype=torch.float32, device="cuda"))
    normed, res = kernels.add_rms_norm_triton(h, r, w, EPS, True, out=out, residual_out=res_out)
    normed_ref, res_ref = reference(h, r, w, True)
    assert torch.equal(res.cpu(), res_ref)
    assert_matches(normed.float().cpu(), normed_ref.float(), torch.bfloat16)


# --- Mamba-2's gated RMSNorm -------------------------------------------------------------------------------
# (rows shape, D, group size): one group, several groups, odd sizes, one row.
GATED_SHAPES = [((1,), 8, 8), ((3, 7), 12, 4), ((2, 63), 48, 16), ((1, 100), 33, 11), ((5,), 40, 40)]


def gated_inputs(lead, D, dtype, seed=0, device=DEV):
    """y, z (z a column slice of a wider buffer, as Mamba-2's z is of in_proj's output), weight."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(*lead, D, generator=g).to(device, dtype)
    z = torch.randn(*lead, 2 * D + 3, generator=g).to(device, dtype)[..., 3: D + 3]
    w = (1 + 0.2 * torch.randn(D, generator=g)).to(device, dtype)
    return y, z, w


@pytest.mark.parametrize("shape", GATED_SHAPES, ids=lambda s: f"{s[0]}-{s[1]}-g{s[2]}")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("before", [False, True], ids=["gate-then-norm", "norm-then-gate"])
def test_gated_kernel_matches_reference(kernels, shape, dtype, before):
    lead, D, gs = shape
    y, z, w = gated_inputs(lead, D, dtype)
    out = kernels.gated_rms_norm_triton(y, z, w, gs, EPS, before)
    ref = gated_rms_norm_ref(y.float(), z.float(), w.float(), gs, EPS, before)
    assert out.dtype == dtype and out.shape == y.shape
    assert_matches(out, ref, dtype)


def test_gated_reference_groups_and_gate_order_decide_the_output():
    y, z, w = gated_inputs((4,), 12, torch.float64, device="cpu")
    eps = 1e-12  # so that each group's RMS is 1 to the test's precision
    one, three = gated_rms_norm_ref(y, z, w, 12, eps, False), gated_rms_norm_ref(y, z, w, 4, eps, False)
    # per group of 4: the group's own RMS of y·silu(z) is 1 before the weight
    g = (three / w).unflatten(-1, (3, 4))
    assert torch.allclose(g.pow(2).mean(-1), torch.ones(4, 3, dtype=torch.float64), atol=1e-5)  # fp32 inside
    assert not torch.allclose(one, three)
    groups = y.unflatten(-1, (3, 4))
    normed_then_gated = (groups * torch.rsqrt(groups.pow(2).mean(-1, keepdim=True) + EPS)).flatten(-2) * w \
        * torch.nn.functional.silu(z)
    assert torch.allclose(gated_rms_norm_ref(y, z, w, 4, EPS, True), normed_then_gated, rtol=1e-6, atol=0)  # fp32 inside


def test_gated_kernel_errors(kernels):
    from simba_convert.errors import ShapeError

    y, z, w = gated_inputs((2,), 12, torch.float32)
    with pytest.raises(ShapeError, match="groups of 5"):
        kernels.gated_rms_norm_triton(y, z, w, 5, EPS, False)
    with pytest.raises(ShapeError, match="must be"):
        kernels.gated_rms_norm_triton(y, z[..., :6], w, 4, EPS, False)


@pytest.mark.parametrize("backend", ["auto", "triton", "reference"])
def test_gated_dispatch(kernels, monkeypatch, backend):
    calls = []
    real = kernels.gated_rms_norm_triton
    monkeypatch.setattr(kernels, "gated_rms_norm_triton", lambda *a: calls.append(1) or real(*a))
    y, z, w = gated_inputs((3,), 8, torch.float32)
    out = gated_rms_norm(y, z, w, 4, EPS, False, backend=backend)
    want = backend == "triton" or (backend == "auto" and DEV == "cuda")
    assert calls == ([1] if want else [])
    assert_matches(out, gated_rms_norm_ref(y, z, w, 4, EPS, False))
