"""One decoding step: the fused Triton conv_step / ssm_step against their references, the references against
MambaMixer.step (bit for bit), strided inputs, NaN-poisoned outputs, untouched input states, the dispatchers.

Triton kernels run compiled on CUDA and interpreted on the CPU (TRITON_INTERPRET=1, set by conftest.py; tiny shapes).
"""

from __future__ import annotations


import pytest
import torch

from simba_convert.errors import BackendError
from simba_convert.model.config import MambaConfig
from simba_convert.model.mamba import MambaMixer
from simba_convert.ops.step import conv_step, conv_step_ref, ssm_step, ssm_step_ref
from tolerance import LOWP_REL_RMS, assert_matches, poison_like, rel_rms
from triton_helpers import kernel_module, no_launch

KERNEL_MODULE = "simba_convert.ops.step.triton"
DEV = "cuda" if torch.cuda.is_available() else "cpu"
BS, DS, NS, KS = (1, 3), (1, 7, 33, 130), (1, 3, 16), (2, 4)


@pytest.fixture(scope="module")
def kernels():
    """The Triton module: compiled on CUDA, interpreted on the CPU."""
    return kernel_module(KERNEL_MODULE)


def conv_inputs(bsz, D, K, *, bias=True, dtype=torch.float32, state_dtype=None, device=DEV, seed=0):
    """x as the first half of an in_proj-like [B, 2D] output (strides (2D, 1))."""
    g = torch.Generator().manual_seed(seed)
    # Slice after moving: a copy to another device is contiguous, and the kernel must see the strided view.
    x = torch.randn(bsz, 2 * D, generator=g).to(device, dtype)[:, :D]
    s = torch.randn(bsz, D, K - 1, generator=g)
    w = torch.randn(D, K, generator=g) * 0.5
    b = torch.randn(D, generator=g) if bias else None
    return (x, s.to(device, state_dtype or dtype), w.to(device), None if b is None else b.to(device))


def ssm_inputs(bsz, D, N, *, dtype=torch.float32, R=5, device=DEV, seed=0):
    """u contiguous; dt a transposed view; z the second half of a [B, 2D] tensor; Bm, Cm split views of an
    x_proj-like [B, R+2N] output; A = -exp(A_log) fp32; state fp32."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(bsz, D, generator=g)
    dt_t = torch.randn(D, bsz, generator=g) - 1.0
    xz = torch.randn(bsz, 2 * D, generator=g)
    xp = torch.randn(bsz, R + 2 * N, generator=g)
    A = -torch.exp(torch.rand(D, N, generator=g) * 2.0)
    Dk = torch.randn(D, generator=g)
    dt_bias = torch.randn(D, generator=g) * 0.5
    h0 = torch.randn(bsz, D, N, generator=g)
    low = dict(device=device, dtype=dtype)
    xp = xp.to(**low)
    return dict(u=u.to(**low), dt=dt_t.to(**low).t(), A=A.to(device), Bm=xp[:, R:R + N], Cm=xp[:, R + N:],
                D=Dk.to(device), z=xz.to(**low)[:, D:], dt_bias=dt_bias.to(device), ssm_state=h0.to(device))


def cpu_f32(inputs: dict) -> dict:
    return {k: v.float().cpu() for k, v in inputs.items()}


# ---- conv_step: kernel vs reference ---------------------------------------------------------------------

@pytest.mark.parametrize("K", KS)
@pytest.mark.parametrize("D", DS)
@pytest.mark.parametrize("bsz", BS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_conv_kernel_fp32(kernels, bsz, D, K, bias):
    x, s, w, b = conv_inputs(bsz, D, K, bias=bias, seed=D + K)
    assert D == 1 or x.stride() == (2 * D, 1)
    s_before = s.clone()
    out, state_out = poison_like(torch.empty(bsz, D, device=DEV)), poison_like(s)
    u, ns = kernels.conv_step_triton(x, s, w, b, out=out, state_out=state_out)
    assert u is out and ns is state_out
    u_ref, ns_ref = conv_step_ref(x.cpu(), s.cpu(), w.cpu(), None if b is None else b.cpu())
    assert_matches(u.cpu(), u_ref)
    assert torch.equal(ns.cpu(), ns_ref)  # a pure shift of the window: exact
    assert torch.equal(s, s_before)


@pytest.mark.parametrize("state_dtype", [torch.bfloat16, torch.float32], ids=["state_bf16", "state_f32"])
def test_conv_kernel_bf16(kernels, state_dtype):
    """bf16 x; the state in the model's dtype, or fp32 (then cast to x's dtype, rounding as torch does)."""
    for bsz, D, K in ((1, 130, 4), (3, 33, 2)):
        x, s, w, b = conv_inputs(bsz, D, K, dtype=torch.bfloat16, state_dtype=state_dtype)
        s_before = s.clone()
        u, ns = kernels.conv_step_triton(x, s, w, b, out=poison_like(torch.empty(bsz, D, device=DEV, dtype=x.dtype)))
        assert u.dtype == ns.dtype == torch.bfloat16
        u_ref, ns_ref = conv_step_ref(x.cpu(), s.cpu(), w.cpu(), b.cpu())
        assert_matches(u.float().cpu(), u_ref.float(), torch.bfloat16)
        # the same bf16 values fed to the fp32 reference: the kernel's error is its own rounding only
        u32, _ = conv_step_ref(x.float().cpu(), s.to(x.dtype).float().cpu(), w.cpu(), b.cpu())
        assert rel_rms(u.float().cpu(), u32) <= LOWP_REL_RMS
        assert torch.equal(ns.cpu(), ns_ref)
        assert torch.equal(s, s_before)


def test_conv_kernel_no_activation_and_errors(kernels):
    x, s, w, b = conv_inputs(3, 7, 4)
    u, _ = kernels.conv_step_triton(x, s, w, b, None)
    assert_matches(u.cpu(), conv_step_ref(x.cpu(), s.cpu(), w.cpu(), b.cpu(), None)[0])
    assert (u < 0).any()  # without SiLU negative outputs survive: the flag reached the kernel
    with pytest.raises(ValueError, match="overlap"):
        kernels.conv_step_triton(x, s, w, b, state_out=s)
    with pytest.raises(ValueError, match="conv_state"):
        kernels.conv_step_triton(x, s[:, :, :2], w, b)
    with pytest.raises(ValueError, match="activation"):
        kernels.conv_step_triton(x, s, w, b, "relu")


def test_conv_kernel_writes_only_its_views(kernels):
    """out / state_out as strided views into larger NaN buffers: the elements around them stay NaN."""
    x, s, w, b = conv_inputs(3, 33, 4)
    big_u = poison_like(torch.empty(3, 80, device=DEV))
    big_s = poison_like(torch.empty(3, 33, 5, device=DEV))
    kernels.conv_step_triton(x, s, w, b, out=big_u[:, 5:38], state_out=big_s[:, :, 1:4])
    u_ref, ns_ref = conv_step_ref(x.cpu(), s.cpu(), w.cpu(), b.cpu())
    assert_matches(big_u[:, 5:38].cpu(), u_ref)
    assert torch.equal(big_s[:, :, 1:4].cpu(), ns_ref)
    assert torch.isnan(big_u[:, :5]).all() and torch.isnan(big_u[:, 38:]).all()
    assert torch.isnan(big_s[:, :, 0]).all() and torch.isnan(big_s[:, :, 4]).all()


def test_a_kernel_that_writes_nothing_is_caught(kernels, monkeypatch):
    """After real calls, launches that write nothing leave every fresh output poisoned (conftest.py)."""
    x, s, w, b = conv_inputs(3, 33, 4)
    inp = ssm_inputs(3, 33, 16)
    conv_ref = conv_step_ref(x.cpu(), s.cpu(), w.cpu(), b.cpu())
    ssm_ref = ssm_step_ref(**cpu_f32(inp))
    refs = (*conv_ref, *ssm_ref)
    for got, ref in zip((*kernels.conv_step_triton(x, s, w, b), *kernels.ssm_step_triton(**inp)), refs):
        assert_matches(got.cpu(), ref)
    stub = no_launch(monkeypatch, kernels, "_conv_step_kernel", "_ssm_step_kernel")
    outs = (*kernels.conv_step_triton(x, s, w, b), *kernels.ssm_step_triton(**inp))
    assert stub.launches == 2
    for got, ref in zip(outs, refs):
        assert torch.isnan(got).all()
        with pytest.raises(AssertionError, match="NaN"):
            assert_matches(got.cpu(), ref)


# ---- ssm_step: kernel vs reference ----------------------------------------------------------------------

@pytest.mark.parametrize("N", NS)
@pytest.mark.parametrize("D", DS)
@pytest.mark.parametrize("bsz", BS)
def test_ssm_kernel_fp32(kernels, bsz, D, N):
    inp = ssm_inputs(bsz, D, N, seed=D * N)
    assert N == 1 or inp["Bm"].stride() == (5 + 2 * N, 1)
    before = inp["ssm_state"].clone()
    out = poison_like(torch.empty(bsz, D, device=DEV))
    state_out = poison_like(inp["ssm_state"])
    y, h = kernels.ssm_step_triton(**inp, out=out, state_out=state_out)
    assert y is out and h is state_out
    y_ref, h_ref = ssm_step_ref(**cpu_f32(inp))
    assert_matches(y.cpu(), y_ref)
    assert_matches(h.cpu(), h_ref)
    assert torch.equal(inp["ssm_state"], before)


def test_ssm_kernel_bf16(kernels):
    for bsz, D, N in ((1, 130, 16), (3, 33, 3)):
        inp = ssm_inputs(bsz, D, N, dtype=torch.bfloat16)
        before = inp["ssm_state"].clone()
        y, h = kernels.ssm_step_triton(**inp, out=poison_like(torch.empty(bsz, D, device=DEV, dtype=torch.bfloat16)))
        assert y.dtype == torch.bfloat16 and h.dtype == torch.float32
        y_ref, h_ref = ssm_step_ref(**{k: v.cpu() for k, v in inp.items()})
        assert_matches(y.float().cpu(), y_ref.float(), torch.bfloat16)
        y32, h32 = ssm_step_ref(**cpu_f32(inp))
        assert rel_rms(y.float().cpu(), y32) <= LOWP_REL_RMS
        assert_matches(h.cpu(), h32)  # the state is fp32 arithmetic on the same (bf16) values
        assert torch.equal(inp["ssm_state"], before)


# delta_act's log1p form (ops/_triton_common.py) divides 0/0 where exp(x) underflows against 1, then discards that
# branch by tl.where; the interpreter's numpy reports the discarded NaN.
@pytest.mark.filterwarnings("ignore:invalid value encountered in divide:RuntimeWarning")
def test_ssm_kernel_softplus_range(kernels):
    """dt + dt_bias across softplus's regimes: far negative, around 0, near and past the threshold 20."""
    inp = ssm_inputs(2, 64, 16)
    grid = torch.linspace(-30.0, 40.0, 64, device=DEV)
    inp["dt"] = torch.stack([grid, grid.flip(0)])
    inp["dt_bias"] = torch.zeros(64, device=DEV)
    inp["A"] = inp["A"] * 0.01  # keep exp(delta·A) away from 0 so the old state still counts at delta = 40
    y, h = kernels.ssm_step_triton(**inp)
    y_ref, h_ref = ssm_step_ref(**cpu_f32(inp))
    assert_matches(y.cpu(), y_ref)
    assert_matches(h.cpu(), h_ref)


def test_ssm_kernel_in_place_and_views(kernels):
    """state_out = ssm_state updates in place; y into a strided view of a NaN buffer leaves the rest NaN."""
    inp = ssm_inputs(3, 33, 16)
    y_ref, h_ref = ssm_step_ref(**cpu_f32(inp))
    big = poison_like(torch.empty(3, 2, 40, device=DEV))
    state = inp["ssm_state"]
    y, h = kernels.ssm_step_triton(**inp, out=big[:, 1, 3:36], state_out=state)
    assert h is state
    assert_matches(big[:, 1, 3:36].cpu(), y_ref)
    assert_matches(state.cpu(), h_ref)
    assert torch.isnan(big[:, 0]).all() and torch.isnan(big[:, 1, :3]).all() and torch.isnan(big[:, 1, 36:]).all()
    buf = torch.randn(state.numel() + 1, device=DEV)
    shifted = (buf[:-1].view(state.shape), buf[1:].view(state.shape))  # overlapping, not the same tensor
    with pytest.raises(ValueError, match="overlap"):
        kernels.ssm_step_triton(**{**inp, "ssm_state": shifted[0]}, state_out=shifted[1])
    with pytest.raises(ValueError, match="Bm"):
        kernels.ssm_step_triton(**{**inp, "Bm": inp["Bm"][:, :3]})


# ---- the references are MambaMixer.step -------------------------------------------------------------------

def tiny_mixer(dtype, conv_bias=True):
    cfg = MambaConfig(d_model=12, n_layer=1, vocab_size=32, d_state=5, d_conv=4, conv_bias=conv_bias)
    m = MambaMixer(cfg)
    m.backend = "reference"
    with torch.no_grad():  # move the parameters off their initial values, which hide mistakes (D = 1, A = -n)
        m.A_log.add_(torch.randn_like(m.A_log) * 0.3)
        m.D.normal_()
        m.dt_proj.bias.normal_(std=0.5)
        if m.conv1d.bias is not None:
            m.conv1d.bias.normal_()
    return m.to(dtype)


def step_by_ops(m, h, conv_state, ssm_state, *, backend=None):
    """The layer's step as the fused path will run it: in_proj, conv_step, x_proj/dt_proj, ssm_step, out_proj."""
    x, z = m.in_proj(h).chunk(2, dim=-1)
    kw = {} if backend is None else dict(backend=backend)
    conv = conv_step_ref if backend is None else conv_step
    ssm = ssm_step_ref if backend is None else ssm_step
    u, cs = conv(x, conv_state, m.conv1d.weight.squeeze(1), m.conv1d.bias, "silu", **kw)
    dt, Bm, Cm = m._ssm_inputs(u)
    y, hs = ssm(u, dt, m.A(), Bm, Cm, m.D.float(), z, m.dt_proj.bias.float(), ssm_state, **kw)
    return m.out_proj(y), cs, hs


@pytest.mark.parametrize("conv_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@torch.no_grad()
def test_references_are_mixer_step(dtype, conv_bias):
    m = tiny_mixer(dtype, conv_bias)
    D, N, K = m.d_inner, m.d_state, m.d_conv
    for bsz in (1, 3):
        h = torch.randn(bsz, 12).to(dtype)
        cs, ss = torch.randn(bsz, D, K - 1).to(dtype), torch.randn(bsz, D, N)
        cs0, ss0 = cs.clone(), ss.clone()
        want = m.step(h, cs, ss)
        got = step_by_ops(m, h, cs, ss)
        for w, g in zip(want, got):
            assert w.dtype == g.dtype and torch.equal(w, g)
        assert torch.equal(cs, cs0) and torch.equal(ss, ss0)


@torch.no_grad()
def test_fused_step_matches_mixer_step(kernels):
    """The whole layer step with both kernels, against MambaMixer.step, over a few tokens (states carried)."""
    m = tiny_mixer(torch.float32).to(DEV)
    cs, ss = torch.randn(2, m.d_inner, m.d_conv - 1, device=DEV), torch.randn(2, m.d_inner, m.d_state, device=DEV)
    cs2, ss2 = cs, ss
    for _ in range(3):
        h = torch.randn(2, 12, device=DEV)
        out, cs, ss = m.step(h, cs, ss)
        out2, cs2, ss2 = step_by_ops(m, h, cs2, ss2, backend="triton")
        assert_matches(out2.cpu(), out.cpu())
        assert_matches(cs2.cpu(), cs.cpu())
        assert_matches(ss2.cpu(), ss.cpu())


# ---- dispatch --------------------------------------------------------------------------------------------

@pytest.fixture
def kernel_calls(kernels, monkeypatch):
    """Counts calls of the Triton entry points that the dispatchers import at call time."""
    calls = []
    for name in ("conv_step_triton", "ssm_step_triton"):
        real = getattr(kernels, name)

        def spy(*a, _real=real, _name=name, **kw):
            calls.append(_name)
            return _real(*a, **kw)

        monkeypatch.setattr(kernels, name, spy)
    return calls


@pytest.mark.parametrize("backend", ["auto", "triton", "reference"])
def test_dispatch_choice(kernel_calls, backend):
    """auto: Triton on CUDA, the reference elsewhere (also under the interpreter); triton: the kernels."""
    x, s, w, b = conv_inputs(2, 7, 4)
    u, ns = conv_step(x, s, w, b, backend=backend)
    inp = ssm_inputs(2, 7, 3)
    y, h = ssm_step(**inp, backend=backend)
    expect_kernel = backend == "triton" or (backend == "auto" and DEV == "cuda")
    assert kernel_calls == (["conv_step_triton", "ssm_step_triton"] if expect_kernel else [])
    assert_matches(u.cpu(), conv_step_ref(x.cpu(), s.cpu(), w.cpu(), b.cpu())[0])
    assert_matches(y.cpu(), ssm_step_ref(**cpu_f32(inp))[0])


def test_dispatch_errors(monkeypatch):
    x, s, w, b = conv_inputs(1, 5, 4, device="cpu")
    inp = ssm_inputs(1, 5, 3, device="cpu")
    with pytest.raises(BackendError, match="unknown backend"):
        conv_step(x, s, w, b, backend="cuda-graphs")
    with pytest.raises(BackendError, match="unknown backend"):
        ssm_step(**inp, backend="cuda-graphs")
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # interpret_mode() reads the variable on each call
    with pytest.raises(BackendError, match="conv_step"):
        conv_step(x, s, w, b, backend="triton")
    with pytest.raises(BackendError, match="ssm_step"):
        ssm_step(**inp, backend="triton")


def test_grad_falls_back_to_reference(kernel_calls):
    """With an input requiring grad the Triton backend runs the reference (gradients flow); without, the kernel."""
    x, s, w, b = conv_inputs(2, 7, 4)
    w = w.clone().requires_grad_()
    u, _ = conv_step(x, s, w, b, backend="triton")
    inp = ssm_inputs(2, 7, 3)
    inp["u"] = inp["u"].clone().requires_grad_()
    y, _ = ssm_step(**inp, backend="triton")
    assert kernel_calls == [] and u.requires_grad and y.requires_grad
    (u.sum() + y.sum()).backward()
    assert w.grad is not None and inp["u"].grad is not None
    with torch.no_grad():
        conv_step(x, s, w, b, backend="triton")
        ssm_step(**inp, backend="triton")
    assert kernel_calls == ["conv_step_triton", "ssm_step_triton"]


# ---- GPU ---------------------------------------------------------------------------------------------------

@pytest.mark.gpu
def test_kernels_realistic_shape_gpu(kernels):
    """The 1.4B layer's step: B=4, D=4096, N=16, K=4, bf16, inputs strided as in the model."""
    x, s, w, b = conv_inputs(4, 4096, 4, dtype=torch.bfloat16, device="cuda")
    u, ns = kernels.conv_step_triton(x, s, w, b, out=poison_like(torch.empty(4, 4096, device="cuda",
                                                                              dtype=torch.bfloat16)))
    u_ref, ns_ref = conv_step_ref(x.float().cpu(), s.float().cpu(), w.cpu(), b.cpu())
    assert_matches(u.float().cpu(), u_ref, torch.bfloat16)
    assert torch.equal(ns.float().cpu(), ns_ref)
    inp = ssm_inputs(4, 4096, 16, dtype=torch.bfloat16, R=256, device="cuda")
    y, h = kernels.ssm_step_triton(**inp, out=poison_like(torch.empty(4, 4096, device="cuda", dtype=torch.bfloat16)),
                                   state_out=poison_like(inp["ssm_state"]))
    y_ref, h_ref = ssm_step_ref(**cpu_f32(inp))
    assert_matches(y.float().cpu(), y_ref, torch.bfloat16)
    assert_matches(h.cpu(), h_ref)
