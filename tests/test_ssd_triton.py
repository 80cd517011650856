"""SSD (Mamba-2) chunked scan: the Triton kernels (forward and backward) against a float64 step-by-step recurrence.

The oracle is the recurrence itself, written here one token at a time in float64, and its gradients are
torch.autograd's through that loop. On a CPU box the kernels run under TRITON_INTERPRET=1 (set here before triton
is imported, because `triton.jit` picks the interpreter when a kernel is defined), so every shape is tiny.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from simba_convert.errors import ConfigError, ShapeError  # noqa: E402
from tests.tolerance import assert_matches, rel_rms  # noqa: E402
from tests.triton_helpers import kernel_module, no_launch  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"
NAMES = ("x", "dt", "A", "B", "C", "D", "dt_bias", "initial_state")
LOWP = {"x", "dt", "B", "C"}  # activations; A, D, dt_bias and the state stay fp32, as the model passes them


@pytest.fixture(scope="module")
def st():
    return kernel_module("simba_convert.ops.ssd.triton")


def brute_force(x, dt, A, B, C, D=None, dt_bias=None, initial_state=None, *, softplus=False):
    """h_t = exp(delta_t A) h_{t-1} + delta_t x_t ⊗ B_t, y_t = h_t · C_t + D x_t, one token at a time in float64.
    Returns y [B, L, H, P] and the final state [B, H, P, N]."""
    x, dt, A, B, C = (t.double() for t in (x, dt, A, B, C))
    bsz, L, H, P = x.shape
    N = B.shape[-1]
    delta = dt + dt_bias.double() if dt_bias is not None else dt
    delta = F.softplus(delta) if softplus else delta
    Bh = B.repeat_interleave(H // B.shape[2], dim=2)  # head h reads group h // (H // G)
    Ch = C.repeat_interleave(H // C.shape[2], dim=2)
    h = initial_state.double() if initial_state is not None else x.new_zeros(bsz, H, P, N)
    ys = []
    for t in range(L):
        d = delta[:, t, :, None, None]
        h = torch.exp(d * A.double()[:, None, None]) * h + d * x[:, t, :, :, None] * Bh[:, t, :, None, :]
        ys.append((h * Ch[:, t, :, None, :]).sum(-1))
    y = torch.stack(ys, 1) if ys else x.new_zeros(bsz, 0, H, P)
    if D is not None:
        y = y + D.double()[:, None] * x
    return y, h


def make_inputs(bsz, L, H, G, P, N, *, D=True, bias=True, h0=False, softplus=True, device=DEV):
    """Random float64 inputs; delta = (softplus of) dt + dt_bias is positive, A is negative and fp32-representable."""
    g = dict(device=device, dtype=torch.float64)
    if softplus:
        dt = torch.randn(bsz, L, H, **g) * 0.5 - 1.0
        dt_bias = torch.randn(H, **g) * 0.5
    else:
        dt = torch.rand(bsz, L, H, **g) * 0.3 + 0.02
        dt_bias = torch.rand(H, **g) * 0.1
    return {
        "x": torch.randn(bsz, L, H, P, **g),
        "dt": dt,
        "A": -(torch.rand(H, device=device) * 3 + 0.1).double(),
        "B": torch.randn(bsz, L, G, N, **g),
        "C": torch.randn(bsz, L, G, N, **g),
        "D": torch.randn(H, **g) if D else None,
        "dt_bias": dt_bias if bias else None,
        "initial_state": torch.randn(bsz, H, P, N, **g) if h0 else None,
    }


def cast(inputs, dtype):
    """Activations in `dtype`; A, D, dt_bias and the initial state in fp32."""
    return {k: (v.to(dtype if k in LOWP else torch.float32) if v is not None else None) for k, v in inputs.items()}


def exact(inputs):
    """The (rounded) kernel inputs in float64, so that the oracle sees exactly what the kernel sees."""
    return {k: (v.double() if v is not None else None) for k, v in inputs.items()}


def run(fn, inputs, dy, dh, *, with_final=True):
    """Call fn(x, dt, A, B, C, D, dt_bias, initial_state, with_final) and back-propagate Σ y·dy (+ Σ final·dh)."""
    xs = {k: (v.detach().clone().requires_grad_() if v is not None else None) for k, v in inputs.items()}
    out = fn(*(xs[k] for k in NAMES), with_final)
    y, h = out if with_final else (out, None)
    loss = (y.double() * dy).sum() if dy is not None else 0.0
    if dh is not None:
        loss = loss + (h.double() * dh).sum()
    loss.backward()
    # An input that reaches no used output gets no .grad from the oracle; the kernel returns zeros for it.
    grads = {k: (v.grad if v.grad is not None else torch.zeros_like(v)) for k, v in xs.items() if v is not None}
    return y.detach(), (h.detach() if h is not None else None), grads


def oracle(softplus):
    def fn(x, dt, A, B, C, D, dt_bias, h0, with_final):
        y, h = brute_force(x, dt, A, B, C, D, dt_bias, h0, softplus=softplus)
        return (y, h) if with_final else y

    return fn


def kernel(st, softplus, chunk):
    def fn(x, dt, A, B, C, D, dt_bias, h0, with_final):
        return st.ssd_scan_triton(x, dt, A, B, C, D=D, dt_bias=dt_bias, dt_softplus=softplus, initial_state=h0,
                                  return_final_state=with_final, chunk_size=chunk)

    return fn


CASES = [
    # bsz, L, H, G, P, N, chunk, D, dt_bias, softplus, initial_state
    (1, 1, 3, 1, 5, 7, 16, True, True, True, True),  # one token
    (2, 63, 3, 3, 16, 16, 16, False, False, False, False),  # G = H, partial last chunk, nothing optional
    (1, 100, 6, 3, 5, 7, 32, True, True, True, True),  # G between 1 and H, P and N not powers of two
    (1, 100, 6, 1, 16, 16, 16, True, False, True, False),  # seven chunks of state passing
    (1, 64, 3, 1, 5, 16, 32, False, True, False, True),  # whole chunks only, bias without softplus
]


def _case_id(c):
    return "B{}-L{}-H{}-G{}-P{}-N{}-T{}".format(*c[:7])


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_fp32_outputs_and_gradients_match_float64_recurrence(st, case):
    bsz, L, H, G, P, N, chunk, D, bias, sp, h0 = case
    inp = cast(make_inputs(bsz, L, H, G, P, N, D=D, bias=bias, h0=h0, softplus=sp), torch.float32)
    dy = torch.randn(bsz, L, H, P, device=DEV, dtype=torch.float64)
    dh = torch.randn(bsz, H, P, N, device=DEV, dtype=torch.float64)
    y_ref, h_ref, g_ref = run(oracle(sp), exact(inp), dy, dh)
    y, h, g = run(kernel(st, sp, chunk), inp, dy, dh)
    assert y.dtype == torch.float32 and h.dtype == torch.float32
    assert_matches(y, y_ref, torch.float32)
    assert_matches(h, h_ref, torch.float32)
    assert set(g) == set(g_ref) == {k for k, v in inp.items() if v is not None}
    for k in g_ref:
        assert g[k].dtype == inp[k].dtype, k
        assert_matches(g[k], g_ref[k], torch.float32)


@pytest.mark.parametrize("use", ["y", "final"])
def test_gradients_with_one_output_used(st, use):
    """Only y (no final state asked for), or only the final state (y unused: autograd passes no dy)."""
    inp = cast(make_inputs(2, 40, 3, 1, 5, 7, h0=True), torch.float32)
    with_final = use == "final"
    dy = None if with_final else torch.randn(2, 40, 3, 5, device=DEV, dtype=torch.float64)
    dh = torch.randn(2, 3, 5, 7, device=DEV, dtype=torch.float64) if with_final else None
    _, _, g_ref = run(oracle(True), exact(inp), dy, dh, with_final=with_final)
    _, _, g = run(kernel(st, True, 16), inp, dy, dh, with_final=with_final)
    for k in g_ref:
        assert_matches(g[k], g_ref[k], torch.float32)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs(st, dtype):
    """bf16/fp16 activations: outputs in that dtype within the relative-RMS contract; the fp32 outputs (final
    state; dA, dD, d dt_bias, d initial_state) come from exact inputs in fp32 arithmetic, so they meet fp32's."""
    inp = cast(make_inputs(1, 45, 3, 3, 16, 7, h0=True), dtype)
    dy = torch.randn(1, 45, 3, 16, device=DEV).to(dtype).double()
    dh = torch.randn(1, 3, 16, 7, device=DEV, dtype=torch.float64)
    y_ref, h_ref, g_ref = run(oracle(True), exact(inp), dy, dh)
    y, h, g = run(kernel(st, True, 16), inp, dy, dh)
    assert y.dtype == dtype
    assert rel_rms(y, y_ref) <= 5e-3
    assert_matches(y, y_ref, dtype)
    assert_matches(h, h_ref, torch.float32)
    for k in g_ref:
        assert g[k].dtype == inp[k].dtype, k
        assert_matches(g[k], g_ref[k], inp[k].dtype)


def test_strided_views_as_the_mixer_passes_them(st):
    """x, B and C as views into one packed in_proj-like output [B, L, H·P + 2·G·N], dt a view of a wider tensor,
    a time-major dy, then a time-major x: the kernels read every tensor through its strides, and the gradients
    land in the packed leaves."""
    bsz, L, H, G, P, N = 2, 37, 4, 2, 5, 7
    HP, GN = H * P, G * N
    f32 = cast(make_inputs(bsz, L, H, G, P, N, h0=True), torch.float32)
    dy_time_major = torch.randn(L, bsz, H, P, device=DEV).transpose(0, 1)
    dh = torch.randn(bsz, H, P, N, device=DEV, dtype=torch.float64)
    y_ref, h_ref, g_ref = run(oracle(True), exact(f32), dy_time_major.double(), dh)
    packed = torch.cat([f32["x"].flatten(2), f32["B"].flatten(2), f32["C"].flatten(2)], dim=-1).requires_grad_()
    wide_dt = torch.cat([f32["dt"], torch.randn_like(f32["dt"])], dim=-1).requires_grad_()
    params = {k: f32[k].clone().requires_grad_() for k in ("A", "D", "dt_bias", "initial_state")}
    x = packed[..., :HP].unflatten(-1, (H, P))
    B = packed[..., HP: HP + GN].unflatten(-1, (G, N))
    C = packed[..., HP + GN:].unflatten(-1, (G, N))
    dt = wide_dt[..., :H]
    assert not any(t.is_contiguous() for t in (x, B, C, dt))
    y, h = st.ssd_scan_triton(x, dt, params["A"], B, C, D=params["D"], dt_bias=params["dt_bias"], dt_softplus=True,
                              initial_state=params["initial_state"], return_final_state=True, chunk_size=16)
    dy_layouts = []
    y.register_hook(lambda g: dy_layouts.append(g.is_contiguous()))
    ((y * dy_time_major).sum() + (h.double() * dh).sum()).backward()
    assert dy_layouts == [False]
    assert_matches(y.detach(), y_ref, torch.float32)
    assert_matches(h.detach(), h_ref, torch.float32)
    got = {
        "x": packed.grad[..., :HP].unflatten(-1, (H, P)),
        "B": packed.grad[..., HP: HP + GN].unflatten(-1, (G, N)),
        "C": packed.grad[..., HP + GN:].unflatten(-1, (G, N)),
        "dt": wide_dt.grad[..., :H],
        **{k: v.grad for k, v in params.items()},
    }
    assert torch.equal(wide_dt.grad[..., H:], torch.zeros_like(dt))
    for k in g_ref:
        assert_matches(got[k], g_ref[k], torch.float32)
    time_major = f32["x"].transpose(0, 1).contiguous().transpose(0, 1)
    assert time_major.stride(0) < time_major.stride(1)
    y2 = st.ssd_scan_triton(time_major, *(f32[k] for k in ("dt", "A", "B", "C")), D=f32["D"],
                            dt_bias=f32["dt_bias"], dt_softplus=True, initial_state=f32["initial_state"],
                            chunk_size=16)
    assert_matches(y2, y_ref, torch.float32)


def test_large_decays_stay_finite(st):
    """delta·|A| of hundreds: exp(s) underflows to 0 within a chunk; nothing may overflow into inf or NaN."""
    inp = cast(make_inputs(1, 50, 3, 1, 5, 7, h0=True), torch.float32)
    inp["dt"] = inp["dt"].abs() * 50 + 5
    inp["A"] = inp["A"] * 20
    dy = torch.randn(1, 50, 3, 5, device=DEV, dtype=torch.float64)
    dh = torch.randn(1, 3, 5, 7, device=DEV, dtype=torch.float64)
    y_ref, h_ref, g_ref = run(oracle(True), exact(inp), dy, dh)
    y, h, g = run(kernel(st, True, 16), inp, dy, dh)
    assert_matches(y, y_ref, torch.float32)
    assert_matches(h, h_ref, torch.float32)
    for k in g_ref:
        assert torch.isfinite(g[k]).all(), k
        assert_matches(g[k], g_ref[k], torch.float32)


def test_agrees_with_ssd_scan_ref_when_present(st):
    """The project's fp32 reference (ops/ssd/naive.py), when it exists, computes the same outputs and gradients."""
    try:
        from simba_convert.ops.ssd import ssd_scan_ref
    except ImportError:
        pytest.skip("simba_convert.ops.ssd.ssd_scan_ref is not available")
    inp = cast(make_inputs(1, 70, 6, 3, 5, 7, h0=True), torch.float32)
    dy = torch.randn(1, 70, 6, 5, device=DEV, dtype=torch.float64)
    dh = torch.randn(1, 6, 5, 7, device=DEV, dtype=torch.float64)

    def ref(x, dt, A, B, C, D, dt_bias, h0, with_final):
        return ssd_scan_ref(x, dt, A, B, C, D=D, dt_bias=dt_bias, dt_softplus=True, initial_state=h0,
                            return_final_state=with_final, chunk_size=32)

    y_ref, h_ref, g_ref = run(ref, inp, dy, dh)
    y, h, g = run(kernel(st, True, 32), inp, dy, dh)
    # Two fp32 computations of the same sums, each ~1e-7 off the exact value: their difference is within 1e-5.
    assert_matches(y, y_ref, torch.float32)
    assert_matches(h, h_ref, torch.float32)
    for k in g_ref:
        assert_matches(g[k], g_ref[k], torch.float32)


def test_unwritten_outputs_are_caught(st, monkeypatch):
    """The poisoning reaches this module: a chunk-scan launch that writes nothing leaves y NaN, and a backward
    launch that writes nothing leaves every gradient it produces NaN (d initial_state comes from the state
    passing, so it stays finite)."""
    inp = cast(make_inputs(1, 20, 3, 1, 5, 7, h0=True), torch.float32)
    dy = torch.randn(1, 20, 3, 5, device=DEV, dtype=torch.float64)
    fn = kernel(st, True, 16)
    with monkeypatch.context() as m:
        stub = no_launch(m, st, "_chunk_scan_fwd_kernel")
        y = fn(*(inp[k] for k in NAMES), False)
        assert stub.launches == 1 and torch.isnan(y).all()
    stub = no_launch(monkeypatch, st, "_chunk_scan_bwd_kernel")
    _, _, g = run(fn, inp, dy, None, with_final=False)
    assert stub.launches == 1
    for k in ("x", "dt", "A", "B", "C", "D", "dt_bias"):
        assert torch.isnan(g[k]).all(), k
    assert torch.isfinite(g["initial_state"]).all()


def test_empty_sequence_passes_the_state_through(st):
    inp = cast(make_inputs(2, 0, 3, 1, 5, 7, h0=True), torch.float32)
    y, h = kernel(st, True, 16)(*(inp[k] for k in NAMES), True)
    assert y.shape == (2, 0, 3, 5)
    assert torch.equal(h, inp["initial_state"])


def test_bad_arguments_raise_one_line_errors(st):
    inp = cast(make_inputs(1, 4, 3, 1, 5, 7), torch.float32)
    args = [inp[k] for k in ("x", "dt", "A", "B", "C")]
    with pytest.raises(ConfigError, match="power of two"):
        st.ssd_scan_triton(*args, chunk_size=24)
    with pytest.raises(ShapeError, match="multiple"):
        st.ssd_scan_triton(*args[:3], args[3].expand(1, 4, 2, 7), args[4].expand(1, 4, 2, 7))
    with pytest.raises(ShapeError, match="dt"):
        st.ssd_scan_triton(args[0], args[1][:, :, :2], *args[2:])


# ----------------------------------------------------------------------------------- GPU shapes
@pytest.mark.gpu
def test_gpu_mamba2_layer_shape_bf16(st):
    """A Mamba-2 layer's shape (H = 24 heads of P = 64, one group of N = 128, chunk 64) in bf16."""
    bsz, L, H, G, P, N = 2, 512, 24, 1, 64, 128
    inp = cast(make_inputs(bsz, L, H, G, P, N, h0=True, device="cuda"), torch.bfloat16)
    dy = torch.randn(bsz, L, H, P, device="cuda").to(torch.bfloat16).double()
    dh = torch.randn(bsz, H, P, N, device="cuda", dtype=torch.float64)
    y_ref, h_ref, g_ref = run(oracle(True), exact(inp), dy, dh)
    y, h, g = run(kernel(st, True, 64), inp, dy, dh)
    assert_matches(y, y_ref, torch.bfloat16)
    assert_matches(h, h_ref, torch.float32)
    for k in g_ref:
        assert_matches(g[k], g_ref[k], inp[k].dtype)
    with torch.no_grad():  # inference: the dots run on TF32 tensor cores (ssd/triton.py, dot_precision)
        y_inf, h_inf = kernel(st, True, 64)(*(inp[k] for k in NAMES), True)
    assert_matches(y_inf, y_ref, torch.bfloat16)
    assert_matches(h_inf, h_ref, torch.bfloat16)  # the fp32 state carries TF32 rounding (~5e-4 relative)
